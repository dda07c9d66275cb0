import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeIntegration, Netns } from '../helpers/netns.js';

const execFileP = promisify(execFile);
const FIXTURE = fileURLToPath(new URL('./fixtures/udp-child.mjs', import.meta.url));

async function child(args: string[], nodeFlags: string[] = [], timeout = 20_000): Promise<string> {
  const { stdout } = await execFileP(process.execPath, [...nodeFlags, FIXTURE, ...args], { timeout, encoding: 'utf8' });
  return stdout;
}

describe('NativeUdpSocket and the process', () => {
  it('a closed socket does not keep the process alive', async () => {
    const started = Date.now();
    expect(await child(['exit-after-close'], [], 10_000)).toContain('listening');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('an unref()ed receiving socket does not keep the process alive', async () => {
    expect(await child(['exit-unref'], [], 10_000)).toContain('listening');
  });

  it('moves 1M datagrams through sendBatch and the receive batches without allocating per datagram', async () => {
    // A 1 MB semi-space makes the young generation scavenge every ~1 MB
    // allocated, so even 16 bytes per datagram would show as >= 16 scavenges.
    const flags = ['--expose-gc', '--max-semi-space-size=1'];
    const r = JSON.parse(await child(['alloc', '1000000'], flags, 120_000)) as { received: number; minor: number; major: number; heapDelta: number };
    expect(r.received).toBe(1_000_000);
    expect(r.minor).toBeLessThanOrEqual(4);
    expect(r.major).toBeLessThanOrEqual(2);
    expect(Math.abs(r.heapDelta)).toBeLessThan(256 * 1024);
    // The detector works: one subarray per datagram is plainly visible.
    const c = JSON.parse(await child(['alloc', '200000', 'control'], flags, 120_000)) as { minor: number };
    expect(c.minor).toBeGreaterThan(10);
  }, 150_000);
});

describeIntegration('NativeUdpSocket in a namespace without routes', [], () => {
  let ns: Netns;
  beforeAll(async () => {
    ns = await Netns.create('nudp');
  });
  afterAll(async () => {
    await ns?.destroy();
  });

  it('counts ENETUNREACH on send instead of throwing', async () => {
    const { stdout } = await ns.exec(process.execPath, [FIXTURE, 'unreach'], { timeoutMs: 20_000 });
    const r = JSON.parse(stdout) as {
      one: boolean;
      many: number;
      six: number;
      v4: { sent: number; sendErrors: number; lastSendErrno: string };
      v6: { sent: number; sendErrors: number; lastSendErrno: string };
    };
    expect(r.one).toBe(false);
    expect(r.many).toBe(0);
    expect(r.six).toBe(0);
    expect(r.v4).toMatchObject({ sent: 0, sendErrors: 4, lastSendErrno: 'ENETUNREACH' });
    expect(r.v6).toMatchObject({ sent: 0, sendErrors: 2, lastSendErrno: 'ENETUNREACH' });
  });
});
