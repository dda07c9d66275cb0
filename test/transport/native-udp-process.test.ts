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

describeIntegration('NativeUdpSocket: a GSO send the kernel refuses', [], () => {
  let ns: Netns;
  beforeAll(async () => {
    ns = await Netns.create('ngso');
    // A veth whose far end has no addresses; static neighbours so sends
    // leave at once instead of waiting for address resolution.
    await ns.exec('ip', ['link', 'add', 'gs0', 'type', 'veth', 'peer', 'name', 'gs1']);
    await ns.exec('ip', ['link', 'set', 'gs1', 'up']);
    await ns.exec('ip', ['link', 'set', 'gs0', 'mtu', '1280', 'up']);
    await ns.exec('ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'gs0']);
    await ns.exec('ip', ['-6', 'addr', 'add', 'fd77::1/64', 'dev', 'gs0', 'nodad']);
    await ns.exec('ip', ['neigh', 'add', '10.77.0.2', 'lladdr', '02:00:00:00:77:02', 'dev', 'gs0']);
    await ns.exec('ip', ['-6', 'neigh', 'add', 'fd77::2', 'lladdr', '02:00:00:00:77:02', 'dev', 'gs0']);
  });
  afterAll(async () => {
    await ns?.destroy();
  });

  // Segments larger than the route's MTU make the kernel answer EINVAL for
  // the GSO send: that batch must still leave (one datagram at a time), and
  // GSO must come back for later batches instead of being off for good.
  it('resends that batch datagram by datagram and uses GSO again a few batches later', async () => {
    const { stdout } = await ns.exec(process.execPath, [FIXTURE, 'gso-refused'], { timeoutMs: 20_000 });
    type Stats = { sent: number; sendErrors: number; gsoDatagrams: number; gsoRefused: number };
    const r = JSON.parse(stdout) as Record<'v4' | 'v6', { oversized: number; afterRefusal: Stats; gsoAgainAt: number | null; final: Stats }>;
    for (const fam of ['v4', 'v6'] as const) {
      const x = r[fam];
      expect(x.oversized, fam).toBe(10);
      expect(x.afterRefusal, fam).toMatchObject({ sent: 10, sendErrors: 0, gsoRefused: 1, gsoDatagrams: 0 });
      // Paused for 64 batches (GSO_PAUSE_BATCHES in udp.c), then back.
      expect(x.gsoAgainAt, fam).toBe(65);
      expect(x.final.gsoRefused, fam).toBe(1);
      expect(x.final.sendErrors, fam).toBe(0);
    }
  });
});
