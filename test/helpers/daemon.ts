/**
 * Helpers for tests that run real daemons: keys, and a TCP transfer with an
 * end-to-end checksum between two namespaces.
 */
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Netns } from '../../src/testbed/netns.js';
import { sleep } from '../../src/testbed/netns.js';

export { makeKeyPair, type KeyPairText } from '../../src/testbed/keys.js';

const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'tcp-transfer.mjs');

export interface TransferResult {
  sent: number;
  received: number;
  local: string;
  remote: string;
  ms: number;
}

/**
 * Sends `bytes` random bytes from `from` to a sink in `to` listening on
 * addr:port. With `onConnected`, the connection is made first and the data
 * is sent only once that has resolved (to change the network in between);
 * `ms` then counts from the data.
 */
export async function tcpTransfer(
  from: Netns,
  to: Netns,
  addr: string,
  port: number,
  bytes: number,
  limitSeconds = 60,
  onConnected?: () => Promise<void>,
): Promise<TransferResult> {
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
    const args = [FIXTURE, 'client', addr, String(port), String(bytes), String(limitSeconds)];
    if (onConnected === undefined) {
      const { stdout } = await from.exec(process.execPath, args, { timeoutMs: (limitSeconds + 5) * 1000 });
      return JSON.parse(stdout.trim()) as TransferResult;
    }
    const client = from.spawn(process.execPath, args, { env: { ...process.env, TRANSFER_WAIT_FOR_GO: '1' } });
    let out = '';
    let err = '';
    client.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => client.once('exit', (code) => resolve(code)));
    const connected = new Promise<boolean>((resolve) => {
      client.stderr?.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('connected')) resolve(true);
      });
      void exited.then(() => resolve(false));
    });
    if (!(await connected)) throw new Error(`tcp client did not connect: ${err.trim()}`);
    await onConnected();
    client.stdin?.write('go\n');
    const timer = setTimeout(() => client.kill('SIGKILL'), (limitSeconds + 5) * 1000);
    const code = await exited.finally(() => clearTimeout(timer));
    if (code !== 0) throw new Error(`tcp client exited ${String(code)}: ${err.trim()}`);
    return JSON.parse(out.trim()) as TransferResult;
  } finally {
    server.kill();
    await sleep(10);
  }
}

/**
 * One raw request on a daemon's control socket, from the test process (the
 * socket directory is shared across namespaces); resolves with the reply
 * text, or what arrived before the socket closed or `timeoutMs` passed.
 */
export function uapiRequest(ifname: string, body: string | Buffer, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(`/var/run/wireguard/${ifname}.sock`);
    let reply = '';
    sock.on('data', (d) => {
      reply += d.toString();
      if (reply.endsWith('\n\n')) sock.end();
    });
    sock.on('close', () => resolve(reply));
    sock.on('error', reject);
    sock.write(body);
    setTimeout(() => sock.destroy(), timeoutMs).unref();
  });
}
