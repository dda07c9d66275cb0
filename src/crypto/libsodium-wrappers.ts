/**
 * CryptoBackend over libsodium-wrappers (libsodium compiled to WASM).
 *
 * The wrappers' public API allocates on every call: it mallocs WASM memory
 * for each argument, copies in, and returns a fresh Uint8Array. On the
 * transport path that costs about a third more than the cipher itself, so
 * this backend drives the raw WASM exports that libsodium-wrappers publishes
 * as `sodium.libsodium` instead: one scratch region is malloc'ed once, each
 * call copies its inputs in, runs the C function, and copies the result out
 * into the caller's buffer. Nothing is allocated per call.
 *
 * The raw exports use the WASM calling convention: pointers are byte offsets
 * into HEAPU8, and each `unsigned long long` length is passed as two 32-bit
 * halves (low, high).
 */
import sodium from 'libsodium-wrappers';
import { TunvpnError } from '../errors.js';
import type { CryptoBackend } from './types.js';
import { KEY_LEN, NONCE_LEN, TAG_LEN, XNONCE_LEN, checkAead, clampPrivateKey } from './util.js';

type Ptr = number;
type AeadEncrypt = (
  c: Ptr,
  clenP: Ptr,
  m: Ptr,
  mlenLo: number,
  mlenHi: number,
  ad: Ptr,
  adlenLo: number,
  adlenHi: number,
  nsec: Ptr,
  npub: Ptr,
  k: Ptr,
) => number;
type AeadDecrypt = (
  m: Ptr,
  mlenP: Ptr,
  nsec: Ptr,
  c: Ptr,
  clenLo: number,
  clenHi: number,
  ad: Ptr,
  adlenLo: number,
  adlenHi: number,
  npub: Ptr,
  k: Ptr,
) => number;

/** The slice of the emscripten module this backend uses. */
interface LibsodiumModule {
  HEAPU8: Uint8Array;
  _malloc(size: number): Ptr;
  _free(p: Ptr): void;
  _crypto_aead_chacha20poly1305_ietf_encrypt: AeadEncrypt;
  _crypto_aead_chacha20poly1305_ietf_decrypt: AeadDecrypt;
  _crypto_aead_xchacha20poly1305_ietf_encrypt: AeadEncrypt;
  _crypto_aead_xchacha20poly1305_ietf_decrypt: AeadDecrypt;
  _crypto_scalarmult(q: Ptr, n: Ptr, p: Ptr): number;
  _crypto_scalarmult_base(q: Ptr, n: Ptr): number;
}

function isModule(v: unknown): v is LibsodiumModule {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  const fns: Array<[string, number]> = [
    ['_malloc', 1],
    ['_free', 1],
    ['_crypto_aead_chacha20poly1305_ietf_encrypt', 11],
    ['_crypto_aead_chacha20poly1305_ietf_decrypt', 11],
    ['_crypto_aead_xchacha20poly1305_ietf_encrypt', 11],
    ['_crypto_aead_xchacha20poly1305_ietf_decrypt', 11],
    ['_crypto_scalarmult', 3],
    ['_crypto_scalarmult_base', 2],
  ];
  // Arity guards against a future build that passes 64-bit lengths as BigInt.
  return o.HEAPU8 instanceof Uint8Array && fns.every(([k, n]) => typeof o[k] === 'function' && (o[k] as (...a: never[]) => unknown).length === n);
}

/** Bytes of message space reserved up front; grows (rarely) for larger messages. */
const INITIAL_MSG_CAPACITY = 2048;
/** ad in WireGuard is at most a 32-byte hash; larger ad grows the region like messages. */
const INITIAL_AD_CAPACITY = 64;

/** Builds the libsodium-wrappers backend; throws CRYPTO_BACKEND_UNAVAILABLE if it cannot load. */
export async function createLibsodiumWrappersBackend(): Promise<CryptoBackend> {
  try {
    await sodium.ready;
  } catch (cause) {
    throw new TunvpnError('CRYPTO_BACKEND_UNAVAILABLE', 'libsodium-wrappers failed to initialise', { cause });
  }
  const mod: unknown = (sodium as unknown as { libsodium?: unknown }).libsodium;
  if (!isModule(mod)) {
    throw new TunvpnError('CRYPTO_BACKEND_UNAVAILABLE', 'libsodium-wrappers does not expose the raw libsodium module');
  }
  return new LibsodiumWrappersBackend(mod);
}

/**
 * Fixed layout in WASM memory: key | nonce | len (8) | a | b | ad, with
 * `a` and `b` the input and output message regions.
 */
class LibsodiumWrappersBackend implements CryptoBackend {
  readonly name = 'libsodium-wrappers' as const;
  private readonly m: LibsodiumModule;
  private base: Ptr = 0;
  private msgCap = 0;
  private adCap = 0;
  private pKey: Ptr = 0;
  private pNonce: Ptr = 0;
  private pLen: Ptr = 0;
  private pA: Ptr = 0;
  private pB: Ptr = 0;
  private pAd: Ptr = 0;

  constructor(m: LibsodiumModule) {
    this.m = m;
    this.reserve(INITIAL_MSG_CAPACITY, INITIAL_AD_CAPACITY);
  }

  private reserve(msgCap: number, adCap: number): void {
    const fixed = KEY_LEN + XNONCE_LEN + 8;
    const base = this.m._malloc(fixed + 2 * msgCap + adCap);
    if (base === 0) throw new TunvpnError('CRYPTO_OUT_OF_MEMORY', 'libsodium-wrappers: WASM malloc failed');
    if (this.base !== 0) {
      this.heap().fill(0, this.base, this.base + KEY_LEN);
      this.m._free(this.base);
    }
    this.base = base;
    this.msgCap = msgCap;
    this.adCap = adCap;
    this.pKey = base;
    this.pNonce = base + KEY_LEN;
    this.pLen = this.pNonce + XNONCE_LEN;
    this.pA = this.pLen + 8;
    this.pB = this.pA + msgCap;
    this.pAd = this.pB + msgCap;
  }

