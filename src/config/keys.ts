/**
 * WireGuard key text: standard base64 of exactly 32 bytes, 44 characters with
 * one '=' of padding, as `wg genkey` prints it. Like wg, only the canonical
 * encoding is accepted (the unused low bits of the last character are zero),
 * so a key has exactly one spelling and can serve as a map key.
 *
 * Reasons returned here never contain the key text: keys may be secrets.
 */
import { KEY_LEN as KEY_LENGTH } from '../crypto/util.js';

export { KEY_LENGTH };

/**
 * Each base64 character's 6-bit value, -1 for any other character code
 * below 128, for the key check below: a loop over it is twice as fast as
 * the regex /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/ (10,000 peers: 1.8
 * against 4.1 ms).
 */
const B64 = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;

/**
 * The canonical form: 43 base64 characters and '=', the last character
 * carrying 4 bits of the key and 2 zero bits (A E I ... 0 4 8), i.e.
 * /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.
 */
function isKeyText(text: string): boolean {
  if (text.length !== 44 || text.charCodeAt(43) !== 61) return false;
  for (let i = 0; i < 43; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || B64[c] < 0) return false;
  }
  return (B64[text.charCodeAt(42)] & 3) === 0;
}

/** Why `text` is not a key, or undefined when it is one. */
export function keyTextProblem(text: unknown): string | undefined {
  if (typeof text !== 'string') return `must be a string (base64 of ${KEY_LENGTH} bytes)`;
  if (text.length === 0) return 'is empty';
  if (text.length !== 44) {
    return `is not base64 of exactly ${KEY_LENGTH} bytes (${text.length} characters, expected 44)`;
  }
  if (!isKeyText(text)) return `is not base64 of exactly ${KEY_LENGTH} bytes (bad character or padding)`;
  return undefined;
}

/**
 * Decodes key text already accepted by keyTextProblem. (Buffer.from, not
 * a loop over B64: a reload runs this code about once, often before V8 has
 * optimised it, and there the native decoder was 2-3 times faster.)
 */
export function decodeKey(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'base64'));
}

export function encodeKey(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}

/** Constant-time-ish equality; keys are compared rarely, but may be secret. */
export function keysEqual(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
