/**
 * Memory under garbage: one million hostile datagrams (random bytes, wrong
 * sizes, bad MACs, unknown indices: the "mixed-light" kind of
 * test/fixtures/hardening/udp-attack.mjs) at host B's port while LAN A pings
 * LAN B through the tunnel. The goal: RSS growth under 10 MB, nothing lost.
 *
 * Run as root:  npx tsc -p tsconfig.json && node dist/bench/hardening-garbage.js [--datagrams N]
 *
 * Reference in the same run: the daemon's RSS drift over an idle window as
 * long as the attack (same process, tunnel up, ping only), so the growth is
 * read against the noise of this shared machine. Namespaces are removed in
 * every outcome.
 */
import { ADDR } from '../src/testbed/site-to-site.js';
import { sleep } from '../src/testbed/netns.js';
import { argNumber, ATTACK_FIXTURE, benchBed, mb, pidOf, pingCount, procFigures, status, TARGET, totalDrops, udpRcvbufErrors } from './hardening-bed.js';

const TOTAL = argNumber('datagrams', 1_000_000);
const CHUNK = 100_000;

async function main(): Promise<void> {
  const b = await benchBed('bg');
  try {
    const pid = pidOf(b.db);
    const send = async (n: number): Promise<void> => {
      await b.atk.exec(process.execPath, [ATTACK_FIXTURE, 'garbage', 'mixed-light', String(n), TARGET, '51820', '', '200'], { timeoutMs: 300_000 });
    };
    // Warm-up: JIT, socket buffers, the heap's first growth.
    await send(50_000);
    await sleep(1_000);
    // Datagrams the kernel dropped because the daemon's socket buffer was full.
    const rcvbuf = (): Promise<number> => udpRcvbufErrors(b.bed.tb);
    const kernel0 = await rcvbuf();
    const s0 = await status(b.db);
    const r0 = await procFigures(pid);
    const t0 = performance.now();
    const samples: number[] = [r0.rssBytes];
    // Legitimate traffic during the attack: a ping every 50 ms, stopped with SIGINT after.
    const ping = b.bed.la.spawn('ping', ['-n', '-q', '-i', '0.05', '-W', '1', ADDR.lb.v4]);
    let pingOut = '';
    ping.stdout?.on('data', (c: Buffer) => (pingOut += c.toString()));
    const pingDone = new Promise((r) => ping.once('exit', r));
    let sent = 0;
    while (sent < TOTAL) {
      const n = Math.min(CHUNK, TOTAL - sent);
      await send(n);
      sent += n;
      samples.push((await procFigures(pid)).rssBytes);
    }
    const attackMs = performance.now() - t0;
    ping.kill('SIGINT');
    await pingDone;
    const m = /(\d+) packets transmitted, (\d+) received/.exec(pingOut);
    const during = { sent: m ? Number(m[1]) : 0, received: m ? Number(m[2]) : 0 };
    await sleep(1_000);
    const r1 = await procFigures(pid);
    const s1 = await status(b.db);
    // Reference: the same daemon idle (ping only) for as long as the attack took.
    const ref0 = await procFigures(pid);
    await sleep(Math.min(attackMs, 60_000));
    const ref1 = await procFigures(pid);
    const after = await pingCount(b.bed.la, ADDR.lb.v4, 50, 0.02);
    const counted = totalDrops(s1) - totalDrops(s0);
    const kernelDropped = (await rcvbuf()) - kernel0;
    const result = {
      datagrams: sent,
      seconds: +(attackMs / 1000).toFixed(1),
      ratePerSecond: Math.round(sent / (attackMs / 1000)),
      countedAsDrops: counted,
      notCounted: sent - counted,
      kernelRcvbufDrops: kernelDropped,
      rssBeforeMB: mb(r0.rssBytes),
      rssAfterMB: mb(r1.rssBytes),
      rssGrowthMB: mb(r1.rssBytes - r0.rssBytes),
      rssPeakMB: mb(Math.max(...samples)),
      idleDriftMB: mb(ref1.rssBytes - ref0.rssBytes),
      cpuSecondsAttack: +(r1.cpuSeconds - r0.cpuSeconds).toFixed(1),
      fds: [r0.openFds, r1.openFds],
      pingDuringAttack: during,
      pingAfter: after,
      verdict: r1.rssBytes - r0.rssBytes < 10 * 1048576 ? 'PASS (< 10 MB)' : 'FAIL (>= 10 MB)',
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await b.destroy();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
