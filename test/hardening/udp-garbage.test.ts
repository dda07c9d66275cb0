/**
 * Garbage at the UDP port: random bytes, wrong sizes, right headers with
 * bad MACs, unknown indices, replays of captured transport packets, forged
 * transport packets, replayed initiations. Each kind is sent from an
 * attacker namespace to host B while a ping and a TCP transfer cross the
 * tunnel; each must be dropped and counted under its reason, and the
 * legitimate traffic must not notice.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADDR } from '../../src/testbed/site-to-site.js';
import { tcpTransfer } from '../helpers/daemon.js';
import { describeIntegration } from '../helpers/netns.js';
import {
  attack,
  ATTACK,
  dropDelta,
  hardeningBed,
  pidOf,
  pingCount,
  procFigures,
  settledStatus,
  status,
  udpRcvbufErrors,
  type HardeningBed,
} from './helpers.js';

/** kind, datagrams sent, the drop reason they must land in, send batch (per ms). */
const KINDS: [string, number, string, number][] = [
  ['random', 2000, 'malformed', 50],
  ['truncated', 2000, 'malformed', 50],
  ['oversized', 300, 'malformed', 50],
  ['badmac', 2000, 'bad-mac', 50],
  ['badcookie', 2000, 'unknown-index', 50],
  ['replay-transport', 2000, 'replay', 50],
  ['badauth-transport', 2000, 'bad-auth', 50],
  // Fast enough to put B under load: the later ones get cookie replies instead.
  ['replay-initiation', 200, 'stale-timestamp', 50],
];

describeIntegration('hardening: garbage at the UDP port', ['ping', 'tcpdump'], () => {
  let h: HardeningBed;
  let pcap: string;

  beforeAll(async () => {
    h = await hardeningBed('hg', {
      // B's first initiation finds nobody; A's is the one B consumes and the replays reuse.
      bFirst: true,
      // Capture the tunnel from the start, handshake included, for the replays.
      beforeDaemons: async (bed, dir) => {
        pcap = join(dir.path, 'tunnel.pcap');
        const dump = bed.tb.spawn('tcpdump', ['-n', '-U', '-i', bed.underB, '-c', '400', '-w', pcap, 'udp', 'port', '51820']);
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('tcpdump did not start')), 10_000);
          dump.stderr?.on('data', (c: Buffer) => {
            if (c.toString().includes('listening')) {
              clearTimeout(timer);
              resolve();
            }
          });
        });
        captureStop = async () => {
          dump.kill('SIGINT');
          await new Promise((r) => (dump.exitCode !== null ? r(undefined) : dump.once('exit', r)));
        };
      },
    });
    await pingCount(h.bed.la, ADDR.lb.v4, 20, 0.05);
    await captureStop();
  });
  let captureStop: () => Promise<void> = async () => undefined;

  afterAll(async () => {
    await captureStop();
    await h?.destroy();
  });

  it('drops and counts every kind by its reason while ping and TCP keep flowing', async () => {
    const pid = pidOf(h.db);
    const mem0 = await procFigures(pid);
    const ping = pingCount(h.bed.la, ADDR.lb.v4, 300, 0.02);
    const transfer = tcpTransfer(h.bed.la, h.bed.lb, ADDR.lb.v4, 5101, 8 * 1024 * 1024, 60);
    const replies: Record<string, { responses: number; cookieReplies: number; other: number }> = {};
    const results: { kind: string; sent: number; reason: string; counted: number; kernelDropped: number; other: Record<string, number> }[] = [];
    for (const [kind, n, reason, batch] of KINDS) {
      const before = await status(h.db);
      const k0 = await udpRcvbufErrors(h.bed.tb);
      const r = await attack(h.atk, ['garbage', kind, String(n), ATTACK.target, '51820', `${pcap}@${ADDR.tbUnder.v4}`, String(batch)]);
      expect(r.sent).toBe(n);
      replies[kind] = { responses: r.responses, cookieReplies: r.cookieReplies, other: r.replies - r.responses - r.cookieReplies };
      const delta = dropDelta(before, await settledStatus(h.db));
      const kernelDropped = (await udpRcvbufErrors(h.bed.tb)) - k0;
      const counted = delta[reason] ?? 0;
      delete delta[reason];
      results.push({ kind, sent: n, reason, counted, kernelDropped, other: delta });
    }
    const p = await ping;
    const t = await transfer;
    const mem1 = await procFigures(pid);
    console.log(JSON.stringify({ replies, results, ping: p, transferMs: t.ms, rssGrowthBytes: mem1.rssBytes - mem0.rssBytes }));

    for (const r of results) {
      // Every datagram is counted under its reason, or (only when this shared
      // machine starves the daemon) dropped by the kernel before the daemon
      // could read it, which is bounded here to 10 %.
      // Replayed initiations that find B under load are answered with a cookie reply instead.
      const cookies = r.kind === 'replay-initiation' ? replies[r.kind].cookieReplies : 0;
      expect({ kind: r.kind, accounted: r.counted + r.kernelDropped + cookies }).toEqual({ kind: r.kind, accounted: r.sent });
      expect(r.kernelDropped).toBeLessThanOrEqual(r.sent / 10);
      // Nothing of it lands in another bucket.
      expect({ kind: r.kind, other: r.other }).toEqual({ kind: r.kind, other: {} });
    }
    // Garbage never gets a handshake response; only replayed initiations may get cookie replies.
    for (const [kind, r] of Object.entries(replies)) {
      expect({ kind, responses: r.responses, other: r.other }).toEqual({ kind, responses: 0, other: 0 });
      if (kind !== 'replay-initiation') expect({ kind, cookies: r.cookieReplies }).toEqual({ kind, cookies: 0 });
    }
    expect(t.received).toBe(8 * 1024 * 1024);
    expect(t.remote).toBe(t.local);
    // Alone it is 300/300; with the other suites sharing the 2 cores, 1 of
    // 300 has been lost (the daemon's single thread is busy with garbage).
    expect(p.sent).toBe(300);
    expect(p.received).toBeGreaterThanOrEqual(297);
    expect(h.db.running).toBe(true);
    expect(mem1.rssBytes - mem0.rssBytes).toBeLessThan(32 * 1024 * 1024);
    // Nothing is logged per packet: a few thousand garbage datagrams add no warn/error lines.
    const noisy = h.db.records().filter((r) => typeof r.level === 'number' && r.level >= 40);
    expect(noisy.length).toBeLessThan(3);
  });
});
