/**
 * Garbage from the TUN side: packets with IP versions other than 4 and 6,
 * headers cut short, destinations no peer allows, headers whose lengths lie.
 * They are written into host A's tunvpn interface through an AF_PACKET
 * socket (test/fixtures/hardening/tun-inject.py), so the daemon reads them
 * as routed traffic. Each is dropped and counted; nothing crashes; the
 * tunnel keeps carrying traffic.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADDR } from '../../src/testbed/site-to-site.js';
import { describeIntegration, pingUntil } from '../helpers/netns.js';
import { dropDelta, hardeningBed, pingCount, settledStatus, status, TUN_WRITER, type HardeningBed } from './helpers.js';

const N = 1000;

describeIntegration('hardening: garbage from the TUN side', ['ping', 'python3'], () => {
  let h: HardeningBed;

  beforeAll(async () => {
    h = await hardeningBed('ht');
  });

  afterAll(async () => {
    await h?.destroy();
  });

  async function inject(kind: string): Promise<{ a: Record<string, number>; b: Record<string, number> }> {
    const [a0, b0] = [await status(h.da), await status(h.db)];
    const { stdout } = await h.bed.ta.exec('python3', [TUN_WRITER, h.hostA.interfaceName, kind, String(N)]);
    expect(JSON.parse(stdout) as { sent: number }).toMatchObject({ sent: N });
    return { a: dropDelta(a0, await settledStatus(h.da)), b: dropDelta(b0, await settledStatus(h.db)) };
  }

  it('bad IP versions are dropped as bad-ip-version', async () => {
    const d = await inject('badver');
    expect(d.a['bad-ip-version']).toBe(N);
    // The kernel's own packets on the interface (IPv6 multicast) may add a stray no-peer.
    expect(d.a['no-peer'] ?? 0).toBeLessThanOrEqual(2);
    expect(Object.keys(d.b).filter((k) => k !== 'no-peer')).toEqual([]);
  });

  it('IPv4 and IPv6 headers cut short are dropped as bad-ip-header, never sent', async () => {
    for (const kind of ['short4', 'short6']) {
      const d = await inject(kind);
      expect({ kind, n: d.a['bad-ip-header'] }).toEqual({ kind, n: N });
      expect(d.a['no-peer'] ?? 0).toBeLessThanOrEqual(2);
      // Nothing crossed: host B saw none of it (its own stray no-peer aside).
      expect(Object.keys(d.b).filter((k) => k !== 'no-peer')).toEqual([]);
    }
  });

  it('destinations no peer allows are dropped as no-peer (injected and routed)', async () => {
    const d = await inject('nopeer');
    expect(d.a['no-peer'] - N).toBeGreaterThanOrEqual(0);
    expect(d.a['no-peer'] - N).toBeLessThanOrEqual(2);
    // Routed by the kernel: LAN A pings an address on the tunnel subnet nobody has.
    const a0 = await status(h.da);
    const p = await pingCount(h.bed.la, '10.62.0.77', 20, 0.02);
    const a1 = await status(h.da);
    expect(p.received).toBe(0);
    expect(dropDelta(a0, a1)['no-peer']).toBeGreaterThanOrEqual(20);
  });

  it('headers whose lengths lie are dropped at the sender as bad-ip-header, never sealed and sent', async () => {
    const d = await inject('lying');
    expect(d.a['bad-ip-header']).toBe(N);
    expect(d.b['bad-inner-packet'] ?? 0).toBe(0);
  });

  it('after all of it both daemons run and the tunnel carries traffic', async () => {
    expect(h.da.running && h.db.running).toBe(true);
    await pingUntil(h.bed.la, ADDR.lb.v4, 5_000);
    const p = await pingCount(h.bed.la, ADDR.lb.v4, 50, 0.02);
    expect(p.received).toBe(50);
    const errors = [...h.da.records(), ...h.db.records()].filter((r) => typeof r.level === 'number' && r.level >= 50);
    expect(errors).toEqual([]);
  });
});
