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

const KEY_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** Why `text` is not a key, or undefined when it is one. */
export function keyTextProblem(text: unknown): string | undefined {
  if (typeof text !== 'string') return `must be a string (base64 of ${KEY_LENGTH} bytes)`;
  if (text.length === 0) return 'is empty';
  if (text.length !== 44) {
    return `is not base64 of exactly ${KEY_LENGTH} bytes (${text.length} characters, expected 44)`;
  }
  if (!KEY_PATTERN.test(text)) return `is not base64 of exactly ${KEY_LENGTH} bytes (bad character or padding)`;
  return undefined;
}

/** Decodes key text already accepted by keyTextProblem. */
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
