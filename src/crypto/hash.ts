/**
 * BLAKE2s, keyed BLAKE2s (WireGuard's MAC), HMAC-BLAKE2s and the paper's
 * HKDF. libsodium has no BLAKE2s, so both crypto backends share these, taken
 * from @noble/hashes. They run per handshake, never per transport packet, so
 * returning fresh arrays is acceptable here.
 *
 * Public API (stable; the protocol core codes against it):
 *
 *   HASH_LEN = 32, MAC_LEN = 16
 *   blake2s(...parts: Uint8Array[]): Uint8Array              HASH(a || b || ...), 32 bytes
 *   blake2sInto(out: Uint8Array, ...parts: Uint8Array[]): Uint8Array   same, into out[0..32)
 *   blake2sKeyed(key: Uint8Array, outLen: number, ...parts: Uint8Array[]): Uint8Array
 *   mac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array  MAC(key, a || b || ...), 16 bytes
 *   hmacBlake2s(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array  HMAC(key, a || b || ...), 32 bytes
 *   kdf1(key, input): [Uint8Array]
 *   kdf2(key, input): [Uint8Array, Uint8Array]
 *   kdf3(key, input): [Uint8Array, Uint8Array, Uint8Array]
 *
 * `key` for blake2sKeyed/mac may be 1..32 bytes (WireGuard uses 32-byte keys
 * for mac1 and the cookie, and the 16-byte cookie as the mac2 key).
 */
import { blake2s as nobleBlake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';

export const HASH_LEN = 32;
export const MAC_LEN = 16;

/** BLAKE2s-256 of the concatenation of `parts` (the paper's HASH). */
export function blake2s(...parts: Uint8Array[]): Uint8Array {
  const h = nobleBlake2s.create({ dkLen: HASH_LEN });
  for (const p of parts) h.update(p);
  return h.digest();
}

/** BLAKE2s-256 of the concatenation of `parts`, written to out[0..32). Returns `out`. */
export function blake2sInto(out: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  if (out.length < HASH_LEN) throw new RangeError('blake2sInto: out must hold 32 bytes');
  const h = nobleBlake2s.create({ dkLen: HASH_LEN });
  for (const p of parts) h.update(p);
  // noble's digestInto writes whole words; a subarray keeps it inside out[0..32).
  h.digestInto(out.length === HASH_LEN ? out : out.subarray(0, HASH_LEN));
  return out;
}

/** Keyed BLAKE2s (RFC 7693 MAC mode) with an `outLen`-byte digest (1..32). */
export function blake2sKeyed(key: Uint8Array, outLen: number, ...parts: Uint8Array[]): Uint8Array {
  const h = nobleBlake2s.create({ dkLen: outLen, key });
  for (const p of parts) h.update(p);
  return h.digest();
}

/** WireGuard's MAC(key, input): keyed BLAKE2s with a 16-byte digest. */
export function mac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  return blake2sKeyed(key, MAC_LEN, ...parts);
}

/** HMAC-BLAKE2s (RFC 2104 over BLAKE2s-256), 32 bytes. */
export function hmacBlake2s(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array {
  const h = hmac.create(nobleBlake2s, key);
  for (const p of parts) h.update(p);
  return h.digest();
}

const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);
const THREE = Uint8Array.of(3);

/**
 * The paper's HKDF: T0 = HMAC(key, input); Ti = HMAC(T0, T(i-1) || i).
 * T0 is a secret intermediate, so it is wiped before returning.
 */
export function kdf1(key: Uint8Array, input: Uint8Array): [Uint8Array] {
  const t0 = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(t0, ONE);
  t0.fill(0);
  return [t1];
}

export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const t0 = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(t0, ONE);
  const t2 = hmacBlake2s(t0, t1, TWO);
  t0.fill(0);
  return [t1, t2];
}

export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const t0 = hmacBlake2s(key, input);
  const t1 = hmacBlake2s(t0, ONE);
  const t2 = hmacBlake2s(t0, t1, TWO);
  const t3 = hmacBlake2s(t0, t2, THREE);
  t0.fill(0);
  return [t1, t2, t3];
}
