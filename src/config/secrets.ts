/**
 * Secret material from the config: inline keys or key files. A key file
 * must be a regular file that gives group and others no access at all, as
 * `wg` expects of its key files. Nothing here ever puts key text in a
 * message.
 */
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { ConfigIssue } from './errors.js';
import { decodeKey, keyTextProblem } from './keys.js';

export function errnoText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file (ENOENT)';
    case 'EACCES':
      return 'permission denied (EACCES)';
    case 'EISDIR':
      return 'is a directory (EISDIR)';
    case 'ENOTDIR':
      return 'a parent is not a directory (ENOTDIR)';
    default:
      return code ?? (err instanceof Error ? err.message : String(err));
  }
}

export function formatMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Reads a key file; on any problem records an issue at `path` and returns undefined. */
export async function readKeyFile(file: string, baseDir: string, path: string, issues: ConfigIssue[]): Promise<Uint8Array | undefined> {
  const abs = resolve(baseDir, file);
  let mode: number;
  try {
    const st = await stat(abs);
    if (!st.isFile()) {
      issues.push({ path, message: `key file ${abs} is not a regular file` });
      return undefined;
    }
    mode = st.mode;
  } catch (err) {
    issues.push({ path, message: `cannot read key file ${abs}: ${errnoText(err)}` });
    return undefined;
  }
  if ((mode & 0o077) !== 0) {
    issues.push({
      path,
      message: `key file ${abs} has mode ${formatMode(mode)}: it must not be readable or writable by group or others (chmod 600 ${abs})`,
    });
    return undefined;
  }
  let text: string;
  try {
    text = (await readFile(abs, 'utf8')).trim();
  } catch (err) {
    issues.push({ path, message: `cannot read key file ${abs}: ${errnoText(err)}` });
    return undefined;
  }
  const problem = keyTextProblem(text);
  if (problem !== undefined) {
    issues.push({ path, message: `key file ${abs}: its content ${problem}` });
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
