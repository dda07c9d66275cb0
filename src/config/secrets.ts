/**
 * Secret material from the config: inline keys or key files. A key file
 * must be a regular file that gives group and others no access at all, as
 * `wg` expects of its key files. Nothing here ever puts key text in a
 * message.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { resolve } from 'node:path';
import type { IssueSink } from './errors.js';
import { FileReadError, readRegularFile } from './file.js';
import { decodeKey, keyTextProblem } from './keys.js';
import { couldBeKeyMaterial } from './redact.js';

export { errnoText } from './file.js';

/**
 * Largest key file read. A key file is one line of 44 characters (45 with
 * the newline); 4 KiB is generous for stray whitespace while a huge or
 * endless "key file" is refused before a byte is read.
 */
export const MAX_KEY_FILE_BYTES = 4096;

export function formatMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Refused by the mode check (a thrown value, not an fs error). */
class ModeError extends Error {
  constructor(readonly mode: number) {
    super('mode');
  }
}

/**
 * Reads a key file; on any problem records an issue at `path` and returns
 * undefined. The file is named by its absolute path, unless the path as
 * written could be key material (a key pasted into privateKeyFile): then
 * by the field alone, which the issue's path already names.
 */
export async function readKeyFile(file: string, baseDir: string, path: string, issues: IssueSink): Promise<Uint8Array | undefined> {
  const abs = resolve(baseDir, file);
  const shown = couldBeKeyMaterial(file);
  const name = shown ? 'key file (path not shown: it looks like a key, not a file name)' : `key file ${abs}`;
  let data: Buffer;
  try {
    ({ data } = await readRegularFile(abs, MAX_KEY_FILE_BYTES, (st) => {
      if ((st.mode & 0o077) !== 0) throw new ModeError(st.mode);
    }));
  } catch (err) {
    if (err instanceof ModeError) {
      const fix = shown ? 'chmod 600 it' : `chmod 600 ${abs}`;
      issues.push({ path, message: `${name} has mode ${formatMode(err.mode)}: it must not be readable or writable by group or others (${fix})` });
    } else if (err instanceof FileReadError && err.errno === undefined) {
      issues.push({ path, message: `${name} ${err.reason}` });
    } else if (err instanceof FileReadError) {
      issues.push({ path, message: `cannot read ${name}: ${err.reason}` });
    } else {
      throw err;
    }
    return undefined;
  }
  const text = data.toString('utf8').trim();
  data.fill(0);
  const problem = keyTextProblem(text);
  if (problem !== undefined) {
    issues.push({ path, message: `${name}: its content ${problem}` });
    return undefined;
  }
  return decodeKey(text);
}

// RFC 8410 PKCS#8 wrapping of a raw X25519 private key, so node:crypto can
// derive our public key without depending on the crypto backends.
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** Our X25519 public key, to refuse a peer that is ourselves. */
export function derivePublicKey(privateKey: Uint8Array): Uint8Array {
  const der = Buffer.concat([PKCS8_X25519_PREFIX, privateKey]);
  try {
    const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    const jwk = createPublicKey(key).export({ format: 'jwk' });
    return new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url'));
  } finally {
    der.fill(0);
  }
}
