#!/usr/bin/env node
/**
 * Paired idle pings on fresh daemons (docs/decisions.md, "Idle round trip:
 * a fresh daemon is slower than a warmed one"): each round starts, in
 * turn, a tunvpn bed per TUNVPN_WARMUP mode and a wireguard-go bed, sends
 * one ping until the tunnel answers, then N idle pings 50 ms apart, and
 * tears the bed down. The order of the modes alternates by round, so drift
 * on the shared machine does not favour one. Prints every round with the
 * load average, the medians, and each tunvpn daemon's warm-up times (from
 * its log), start-up time (spawn to "tunvpn up", side A) and RSS after
 * the pings.
 *
 * Run as root:  npx tsc -p tsconfig.json && node dist/bench/fresh-rtt.js
 *   --modes a,b,...     TUNVPN_WARMUP values (default on,protocol)
 *   --rounds N          (default 3)
 *   --count N           idle pings per daemon (default 40)
 *   --wireguard-go P    the reference binary (default wireguard-go on PATH; "none" skips)
 *   --node-args "..."   extra node options for tunvpn (e.g. --trace-deopt; the output is saved)
 */
import { writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { loadCrypto } from '../src/crypto/index.js';
import { pingUntil, sleep } from '../src/testbed/netns.js';
import { ADDR, ConfigDir, SiteToSite, type KeyPair } from '../src/testbed/site-to-site.js';
import { ping } from './lib/measure.js';
import { statusMb } from './lib/proc.js';
import { OTHER_VPNS, wireguardGoAdapter, type RunningVpn, type VpnAdapter } from './lib/vpns.js';

interface Sample {
  round: number;
  label: string;
  avgMs: number;
  load: string;
  warmupMs?: Record<string, number>;
  upMs?: number;
  rssMb?: number;
}

const { values } = parseArgs({
  options: {
    modes: { type: 'string', default: 'on,protocol' },
    rounds: { type: 'string', default: '3' },
    count: { type: 'string', default: '40' },
    'wireguard-go': { type: 'string', default: 'wireguard-go' },
    'node-args': { type: 'string', default: '' },
  },
});
const modes = (values.modes ?? 'on').split(',').filter(Boolean);
const rounds = Number(values.rounds);
const count = Number(values.count);
const wgPath = values['wireguard-go'] ?? 'wireguard-go';
const nodeArgs = (values['node-args'] ?? '').split(' ').filter(Boolean);

const crypto = await loadCrypto('auto');
const wgKeys = async (): Promise<KeyPair> => {
  const priv = crypto.generatePrivateKey();
  return { privateKey: Buffer.from(priv).toString('base64'), publicKey: Buffer.from(crypto.publicKey(priv)).toString('base64') };
};
const tunvpn = OTHER_VPNS.find((v) => v.name === 'tunvpn');
if (tunvpn === undefined) throw new Error('no tunvpn adapter');

async function once(round: number, label: string, vpn: VpnAdapter, env: string | undefined): Promise<Sample> {
  const bed = await SiteToSite.create('fr');
  const dir = await ConfigDir.create();
  let run: RunningVpn | undefined;
  const before = process.env.TUNVPN_WARMUP;
  try {
    if (env !== undefined) process.env.TUNVPN_WARMUP = env;
    const t0 = performance.now();
    run = await vpn.start({ bed, dir, wgKeys, tunvpnNodeArgs: nodeArgs });
    const upMs = performance.now() - t0;
    if (before === undefined) delete process.env.TUNVPN_WARMUP;
    else process.env.TUNVPN_WARMUP = before;
    await pingUntil(bed.la, ADDR.lb.v4, 20_000);
    await sleep(200);
    const load = loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
    const r = await ping(bed.la, ADDR.lb.v4, count, 0.05);
    const s: Sample = { round, label, avgMs: r.avgMs, load };
    if (env !== undefined) {
      const a = run.daemons.find((d) => d.side === 'A');
      if (a) {
        s.upMs = upMs / 2; // both daemons start one after the other: about half each
        s.rssMb = statusMb(a.pid, 'VmRSS');
        s.warmupMs = {};
        for (const rec of a.proc.records()) {
          const msg = String(rec.msg ?? '');
          if (msg.endsWith('warmed up') && typeof rec.ms === 'number') s.warmupMs[msg.split(' ')[0]] = rec.ms;
        }
        if (nodeArgs.length > 0) await writeFile(`/tmp/fresh-rtt-${label}-${round}.log`, a.proc.lines.join('\n'));
      }
    }
    return s;
  } finally {
    if (before === undefined) delete process.env.TUNVPN_WARMUP;
    else process.env.TUNVPN_WARMUP = before;
    await Promise.all((run?.daemons ?? []).map((d) => d.proc.stop(5_000)));
    await bed.destroy();
    await dir.destroy();
  }
}

const samples: Sample[] = [];
const wg = wgPath === 'none' ? undefined : wireguardGoAdapter(wgPath);
for (let round = 1; round <= rounds; round++) {
  const order = round % 2 === 1 ? modes : [...modes].reverse();
  for (const m of order) {
    const s = await once(round, `tunvpn:${m}`, tunvpn, m);
    samples.push(s);
    console.log(JSON.stringify(s));
  }
  if (wg) {
    const s = await once(round, wg.name, wg, undefined);
    samples.push(s);
    console.log(JSON.stringify(s));
  }
}
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
for (const label of [...new Set(samples.map((s) => s.label))]) {
  const mine = samples.filter((s) => s.label === label);
  console.log(`${label}: avg RTT per round ${mine.map((s) => s.avgMs.toFixed(3)).join(' ')} ms, median ${median(mine.map((s) => s.avgMs)).toFixed(3)}`);
}
