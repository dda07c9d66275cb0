/**
 * Soak: mixed traffic through the tunnel for a long time (default 10
 * minutes): a continuous IPv4 ping and IPv6 ping, and back-to-back TCP
 * transfers with end-to-end checksums. Samples both daemons' RSS and open
 * descriptors and counts rekeys (changes of the last-handshake time).
 * Goal: no loss beyond the underlay's (none here), RSS steady, no growth in
 * open handles.
 *
 * Run as root:  npx tsc -p tsconfig.json && node dist/bench/soak.js [--minutes 10] [--rekey-seconds 30]
 *
 * A rekey every 30 s needs shortened protocol timers: the daemons are
 * started with NODE_ENV=test and TUNVPN_TEST_REKEY_AFTER_TIME_MS (honoured
 * only with NODE_ENV=test; see docs/decisions.md), and the report says how
 * many rekeys it saw.
 *
 * Reference in the same run: the first sample after a one-minute warm-up
 * (or a fifth of the run when shorter); growth is read against it.
 */
import { sleep } from '../src/testbed/netns.js';
import { ADDR, fromRoot } from '../src/testbed/site-to-site.js';
import { argNumber, benchBed, mb, pidOf, procFigures, status, totalDrops, type ProcFigures } from './hardening-bed.js';

const MINUTES = argNumber('minutes', 10);
const REKEY_S = argNumber('rekey-seconds', 30);
const SAMPLE_MS = 15_000;
const TRANSFER_BYTES = 8 * 1024 * 1024;
const TCP_FIXTURE = fromRoot('test', 'fixtures', 'tcp-transfer.mjs');

async function main(): Promise<void> {
  const b = await benchBed('sk', { NODE_ENV: 'test', TUNVPN_TEST_REKEY_AFTER_TIME_MS: String(REKEY_S * 1000) });
  const end = Date.now() + MINUTES * 60_000;
  try {
    const pids = { a: pidOf(b.da), b: pidOf(b.db) };
    const pings = [
      { name: 'ipv4', child: b.bed.la.spawn('ping', ['-n', '-q', '-i', '0.1', '-W', '2', ADDR.lb.v4]), out: '' },
      { name: 'ipv6', child: b.bed.la.spawn('ping', ['-6', '-n', '-q', '-i', '0.1', '-W', '2', ADDR.lb.v6]), out: '' },
    ];
    for (const p of pings) p.child.stdout?.on('data', (c: Buffer) => (p.out += c.toString()));
    const drops0 = { a: totalDrops(await status(b.da)), b: totalDrops(await status(b.db)) };

    const transfers = { ok: 0, failed: 0, bytes: 0 };
    let port = 6000;
    const transferLoop = (async () => {
      while (Date.now() < end - 15_000) {
        const p = port++;
        const server = b.bed.lb.spawn(process.execPath, [TCP_FIXTURE, 'server', ADDR.lb.v4, String(p)]);
        await new Promise((r) => server.stdout?.once('data', r));
        try {
          const { stdout } = await b.bed.la.exec(process.execPath, [TCP_FIXTURE, 'client', ADDR.lb.v4, String(p), String(TRANSFER_BYTES), '60'], {
            timeoutMs: 70_000,
          });
          const r = JSON.parse(stdout.trim()) as { local: string; remote: string; received: number };
          if (r.local === r.remote && r.received === TRANSFER_BYTES) {
            transfers.ok++;
            transfers.bytes += TRANSFER_BYTES;
          } else transfers.failed++;
        } catch {
          transfers.failed++;
        } finally {
          server.kill();
        }
        await sleep(2_000);
      }
    })();

    const samples: { t: number; a: ProcFigures; b: ProcFigures }[] = [];
    const handshakes = new Set<number>();
    const t0 = Date.now();
    while (Date.now() < end) {
      samples.push({ t: Math.round((Date.now() - t0) / 1000), a: await procFigures(pids.a), b: await procFigures(pids.b) });
      for (const d of [b.da, b.db]) {
        for (const p of (await status(d)).peers) if (p.lastHandshakeWallMs > 0) handshakes.add(p.lastHandshakeWallMs);
      }
      const last = samples[samples.length - 1];
      console.error(
        `t=${last.t}s rss a=${mb(last.a.rssBytes)} b=${mb(last.b.rssBytes)} MB fds a=${last.a.openFds} b=${last.b.openFds} transfers ok=${transfers.ok} failed=${transfers.failed} handshakes seen=${handshakes.size}`,
      );
      await sleep(Math.min(SAMPLE_MS, Math.max(0, end - Date.now())));
    }
    await transferLoop;
    const pingResults: Record<string, { sent: number; received: number }> = {};
    for (const p of pings) {
      const done = new Promise((r) => p.child.once('exit', r));
      p.child.kill('SIGINT');
      await done;
      const m = /(\d+) packets transmitted, (\d+) received/.exec(p.out);
      pingResults[p.name] = { sent: m ? Number(m[1]) : 0, received: m ? Number(m[2]) : 0 };
    }
    const drops1 = { a: totalDrops(await status(b.da)), b: totalDrops(await status(b.db)) };
    const warmIdx = samples.findIndex((s) => s.t >= Math.min(60, (MINUTES * 60) / 5));
    const ref = samples[Math.max(warmIdx, 0)];
    const last = samples[samples.length - 1];
    const range = (k: 'a' | 'b'): string => `${mb(Math.min(...samples.map((s) => s[k].rssBytes)))}..${mb(Math.max(...samples.map((s) => s[k].rssBytes)))}`;
    console.log(
      JSON.stringify(
        {
          minutes: MINUTES,
          requestedRekeySeconds: REKEY_S,
          distinctHandshakesSeen: handshakes.size,
          transfers,
          pings: pingResults,
          dropsDuringRun: { a: drops1.a - drops0.a, b: drops1.b - drops0.b },
          rssMB: {
            a: { reference: mb(ref.a.rssBytes), last: mb(last.a.rssBytes), growth: mb(last.a.rssBytes - ref.a.rssBytes), range: range('a') },
            b: { reference: mb(ref.b.rssBytes), last: mb(last.b.rssBytes), growth: mb(last.b.rssBytes - ref.b.rssBytes), range: range('b') },
          },
          openFds: { a: [samples[0].a.openFds, last.a.openFds], b: [samples[0].b.openFds, last.b.openFds] },
          cpuSeconds: { a: last.a.cpuSeconds, b: last.b.cpuSeconds },
        },
        null,
        2,
      ),
    );
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