  /** HEAPU8 is replaced when WASM memory grows, so never cache it across calls. */
  private heap(): Uint8Array {
    return this.m.HEAPU8;
  }

  private ensure(msgLen: number, adLen: number): void {
    if (msgLen > this.msgCap || adLen > this.adCap) {
      this.reserve(Math.max(this.msgCap, msgLen + 256), Math.max(this.adCap, adLen));
    }
  }

  randomBytes(out: Uint8Array): void {
    // The ESM build of libsodium seeds from globalThis.crypto too; calling it
    // directly avoids a round trip through WASM memory. 65536 is its per-call cap.
    for (let off = 0; off < out.length; off += 65536) {
      globalThis.crypto.getRandomValues(out.subarray(off, Math.min(out.length, off + 65536)));
    }
  }

  generatePrivateKey(): Uint8Array {
    const k = new Uint8Array(KEY_LEN);
    this.randomBytes(k);
    return clampPrivateKey(k);
  }

  publicKey(privateKey: Uint8Array): Uint8Array {
    if (privateKey.length !== KEY_LEN) throw new RangeError('publicKey: private key must be 32 bytes');
    const heap = this.heap();
    heap.set(privateKey, this.pKey);
    const rc = this.m._crypto_scalarmult_base(this.pA, this.pKey);
    const h = this.heap();
    const pub = h.slice(this.pA, this.pA + KEY_LEN);
    h.fill(0, this.pKey, this.pKey + KEY_LEN);
    if (rc !== 0) throw new TunvpnError('CRYPTO_BAD_KEY', 'publicKey: scalar multiplication failed');
    return pub;
  }

  x25519(out: Uint8Array, privateKey: Uint8Array, publicKey: Uint8Array): boolean {
    if (out.length !== KEY_LEN || privateKey.length !== KEY_LEN || publicKey.length !== KEY_LEN) {
      throw new RangeError('x25519: out, privateKey and publicKey must be 32 bytes');
    }
    const heap = this.heap();
    heap.set(privateKey, this.pKey);
    heap.set(publicKey, this.pB);
    const rc = this.m._crypto_scalarmult(this.pA, this.pKey, this.pB);
    const h = this.heap();
    if (rc === 0) out.set(h.subarray(this.pA, this.pA + KEY_LEN));
    else out.fill(0);
    h.fill(0, this.pKey, this.pKey + KEY_LEN);
    h.fill(0, this.pA, this.pA + KEY_LEN);
    return rc === 0;
  }

  private seal(fn: AeadEncrypt, nonceLen: number, out: Uint8Array, plaintext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number {
    const mlen = plaintext.length;
    const clen = mlen + TAG_LEN;
    checkAead(out.length, clen, nonce, nonceLen, key);
    const adLen = ad === null ? 0 : ad.length;
    this.ensure(clen, adLen);
    let heap = this.heap();
    heap.set(key, this.pKey);
    heap.set(nonce, this.pNonce);
    heap.set(plaintext, this.pA);
    if (ad !== null) heap.set(ad, this.pAd);
    fn(this.pB, 0, this.pA, mlen, 0, this.pAd, adLen, 0, 0, this.pNonce, this.pKey);
    heap = this.heap();
    out.set(heap.subarray(this.pB, this.pB + clen));
    heap.fill(0, this.pKey, this.pKey + KEY_LEN);
    return clen;
  }

  private open(fn: AeadDecrypt, nonceLen: number, out: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number {
    const clen = ciphertext.length;
    const mlen = clen - TAG_LEN;
    if (mlen < 0) return -1;
    checkAead(out.length, mlen, nonce, nonceLen, key);
    const adLen = ad === null ? 0 : ad.length;
    this.ensure(clen, adLen);
    let heap = this.heap();
    heap.set(key, this.pKey);
    heap.set(nonce, this.pNonce);
    heap.set(ciphertext, this.pA);
    if (ad !== null) heap.set(ad, this.pAd);
    const rc = fn(this.pB, 0, 0, this.pA, clen, 0, this.pAd, adLen, 0, this.pNonce, this.pKey);
    heap = this.heap();
    heap.fill(0, this.pKey, this.pKey + KEY_LEN);
    if (rc !== 0) return -1;
    out.set(heap.subarray(this.pB, this.pB + mlen));
    return mlen;
  }

  aeadSeal(out: Uint8Array, plaintext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number {
    return this.seal(this.m._crypto_aead_chacha20poly1305_ietf_encrypt, NONCE_LEN, out, plaintext, ad, nonce, key);
  }

  aeadOpen(out: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number {
    return this.open(this.m._crypto_aead_chacha20poly1305_ietf_decrypt, NONCE_LEN, out, ciphertext, ad, nonce, key);
  }

  xaeadSeal(out: Uint8Array, plaintext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number {
    return this.seal(this.m._crypto_aead_xchacha20poly1305_ietf_encrypt, XNONCE_LEN, out, plaintext, ad, nonce, key);
  }

  xaeadOpen(out: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number {
    return this.open(this.m._crypto_aead_xchacha20poly1305_ietf_decrypt, XNONCE_LEN, out, ciphertext, ad, nonce, key);
  }

  memzero(buf: Uint8Array): void {
    buf.fill(0);
  }
}
