/**
 * Helpers for tests that run real daemons: keys, and a TCP transfer with an
 * end-to-end checksum between two namespaces.
 */
import { join } from 'node:path';
import { loadCrypto } from '../../src/crypto/index.js';
import type { Netns } from '../../src/testbed/netns.js';
import { sleep } from '../../src/testbed/netns.js';

const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'tcp-transfer.mjs');

export interface KeyPairText {
  privateKey: string;
  publicKey: string;
}

export async function makeKeyPair(): Promise<KeyPairText> {
  const crypto = await loadCrypto('auto');
  const priv = crypto.generatePrivateKey();
  return {
    privateKey: Buffer.from(priv).toString('base64'),
    publicKey: Buffer.from(crypto.publicKey(priv)).toString('base64'),
  };
}

export interface TransferResult {
  sent: number;
  received: number;
  local: string;
  remote: string;
  ms: number;
}

/** Sends `bytes` random bytes from `from` to a sink in `to` listening on addr:port. */
export async function tcpTransfer(from: Netns, to: Netns, addr: string, port: number, bytes: number, limitSeconds = 60): Promise<TransferResult> {
  const server = to.spawn(process.execPath, [FIXTURE, 'server', addr, String(port)]);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('tcp sink did not start')), 10_000);
    server.stdout?.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    server.once('exit', (code) => reject(new Error(`tcp sink exited ${String(code)}`)));
  });
  try {
    const { stdout } = await from.exec(process.execPath, [FIXTURE, 'client', addr, String(port), String(bytes), String(limitSeconds)], {
      timeoutMs: (limitSeconds + 5) * 1000,
    });
    return JSON.parse(stdout.trim()) as TransferResult;
  } finally {
    server.kill();
    await sleep(10);
  }
}
