/**
 * CryptoBackend over sodium-native 5 (native libsodium through N-API).
 *
 * We call sodium-native's raw binding rather than its public wrappers: the
 * wrappers re-check every argument with assert() and turn a failed decrypt
 * into a thrown Error, and hostile packets make failed decrypts common, so a
 * throw per bad packet (stack capture included) is a cheap DoS amplifier.
 * The raw binding returns libsodium's status instead. It does no bounds
 * checking of its own that we may rely on (passing null where it expects
 * undefined crashes the process), so every length is checked here before the
 * call, and `ad` is always a typed array or undefined.
 */
import { createRequire } from 'node:module';
import { TunvpnError } from '../errors.js';
import type { CryptoBackend } from './types.js';
import { KEY_LEN, NONCE_LEN, TAG_LEN, XNONCE_LEN, checkAead, clampPrivateKey, outView } from './util.js';

type Bytes = Uint8Array;

/** The slice of sodium-native's binding this backend uses. */
interface SodiumNativeBinding {
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Bytes, m: Bytes, ad: Bytes | undefined, npub: Bytes, k: Bytes): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Bytes, c: Bytes, ad: Bytes | undefined, npub: Bytes, k: Bytes): number;
  crypto_aead_xchacha20poly1305_ietf_encrypt(c: Bytes, m: Bytes, ad: Bytes | undefined, npub: Bytes, k: Bytes): number;
  crypto_aead_xchacha20poly1305_ietf_decrypt(m: Bytes, c: Bytes, ad: Bytes | undefined, npub: Bytes, k: Bytes): number;
  crypto_scalarmult(q: Bytes, n: Bytes, p: Bytes): number;
  crypto_scalarmult_base(q: Bytes, n: Bytes): number;
  randombytes_buf(buf: ArrayBufferLike, offset: number, length: number): void;
}

function isBinding(v: unknown): v is SodiumNativeBinding {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return [
    'crypto_aead_chacha20poly1305_ietf_encrypt',
    'crypto_aead_chacha20poly1305_ietf_decrypt',
    'crypto_aead_xchacha20poly1305_ietf_encrypt',
    'crypto_aead_xchacha20poly1305_ietf_decrypt',
    'crypto_scalarmult',
    'crypto_scalarmult_base',
    'randombytes_buf',
  ].every((k) => typeof o[k] === 'function');
}

function loadBinding(): SodiumNativeBinding {
  const require = createRequire(import.meta.url);
  let b: unknown;
  try {
    b = require('sodium-native/binding.js');
  } catch (cause) {
    throw new TunvpnError('CRYPTO_BACKEND_UNAVAILABLE', 'sodium-native failed to load', { cause });
  }
  if (!isBinding(b)) {
    throw new TunvpnError('CRYPTO_BACKEND_UNAVAILABLE', 'sodium-native binding lacks the functions tunvpn needs');
  }
  return b;
}

/** Builds the sodium-native backend; throws CRYPTO_BACKEND_UNAVAILABLE if it cannot load. */
export function createSodiumNativeBackend(): CryptoBackend {
  const b = loadBinding();
  const seal = b.crypto_aead_chacha20poly1305_ietf_encrypt;
  const open = b.crypto_aead_chacha20poly1305_ietf_decrypt;
  const xseal = b.crypto_aead_xchacha20poly1305_ietf_encrypt;
  const xopen = b.crypto_aead_xchacha20poly1305_ietf_decrypt;

  const randomBytes = (out: Uint8Array): void => {
    if (out.byteLength > 0) b.randombytes_buf(out.buffer, out.byteOffset, out.byteLength);
  };

  const backend: CryptoBackend = {
    name: 'sodium-native',

    randomBytes,

    generatePrivateKey(): Uint8Array {
      const k = new Uint8Array(KEY_LEN);
      randomBytes(k);
      return clampPrivateKey(k);
    },

    publicKey(privateKey: Uint8Array): Uint8Array {
      if (privateKey.length !== KEY_LEN) throw new RangeError('publicKey: private key must be 32 bytes');
      const pub = new Uint8Array(KEY_LEN);
      if (b.crypto_scalarmult_base(pub, privateKey) !== 0) {
        throw new TunvpnError('CRYPTO_BAD_KEY', 'publicKey: scalar multiplication failed');
      }
      return pub;
    },

    x25519(out: Uint8Array, privateKey: Uint8Array, publicKey: Uint8Array): boolean {
      if (out.length !== KEY_LEN || privateKey.length !== KEY_LEN || publicKey.length !== KEY_LEN) {
        throw new RangeError('x25519: out, privateKey and publicKey must be 32 bytes');
      }
      // libsodium returns -1 when the result is all zero (a low-order point);
      // wipe `out` ourselves rather than rely on what it left there.
      if (b.crypto_scalarmult(out, privateKey, publicKey) !== 0) {
        out.fill(0);
        return false;
      }
      return true;
    },

    aeadSeal(out, plaintext, ad, nonce, key): number {
      const n = plaintext.length + TAG_LEN;
      checkAead(out.length, n, nonce, NONCE_LEN, key);
      return seal(outView(out, n), plaintext, ad ?? undefined, nonce, key);
    },

    aeadOpen(out, ciphertext, ad, nonce, key): number {
      const n = ciphertext.length - TAG_LEN;
      if (n < 0) return -1;
      checkAead(out.length, n, nonce, NONCE_LEN, key);
      const r = open(outView(out, n), ciphertext, ad ?? undefined, nonce, key);
      return r < 0 ? -1 : r;
    },

    xaeadSeal(out, plaintext, ad, nonce, key): number {
      const n = plaintext.length + TAG_LEN;
      checkAead(out.length, n, nonce, XNONCE_LEN, key);
      return xseal(outView(out, n), plaintext, ad ?? undefined, nonce, key);
    },

    xaeadOpen(out, ciphertext, ad, nonce, key): number {
      const n = ciphertext.length - TAG_LEN;
      if (n < 0) return -1;
      checkAead(out.length, n, nonce, XNONCE_LEN, key);
      const r = xopen(outView(out, n), ciphertext, ad ?? undefined, nonce, key);
      return r < 0 ? -1 : r;
    },

    // A JavaScript store cannot be optimised away as a C one can (what
    // sodium_memzero guards against), and fill() costs no N-API call: a
    // 20,000-peer removal zeroes ~100,000 buffers, 104 ms through the
    // binding (bench:control profile), as libsodium-wrappers' backend does.
    memzero(buf: Uint8Array): void {
      buf.fill(0);
    },
  };
  return backend;
}
