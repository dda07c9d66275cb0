import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { ConfigError, loadConfig } from '../../src/config/index.js';

/** A fresh X25519 key pair as base64 (node:crypto, independent of the code under test). */
export function keyPair(): { priv: string; pub: string } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const priv = Buffer.from(privateKey.export({ format: 'jwk' }).d ?? '', 'base64url').toString('base64');
  const pub = Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url').toString('base64');
  return { priv, pub };
}

export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'tunvpn-cfg-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function writeFile(dir: string, name: string, content: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, content, { mode });
  chmodSync(path, mode); // umask must not decide the mode under test
  return path;
}

/** loadConfig's ConfigError, or a failure if it resolves, throws something else, or takes longer than `ms`. */
export async function loadError(path: string, ms = 5000): Promise<ConfigError> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`loadConfig(${path}) did not return within ${ms} ms`)), ms);
  });
  try {
    await Promise.race([loadConfig(path), timeout]);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err;
  } finally {
    clearTimeout(timer);
  }
  throw new Error('expected a ConfigError');
}
