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

/** What reading one key file gave; the message is made per use (the path as written decides how it is named). */
type KeyFileOutcome =
  | { kind: 'key'; key: Uint8Array }
  | { kind: 'mode'; mode: number }
  | { kind: 'not-regular'; reason: string }
  | { kind: 'unreadable'; reason: string }
  | { kind: 'content'; problem: string };

/** Key files read at once; more wait. 200,000 peers each naming a key file opened 200,000 files at once (EMFILE, 1.4 GB). */
const KEY_FILE_CONCURRENCY = 8;

/**
 * Reads the key files of one config: each distinct file once (many peers
 * often share a preshared-key file), at most KEY_FILE_CONCURRENCY at a
 * time. Each caller gets its own copy of the key, to zero as it likes.
 */
export class KeyFileReader {
  private readonly outcomes = new Map<string, Promise<KeyFileOutcome>>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  /**
   * The key in `file` (resolved against `baseDir`); on any problem records
   * an issue at `path` and returns undefined. The file is named by its
   * absolute path, unless the path as written could be key material (a key
   * pasted into privateKeyFile): then by the field alone, which the issue's
   * path already names.
   */
  async read(file: string, baseDir: string, path: string, issues: IssueSink): Promise<Uint8Array | undefined> {
    const abs = resolve(baseDir, file);
    let outcome = this.outcomes.get(abs);
    if (outcome === undefined) {
      outcome = this.limited(() => readOne(abs));
      this.outcomes.set(abs, outcome);
    }
    const o = await outcome;
    if (o.kind === 'key') return new Uint8Array(o.key);
    const hidden = couldBeKeyMaterial(file);
    const name = hidden ? 'key file (path not shown: it looks like a key, not a file name)' : `key file ${abs}`;
    switch (o.kind) {
      case 'mode':
        issues.push({
          path,
          message: `${name} has mode ${formatMode(o.mode)}: it must not be readable or writable by group or others (${hidden ? 'chmod 600 it' : `chmod 600 ${abs}`})`,
        });
        break;
      case 'not-regular':
        issues.push({ path, message: `${name} ${o.reason}` });
        break;
      case 'unreadable':
        issues.push({ path, message: `cannot read ${name}: ${o.reason}` });
        break;
      case 'content':
        issues.push({ path, message: `${name}: its content ${o.problem}` });
        break;
    }
    return undefined;
  }

  /** Zeroes every key read (the callers hold copies). */
  async wipe(): Promise<void> {
    for (const o of this.outcomes.values()) {
      const r = await o;
      if (r.kind === 'key') r.key.fill(0);
    }
  }

  private async limited<T>(fn: () => Promise<T>): Promise<T> {
    while (this.running >= KEY_FILE_CONCURRENCY) await new Promise<void>((go) => this.waiting.push(go));
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

async function readOne(abs: string): Promise<KeyFileOutcome> {
  let data: Buffer;
  try {
    ({ data } = await readRegularFile(abs, MAX_KEY_FILE_BYTES, (st) => {
      if ((st.mode & 0o077) !== 0) throw new ModeError(st.mode);
    }));
  } catch (err) {
    if (err instanceof ModeError) return { kind: 'mode', mode: err.mode };
    if (err instanceof FileReadError) return err.errno === undefined ? { kind: 'not-regular', reason: err.reason } : { kind: 'unreadable', reason: err.reason };
    throw err;
  }
  const text = data.toString('utf8').trim();
  data.fill(0);
  const problem = keyTextProblem(text);
  if (problem !== undefined) return { kind: 'content', problem };
  return { kind: 'key', key: decodeKey(text) };
}

/** One key file on its own (see KeyFileReader.read). */
export async function readKeyFile(file: string, baseDir: string, path: string, issues: IssueSink): Promise<Uint8Array | undefined> {
  const reader = new KeyFileReader();
  try {
    return await reader.read(file, baseDir, path, issues);
  } finally {
    await reader.wipe();
  }
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
