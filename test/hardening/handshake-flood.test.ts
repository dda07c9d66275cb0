/**
 * Handshake flood: initiations with a valid mac1 (random, unknown static
 * keys) from 50 source addresses at a bounded rate, aimed at host B. The
 * legitimate peer must still complete a fresh handshake during the flood,
 * the daemon must survive and count what it dropped, and its CPU is
 * measured from /proc.
 *
 * The cookie mechanism must engage: past 32 initiations in 100 ms the
 * daemon is under load and answers initiations without a valid mac2 with a
 * cookie reply instead of a Diffie-Hellman (docs/decisions.md). The
 * restarted legitimate peer gets a cookie reply too and completes on its
 * retry with mac2: at the latest one Rekey-Timeout (5 s + jitter) later, as
 * in WireGuard, and usually ~100 ms later, because waiting data initiates
 * again behind an unanswered start-up initiation (first contact). The
 * cookie replies are counted (status `cookieRepliesSent`, Prometheus
 * `tunvpn_cookie_replies_sent_total`).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADDR, startDaemon } from '../../src/testbed/site-to-site.js';
import { describeIntegration, pingUntil, sleep } from '../helpers/netns.js';
import { attack, ATTACK, dropDelta, FLOOD_RATE, FLOOD_SECONDS, FLOOD_SOURCES, hardeningBed, pidOf, procFigures, status, type HardeningBed } from './helpers.js';

describeIntegration('hardening: handshake flood', ['ping'], () => {
  let h: HardeningBed;

  beforeAll(async () => {
    h = await hardeningBed('hf', { metricsB: '127.0.0.1:9586' });
    for (const a of FLOOD_SOURCES) await h.atk.exec('ip', ['addr', 'add', `${a}/24`, 'dev', h.atkIf]);
  });

  afterAll(async () => {
    await h?.destroy();
  });

  it('the legitimate peer completes a handshake during the flood; the daemon stays up and counts', async () => {
    const pid = pidOf(h.db);
    const before = await status(h.db);
    const cpu0 = await procFigures(pid);
    const t0 = performance.now();
    const flood = attack(h.atk, ['flood', ATTACK.target, '51820', h.b.publicKey, FLOOD_SOURCES.join(','), String(FLOOD_RATE), String(FLOOD_SECONDS)], 60_000);
    await sleep(1_000);
    // Host A restarts mid-flood: its new daemon must handshake with B to get through.
    await h.da.stop();
    h.da = await startDaemon(h.bed.ta, h.cfgA);
    const hs0 = Date.now();
    await pingUntil(h.bed.la, ADDR.lb.v4, 10_000);
    const handshakeMs = Date.now() - hs0;
    const r = await flood;
    const cpu1 = await procFigures(pid);
    const wallS = (performance.now() - t0) / 1000;
    const after = await status(h.db);
    const delta = dropDelta(before, after);
    const cpuShare = (cpu1.cpuSeconds - cpu0.cpuSeconds) / wallS;
    const peerA = after.peers.find((p) => p.name === 'a');
    console.log(JSON.stringify({ flood: r, handshakeMs, cpuShare, drops: delta, rss: cpu1.rssBytes }));

    expect(r.sent).toBe(FLOOD_RATE * FLOOD_SECONDS);
    expect(h.db.running).toBe(true);
    expect(peerA?.lastHandshakeWallMs ?? 0).toBeGreaterThan(before.peers.find((p) => p.name === 'a')?.lastHandshakeWallMs ?? 0);
    expect(handshakeMs).toBeLessThan(5_000 + 334 + 2_500);
    // Every flood initiation is answered with a cookie reply or dropped and
    // counted (unknown static key before the gate closed, rate limit); none
    // gets a handshake response.
    const dropped = (delta['unknown-peer'] ?? 0) + (delta['rate-limited'] ?? 0);
    expect(dropped + r.cookieReplies).toBeGreaterThanOrEqual(r.sent * 0.99);
    expect(r.responses).toBe(0);
    // The cookie gate engaged: most initiations cost a MAC, not a DH.
    expect(r.cookieReplies).toBeGreaterThan(r.sent / 2);
    // And the operator sees it: every cookie reply the attacker received was
    // counted (plus the legitimate peer's, minus none), in the status record
    // and in Prometheus.
    const cookies = after.cookieRepliesSent - before.cookieRepliesSent;
    expect(cookies).toBeGreaterThanOrEqual(r.cookieReplies);
    expect(cookies).toBeLessThanOrEqual(r.sent + 10);
    const { stdout: scrape } = await h.bed.tb.exec(process.execPath, [
      '-e',
      "fetch('http://127.0.0.1:9586/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))",
    ]);
    const line = scrape.split('\n').find((l) => l.startsWith('tunvpn_cookie_replies_sent_total '));
    expect(Number(line?.split(' ')[1])).toBeGreaterThanOrEqual(after.cookieRepliesSent);
    expect(delta['unknown-peer'] ?? 0).toBeLessThan(r.sent / 4);
    // Bounded: measured 9 % of a core at 2 000/s with the gate (21-24 % without).
    expect(cpuShare).toBeLessThan(0.5);
  });
});
