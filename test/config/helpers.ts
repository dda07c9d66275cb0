import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, type InterfaceConfig, loadConfig, type PeerConfig, type TunvpnConfig } from '../../src/config/index.js';
import { makeKeyPair } from '../../src/testbed/keys.js';

/** A fresh X25519 key pair as base64 (node:crypto, independent of the code under test), under the short names these tests use. */
export function keyPair(): { priv: string; pub: string } {
  const { privateKey, publicKey } = makeKeyPair();
  return { priv: privateKey, pub: publicKey };
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

/** A parsed config as the loader would give it (tunvpn0, a fixed private key, 10.0.0.254/24), for tests that diff configs without a file. */
export function config(peers: PeerConfig[], iface: Partial<InterfaceConfig> = {}): TunvpnConfig {
  return {
    interface: {
      name: 'tunvpn0',
      privateKey: new Uint8Array(32).fill(9),
      listenPort: 51820,
      addresses: ['10.0.0.254/24'],
      mtu: 1420,
      fwmark: 0,
      table: 'auto',
      ...iface,
    },
    peers,
    log: { level: 'info' },
    metrics: {},
    crypto: { backend: 'auto' },
    warnings: [],
  };
}
