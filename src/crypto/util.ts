/**
 * Sizes and argument checks shared by the crypto backends. KEY_LEN (X25519
 * and ChaCha20-Poly1305 keys) and TAG_LEN (Poly1305) are defined here only;
 * the protocol, the config and the control socket use these.
 */

export const KEY_LEN = 32;
export const TAG_LEN = 16;
export const NONCE_LEN = 12;
export const XNONCE_LEN = 24;

/**
 * Clamps an X25519 scalar in place the way `wg genkey` does (RFC 7748
 * decodeScalar25519), so stored keys match what WireGuard tools produce.
 */
export function clampPrivateKey(k: Uint8Array): Uint8Array {
  k[0] = (k[0] ?? 0) & 248;
  k[31] = ((k[31] ?? 0) & 127) | 64;
  return k;
}

/**
 * Rejects wrong sizes before they reach native or WASM code, where a short
 * buffer would be read or written out of bounds. These are programming errors
 * (the protocol sizes every buffer), so they throw.
 */
export function checkAead(outLen: number, need: number, nonce: Uint8Array, nonceLen: number, key: Uint8Array): void {
  if (outLen < need) throw new RangeError(`aead: out holds ${outLen} bytes, needs ${need}`);
  if (nonce.length !== nonceLen) throw new RangeError(`aead: nonce must be ${nonceLen} bytes`);
  if (key.length !== KEY_LEN) throw new RangeError('aead: key must be 32 bytes');
}

/** `out` itself when it is exactly `n` bytes, else a view of its first `n` bytes. */
export function outView(out: Uint8Array, n: number): Uint8Array {
  return out.length === n ? out : out.subarray(0, n);
}

const EMPTY = new Uint8Array(0);

/**
 * The last view made of a buffer region, kept for the next call: a reused
 * slot asked for the same region again (every full-sized segment of a bulk
 * flow, most of its ACKs) gets the same view back instead of a new
 * typed-array object, ~45-50 ns plus garbage each for a Buffer's subarray.
 * The native AEAD calls take exact-length views, so each region needs one;
 * whoever owns a slot keeps one cache per slot (and per region of it).
 */
export class ViewCache {
  private base: Uint8Array | undefined;
  private offset = -1;
  private length = -1;
  private view: Uint8Array = EMPTY;

  /** `base[offset, offset + length)`: `base` itself when that is all of it. */
  of(base: Uint8Array, offset: number, length: number): Uint8Array {
    if (base !== this.base || offset !== this.offset || length !== this.length) {
      this.base = base;
      this.offset = offset;
      this.length = length;
      this.view = offset === 0 && length === base.length ? base : base.subarray(offset, offset + length);
    }
    return this.view;
  }
}
