#!/usr/bin/env node
/**
 * `npm run bench`: tunvpn against wireguard-go (the reference) and, where
 * installed, fastd, tinc, OpenVPN and QuickTun, on the two-site test bed
 * (design.md section 4), in one run.
 *
 * Every VPN gets its own bed (its own four namespaces) and stays up. Each
 * first gets idle pings on the fresh tunnel ("RTT idle, fresh": no traffic
 * yet, so a JIT has not compiled the packet path and every cache is cold)
 * and then a 1 s TCP warm-up that is not measured. Then R rounds visit the
 * VPNs in turn, each doing, from LAN A to LAN B,
 *   ping idle ─▶ iperf3 TCP 1 stream with ping alongside ─▶ TCP 4 streams
 *   ─▶ iperf3 UDP small then large payloads at a capped packet rate
 * with the daemons' CPU time (/proc/PID/stat) read around the TCP runs and
 * their VmHWM at the end. Figures are medians over the rounds, so slow
 * drift on a shared machine hits every VPN alike. Afterwards the many-peer
 * start-up check (tunvpn and wireguard-go with N peers, default 10,000),
 * then the routed hub (bench/lib/hub.ts: N peers with one routed /24 each,
 * default 10,000: start, memory, a SIGHUP reload that moves one prefix,
 * stop; beside it every wireguard-go build with `wg setconf` and one
 * `ip -batch` of the same routes).
 *
 * Prints a table (every figure also as a ratio to wireguard-go), writes
 * bench/results/<timestamp>.json and docs/bench/latest.json, and renders
 * docs/bench/throughput.svg. Cleans up namespaces and processes in every
 * outcome (finally, SIGINT/SIGTERM, and the testbed's exit hook).
 *
 * Run as root:  npx tsc -p tsconfig.json && node dist/bench/vpn-compare.js [options]
 *   --quick | --full          presets (default stays under 3 minutes)
 *   --rounds N                rounds over all VPNs, medians reported (default 2; --quick 1, --full 3)
 *   --tcp-seconds N           per TCP run (default 3; --quick 1, --full 10)
 *   --udp-seconds N           per UDP run (default 2)
 *   --ping-count N            idle pings, 50 ms apart (default 20)
 *   --max-pps N               UDP offered-rate cap, packets/s (default 300000)
 *   --udp-small N / --udp-large N   UDP payload bytes (default 64 / 1392)
 *   --vpns a,b,...            subset, in order (tunvpn,wireguard-go,fastd,tinc,openvpn,quicktun,plain)
 *   --wireguard-go P[,P...]   wireguard-go binaries, each its own column named by
 *                             `P --version`; the first is the reference for every
 *                             ratio (default $TUNVPN_BENCH_WIREGUARD_GO, else
 *                             wireguard-go on PATH); "wireguard-go" in --vpns
 *                             stands for all of them
 *   --peers N                 many-peer check size (default 10000, 0 skips)
 *   --hub-peers N             routed-hub check size (default 10000, 0 skips; at most 32000)
 *   --hub-profile             the hub's tunvpn daemon under node --cpu-prof; prints
 *                             the top functions of its start, reload and stop
 *   --only PARTS              run only these parts, comma-separated: vpns (the
 *                             throughput comparison), peers (many-peer start-up),
 *                             hub (the routed hub); e.g. --only hub --hub-peers 500
 *   --budget N                start no new measurement round after N seconds (default 150)
 *   --profile                 profile mode: tunvpn only under node --cpu-prof
 *                             during one TCP run; prints the top entries
 *   --node-args "..."         extra node options for the tunvpn daemons (A/B a V8 flag)
 *   --no-docs                 do not overwrite docs/bench/* (also implied when
 *                             --only leaves out vpns)
 *   --help                    this text
 */
import { readFileSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadCrypto } from '../src/crypto/index.js';
import { pingUntil, sleep } from '../src/testbed/netns.js';
import { ADDR, ConfigDir, SiteToSite, fromRoot, type KeyPair } from '../src/testbed/site-to-site.js';
import { formatProfile, summariseProfile, type ProfileSummary } from './lib/cpuprofile.js';
import { IperfServer, ping, tcpThroughput, tcpWithPing, udpRate } from './lib/measure.js';
import { formatPhase } from './lib/hub-profile.js';
import { HUB_MAX_PEERS, hubLine, hubPlan, hubTargetLines, tunvpnHub, wireguardGoHub, type HubResult } from './lib/hub.js';
import { tunvpnPeerLoad, wireguardGoPeerLoad, type PeerLoadResult } from './lib/peer-load.js';
import { cpuSeconds, statusMb } from './lib/proc.js';
import { label, ratio, renderTable, type VpnResult } from './lib/report.js';
import { renderThroughputSvg } from './lib/svg.js';
import { OTHER_VPNS, hasCommand, wireguardGoAdapter, wireguardGoPaths, type RunningVpn, type VpnAdapter } from './lib/vpns.js';

const IPERF_PORT = 5201;

interface Options {
  preset: 'quick' | 'default' | 'full';
  tcpSeconds: number;
  udpSeconds: number;
  pingCount: number;
  maxPps: number;
  udpSmall: number;
  udpLarge: number;
  vpns: string[];
  peers: number;
  hubPeers: number;
  hubProfile: boolean;
  /** The parts to run: the throughput comparison, the many-peer start-up, the routed hub. */
  parts: Set<Part>;
  budgetS: number;
  profile: boolean;
  docs: boolean;
  rounds: number;
  nodeArgs: string[];
  /** wireguard-go binaries; the first is the reference. */
  wireguardGo: string[];
}

const PARTS = ['vpns', 'peers', 'hub'] as const;
type Part = (typeof PARTS)[number];

/** The option list of this file's header comment, for --help. */
function usage(): string {
  let source: string;
  try {
    source = readFileSync(fileURLToPath(import.meta.url).replace(/\/dist\/bench\/(\w[\w-]*)\.js$/, '/bench/$1.ts'), 'utf8');
  } catch {
    return 'bench/vpn-compare.ts not found: its header comment lists the options\n';
  }
  const header = /\/\*\*([\s\S]*?)\*\//.exec(source)?.[1] ?? '';
  return (
    header
      .split('\n')
      .map((l) => l.replace(/^ \* ?/, ''))
      .join('\n')
      .trim() + '\n'
  );
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      full: { type: 'boolean' },
      'tcp-seconds': { type: 'string' },
      'udp-seconds': { type: 'string' },
      'ping-count': { type: 'string' },
      'max-pps': { type: 'string' },
      'udp-small': { type: 'string' },
      'udp-large': { type: 'string' },
      vpns: { type: 'string' },
      peers: { type: 'string' },
      'hub-peers': { type: 'string' },
      'hub-profile': { type: 'boolean' },
      only: { type: 'string' },
      help: { type: 'boolean' },
      budget: { type: 'string' },
      profile: { type: 'boolean' },
      'no-docs': { type: 'boolean' },
      rounds: { type: 'string' },
      'node-args': { type: 'string' },
      'wireguard-go': { type: 'string' },
    },
    strict: true,
  });
  const preset = values.quick ? 'quick' : values.full ? 'full' : 'default';
  const base = {
    quick: { tcp: 1, udp: 1, ping: 10, rounds: 1, budget: 100, vpns: ['tunvpn', 'wireguard-go', 'fastd', 'tinc', 'openvpn', 'quicktun'] },
    default: { tcp: 3, udp: 2, ping: 20, rounds: 2, budget: 150, vpns: ['tunvpn', 'wireguard-go', 'fastd', 'tinc', 'openvpn', 'quicktun'] },
    full: { tcp: 10, udp: 5, ping: 100, rounds: 3, budget: 900, vpns: ['tunvpn', 'wireguard-go', 'fastd', 'tinc', 'openvpn', 'quicktun', 'plain'] },
  }[preset];
  const num = (v: string | undefined, d: number, what: string): number => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${what} must be a non-negative number, not "${v}"`);
    return n;
  };
  const profile = values.profile ?? false;
  const parts = new Set<Part>();
  for (const p of (values.only ?? PARTS.join(','))
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    if (!(PARTS as readonly string[]).includes(p)) throw new Error(`--only: unknown part "${p}" (known: ${PARTS.join(', ')})`);
    parts.add(p as Part);
  }
  if (profile) {
    parts.clear();
    parts.add('vpns');
  }
  const hubPeers = Math.round(num(values['hub-peers'], 10_000, 'hub-peers'));
  if (hubPeers > HUB_MAX_PEERS) throw new Error(`--hub-peers must be at most ${HUB_MAX_PEERS}, not ${hubPeers}`);
  return {
    preset,
    tcpSeconds: num(values['tcp-seconds'], profile ? 10 : base.tcp, 'tcp-seconds'),
    udpSeconds: num(values['udp-seconds'], base.udp, 'udp-seconds'),
    pingCount: Math.max(1, Math.round(num(values['ping-count'], base.ping, 'ping-count'))),
    maxPps: num(values['max-pps'], 300_000, 'max-pps'),
    udpSmall: num(values['udp-small'], 64, 'udp-small'),
    udpLarge: num(values['udp-large'], 1392, 'udp-large'),
    vpns: profile
      ? ['tunvpn']
      : values.vpns
        ? values.vpns
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : base.vpns,
    peers: Math.round(num(values.peers, profile ? 0 : 10_000, 'peers')),
    hubPeers,
    hubProfile: values['hub-profile'] ?? false,
    parts,
    budgetS: num(values.budget, base.budget, 'budget'),
    profile,
    docs: !(values['no-docs'] ?? false) && !profile && parts.has('vpns'),
    nodeArgs: (values['node-args'] ?? '').split(/\s+/).filter(Boolean),
    rounds: Math.max(1, Math.round(num(values.rounds, profile ? 1 : base.rounds, 'rounds'))),
    wireguardGo: wireguardGoPaths(values['wireguard-go']),
  };
}

const log = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

/** What must be undone if we are interrupted now. */
const pending = new Set<() => Promise<void>>();

async function cleanupAll(): Promise<void> {
  for (const undo of [...pending]) {
    pending.delete(undo);
    await undo().catch(() => undefined);
  }
}

function sumCpu(run: RunningVpn): number {
  return run.daemons.reduce((s, d) => s + cpuSeconds(d.pid), 0);
}

/** One VPN on its own bed, started and reachable, between rounds. */
interface Live {
  vpn: VpnAdapter;
  result: VpnResult;
  rounds: VpnResult[];
  bed?: SiteToSite;
  dir?: ConfigDir;
  run?: RunningVpn;
  server?: IperfServer;
  undo: () => Promise<void>;
}

async function startVpn(vpn: VpnAdapter, wgKeys: () => Promise<KeyPair>, profileDir: string | undefined, nodeArgs: string[]): Promise<Live> {
  const live: Live = {
    vpn,
    result: { name: vpn.name, version: vpn.version(), setup: vpn.setup, status: 'ok' },
    rounds: [],
    undo: async () => {
      live.server?.stop();
      // SIGTERM first: a profiled node writes its .cpuprofile on a clean exit.
      await Promise.all((live.run?.daemons ?? []).map((d) => d.proc.stop(5_000)));
      await live.bed?.destroy();
      await live.dir?.destroy();
    },
  };
  pending.add(live.undo);
  try {
    live.bed = await SiteToSite.create('bv');
    live.dir = await ConfigDir.create();
    live.run = await vpn.start({
      bed: live.bed,
      dir: live.dir,
      wgKeys,
      tunvpnNodeArgs: [...nodeArgs, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])],
    });
    await pingUntil(live.bed.la, ADDR.lb.v4, 20_000);
    live.server = await IperfServer.start(live.bed.lb, ADDR.lb.v4, IPERF_PORT);
    const pid = (side: 'A' | 'B'): number => live.run?.daemons.find((x) => x.side === side)?.pid ?? -1;
    if (live.run.daemons.length > 0) live.result.pids = { A: pid('A'), B: pid('B') };
  } catch (err) {
    fail(live, err);
  }
  return live;
}

function fail(live: Live, err: unknown): void {
  live.result.status = 'failed';
  live.result.error = (err as Error).message;
  for (const d of live.run?.daemons ?? []) if (d.proc.lines.length) live.result.error += `\n[${d.side}] ${d.proc.lines.slice(-8).join('\n[' + d.side + '] ')}`;
}

/**
 * Idle pings on the fresh tunnel, then a 1 s TCP run to warm it: the rounds
 * measure a tunnel that has carried traffic before, as a deployed one has.
 */
async function freshAndWarm(live: Live, opts: Options): Promise<void> {
  const { bed } = live;
  if (live.result.status !== 'ok' || !bed || opts.profile) return;
  try {
    live.result.pingFresh = await ping(bed.la, ADDR.lb.v4, opts.pingCount, 0.05);
    await tcpThroughput(bed.la, ADDR.lb.v4, IPERF_PORT, 1, 1);
    await sleep(300);
  } catch (err) {
    fail(live, err);
  }
}

/** One round of every measurement on one VPN. */
async function measureRound(live: Live, opts: Options): Promise<void> {
  const { bed, run } = live;
  if (live.result.status !== 'ok' || !bed || !run) return;
  const r: VpnResult = { ...live.result };
  const t0 = Date.now();
  const dst = ADDR.lb.v4;
  try {
    if (opts.profile) {
      const cpu0 = sumCpu(run);
      r.tcp1 = await tcpThroughput(bed.la, dst, IPERF_PORT, 1, opts.tcpSeconds);
      r.cpuSecondsPerGB = (sumCpu(run) - cpu0) / (r.tcp1.bytes / 1e9);
    } else {
      r.pingIdle = await ping(bed.la, dst, opts.pingCount, 0.05);
      const cpu0 = sumCpu(run);
      const loaded = await tcpWithPing(bed.la, dst, IPERF_PORT, 1, opts.tcpSeconds);
      r.tcp1 = loaded.tcp;
      r.pingLoad = loaded.ping;
      r.tcp4 = await tcpThroughput(bed.la, dst, IPERF_PORT, 4, opts.tcpSeconds);
      const cpu1 = sumCpu(run);
      const gb = (r.tcp1.bytes + r.tcp4.bytes) / 1e9;
      if (run.daemons.length > 0 && gb > 0) r.cpuSecondsPerGB = (cpu1 - cpu0) / gb;
      r.udpSmall = await udpRate(bed.la, dst, IPERF_PORT, opts.udpSmall, opts.udpSeconds, opts.maxPps);
      // Let queues drain so the next run starts from an idle tunnel.
      await sleep(300);
      r.udpLarge = await udpRate(bed.la, dst, IPERF_PORT, opts.udpLarge, opts.udpSeconds, opts.maxPps);
    }
    const hwm = (side: 'A' | 'B'): number => {
      const d = run.daemons.find((x) => x.side === side);
      return d ? statusMb(d.pid, 'VmHWM') : Number.NaN;
    };
    if (run.daemons.length > 0) r.peakRssMb = { A: hwm('A'), B: hwm('B') };
    for (const d of run.daemons)
      if (!d.proc.running) throw new Error(`${live.vpn.name} daemon on host ${d.side} exited during the run:\n${d.proc.lines.slice(-10).join('\n')}`);
    r.seconds = (Date.now() - t0) / 1000;
    live.rounds.push(r);
  } catch (err) {
    fail(live, err);
  }
}

function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/** Element-wise median over rounds of every numeric field (peak RSS: the maximum). */
function combine(rounds: readonly VpnResult[]): Partial<VpnResult> {
  const numeric = <T extends object>(items: (T | undefined)[]): T | undefined => {
    const present = items.filter((x): x is T => x !== undefined);
    if (present.length === 0) return undefined;
    const out: Record<string, number> = {};
    for (const k of Object.keys(present[0])) out[k] = median(present.map((p) => (p as Record<string, number>)[k]));
    return out as T;
  };
  return {
    tcp1: numeric(rounds.map((r) => r.tcp1)),
    tcp4: numeric(rounds.map((r) => r.tcp4)),
    udpSmall: numeric(rounds.map((r) => r.udpSmall)),
    udpLarge: numeric(rounds.map((r) => r.udpLarge)),
    pingIdle: numeric(rounds.map((r) => r.pingIdle)),
    pingLoad: numeric(rounds.map((r) => r.pingLoad)),
    cpuSecondsPerGB: median(rounds.map((r) => r.cpuSecondsPerGB ?? Number.NaN)),
    peakRssMb: rounds.some((r) => r.peakRssMb)
      ? { A: Math.max(...rounds.map((r) => r.peakRssMb?.A ?? 0)), B: Math.max(...rounds.map((r) => r.peakRssMb?.B ?? 0)) }
      : undefined,
    seconds: rounds.reduce((s, r) => s + (r.seconds ?? 0), 0),
  };
}

function summaryLine(r: VpnResult): string {
  if (r.status !== 'ok') return `${r.name}: ${r.status} ${r.error ?? ''}`;
  const f = (v: number | undefined, d = 0): string => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(d));
  return (
    `${label(r)}: TCP ${f(r.tcp1?.mbps)} / ${f(r.tcp4?.mbps)} Mbit/s (1/4 streams), ` +
    `UDP ${f((r.udpSmall?.rxPps ?? NaN) / 1000, 1)} / ${f((r.udpLarge?.rxPps ?? NaN) / 1000, 1)} kpps, ` +
    `RTT ${f(r.pingIdle?.avgMs, 3)} / ${f(r.pingLoad?.avgMs, 2)} ms, CPU ${f(r.cpuSecondsPerGB, 2)} s/GB, ` +
    `RSS ${f(r.peakRssMb?.A, 1)} / ${f(r.peakRssMb?.B, 1)} MB (${f(r.seconds, 1)} s)`
  );
}

function targetLines(results: VpnResult[], loads: PeerLoadResult[], reference: string): string[] {
  const get = (n: string): VpnResult | undefined => results.find((r) => r.name === n && r.status === 'ok');
  const t = get('tunvpn');
  const wg = get(reference);
  const fd = get('fastd');
  const out: string[] = [];
  const mark = (ok: boolean | undefined): string => (ok === undefined ? '  n/a ' : ok ? '  met ' : ' MISSED');
  const line = (what: string, v: number | undefined, ok: (x: number) => boolean): void => {
    out.push(`${mark(v === undefined ? undefined : ok(v))} ${what}: ${v?.toFixed(2) ?? '-'}x`);
  };
  line(`TCP 1 stream >= 1.2x ${reference}`, ratio(t?.tcp1?.mbps, wg?.tcp1?.mbps), (x) => x >= 1.2);
  line(`TCP 4 streams >= 1.2x ${reference}`, ratio(t?.tcp4?.mbps, wg?.tcp4?.mbps), (x) => x >= 1.2);
  line(`CPU per GB <= 0.8x ${reference}`, ratio(t?.cpuSecondsPerGB, wg?.cpuSecondsPerGB), (x) => x <= 0.8);
  line(`UDP small payloads rx pps >= 1.5x ${reference}`, ratio(t?.udpSmall?.rxPps, wg?.udpSmall?.rxPps), (x) => x >= 1.5);
  line(`UDP large payloads rx pps >= 1.5x ${reference}`, ratio(t?.udpLarge?.rxPps, wg?.udpLarge?.rxPps), (x) => x >= 1.5);
  line(`idle RTT of a fresh daemon <= 1.0x ${reference}`, ratio(t?.pingFresh?.avgMs, wg?.pingFresh?.avgMs), (x) => x <= 1);
  const warm = ratio(t?.pingIdle?.avgMs, wg?.pingIdle?.avgMs);
  if (warm !== undefined) out.push(`  info idle RTT of a tunnel that has carried traffic: ${warm.toFixed(2)}x ${reference}`);
  const tcpFd = ratio(t?.tcp1?.mbps, fd?.tcp1?.mbps);
  if (tcpFd !== undefined) out.push(`  info TCP 1 stream: ${tcpFd.toFixed(2)}x fastd`);
  const rss = t?.peakRssMb ? Math.max(t.peakRssMb.A, t.peakRssMb.B) : undefined;
  out.push(`${mark(rss === undefined ? undefined : rss <= 80)} RSS <= 80 MB with one peer (peak under load): ${rss?.toFixed(1) ?? '-'} MB`);
  const one = loads.find((l) => l.vpn === 'tunvpn' && l.peers === 1);
  if (one) out.push(`${mark(one.rssMb <= 80)} RSS <= 80 MB with one peer (idle after start): ${one.rssMb.toFixed(1)} MB`);
  const many = loads.find((l) => l.vpn === 'tunvpn' && l.peers > 1);
  if (many) {
    out.push(`${mark(many.startMs < 2000)} ${many.peers} peers load < 2 s: ${(many.startMs / 1000).toFixed(2)} s`);
    out.push(`${mark(many.rssMb < 300)} ${many.peers} peers < 300 MB: ${many.rssMb.toFixed(1)} MB RSS (peak ${many.hwmMb.toFixed(1)})`);
  }
  return out;
}

async function main(): Promise<number> {
  if (process.argv.slice(2).includes('--help')) {
    process.stdout.write(usage());
    return 0;
  }
  const opts = parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: run as root (it creates network namespaces and TUN devices)\n');
    return 1;
  }
  if (opts.parts.has('vpns') && (!hasCommand('iperf3') || !hasCommand('ping'))) {
    process.stderr.write('bench: iperf3 and ping are required (apt-get install iperf3 iputils-ping)\n');
    return 1;
  }
  const started = Date.now();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const crypto = await loadCrypto('auto');
  const wgKeys = async (): Promise<KeyPair> => {
    const priv = crypto.generatePrivateKey();
    return { privateKey: Buffer.from(priv).toString('base64'), publicKey: Buffer.from(crypto.publicKey(priv)).toString('base64') };
  };

  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\nbench: ${sig}, cleaning up\n`);
    void cleanupAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const wgBuilds = opts.wireguardGo.map((path) => ({ path, adapter: wireguardGoAdapter(path) }));
  const reference = wgBuilds[0].adapter.name;
  const adapters: VpnAdapter[] = [];
  for (const name of opts.parts.has('vpns') ? opts.vpns : []) {
    if (name === 'wireguard-go') {
      adapters.push(...wgBuilds.map((b) => b.adapter));
      continue;
    }
    const a = OTHER_VPNS.find((v) => v.name === name);
    if (!a) throw new Error(`unknown VPN "${name}" (known: wireguard-go, ${OTHER_VPNS.map((v) => v.name).join(', ')})`);
    adapters.push(a);
  }
  log(
    `tunvpn bench (${opts.preset}${opts.profile ? ', profile' : ''}; ${[...opts.parts].join(', ')}): ${opts.rounds} round(s), TCP ${opts.tcpSeconds} s, UDP ${opts.udpSeconds} s ` +
      `(${opts.udpSmall} and ${opts.udpLarge} B, offered <= ${opts.maxPps} pps), ${opts.pingCount} idle pings; ` +
      `${opts.peers} peers, routed hub of ${opts.hubPeers}; ${cpus().length} CPUs, Linux ${release()}, node ${process.version}`,
  );

  const results: VpnResult[] = [];
  let profileDir: string | undefined;
  if (opts.profile) {
    profileDir = fromRoot('bench', 'results', `profile-${stamp}`);
    await mkdir(profileDir, { recursive: true });
  }
  // Every VPN gets its own bed and stays up; the rounds then visit them in
  // turn, so slow drift of a shared, noisy machine hits all of them alike.
  const lives: Live[] = [];
  for (const vpn of adapters) {
    if (!vpn.available()) {
      results.push({ name: vpn.name, version: 'not installed', setup: vpn.setup, status: 'skipped', error: 'not installed' });
      log(`${vpn.name}: not installed, skipped`);
      continue;
    }
    const live = await startVpn(vpn, wgKeys, profileDir, opts.nodeArgs);
    lives.push(live);
    log(`${label(live.result)}: ${live.result.status === 'ok' ? 'up' : `failed: ${live.result.error ?? ''}`}`);
  }
  try {
    for (const live of lives) await freshAndWarm(live, opts);
    for (let round = 1; round <= opts.rounds; round++) {
      for (const live of lives) {
        if ((Date.now() - started) / 1000 > opts.budgetS) {
          log(`${live.vpn.name}: round ${round} skipped, time budget of ${opts.budgetS} s used up`);
          continue;
        }
        await measureRound(live, opts);
        const last = live.rounds[live.rounds.length - 1];
        if (live.result.status === 'ok' && last) log(`round ${round}/${opts.rounds} ${summaryLine(last)}`);
      }
    }
  } finally {
    await Promise.all(
      lives.map(async (l) => {
        pending.delete(l.undo);
        await l.undo();
      }),
    );
  }
  for (const live of lives) {
    const r: VpnResult = { ...live.result, ...(live.rounds.length ? combine(live.rounds) : {}), rounds: live.rounds.length };
    if (r.status === 'ok' && live.rounds.length === 0) {
      r.status = 'skipped';
      r.error = `time budget of ${opts.budgetS} s used up`;
    }
    results.push(r);
  }

  let profiles: { side: string; summary: ProfileSummary }[] = [];
  if (profileDir) {
    const t = results[0];
    const files = (await readdir(profileDir)).filter((f) => f.endsWith('.cpuprofile')).sort();
    // node names profiles CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile.
    const sideOf = (f: string): string => {
      if (t.pids && f.includes(`.${t.pids.A}.`)) return 'A (sender: TUN read, encrypt, UDP send; receives the ACKs)';
      if (t.pids && f.includes(`.${t.pids.B}.`)) return 'B (receiver: UDP receive, decrypt, TUN write; sends the ACKs)';
      return `unknown side (${f})`;
    };
    profiles = files.map((f) => ({ side: sideOf(f), summary: summariseProfile(join(profileDir as string, f), fromRoot()) }));
    profiles.sort((x, y) => x.side.localeCompare(y.side));
    log(
      `\nprofile run: TCP 1 stream ${t.tcp1?.mbps.toFixed(0) ?? '-'} Mbit/s under --cpu-prof, CPU ${t.cpuSecondsPerGB?.toFixed(2) ?? '-'} s/GB; profiles in ${profileDir}`,
    );
    for (const p of profiles) log('\n' + formatProfile(`host ${p.side}`, p.summary));
  }

  const loads: PeerLoadResult[] = [];
  if (opts.peers > 0 && opts.parts.has('peers')) {
    // Each check removes its own namespace and daemon in a finally; on a
    // signal the testbed's exit hook kills and deletes whatever is left.
    try {
      const key = await wgKeys();
      loads.push(await tunvpnPeerLoad(1, key));
      loads.push(await tunvpnPeerLoad(opts.peers, key));
      const ref = wgBuilds[0];
      if (ref.adapter.available()) loads.push(await wireguardGoPeerLoad(opts.peers, key, ref.path, ref.adapter.name));
    } catch (err) {
      log(`peer-load check failed: ${(err as Error).message}`);
    }
    for (const l of loads) log(`${l.vpn} with ${l.peers} peer(s): up in ${l.startMs} ms, RSS ${l.rssMb.toFixed(1)} MB (peak ${l.hwmMb.toFixed(1)} MB)`);
  }

  const hub: HubResult[] = [];
  if (opts.hubPeers > 0 && opts.parts.has('hub')) {
    // One peer set for every VPN, so each loads exactly the same keys and prefixes.
    const plan = hubPlan(opts.hubPeers);
    const key = await wgKeys();
    log(
      `\nrouted hub: ${opts.hubPeers} peers, each a /32 tunnel address and a routed /24; reload moves peer ${plan.changed} from ${plan.oldPrefix} to ${plan.newPrefix}`,
    );
    let hubProfileDir: string | undefined;
    if (opts.hubProfile) {
      hubProfileDir = fromRoot('bench', 'results', `hub-profile-${stamp}`);
      await mkdir(hubProfileDir, { recursive: true });
    }
    hub.push(await tunvpnHub(plan, key, pending, opts.nodeArgs, hubProfileDir, fromRoot()));
    log(hubLine(hub[0]));
    const prof = hub[0].profile;
    if (prof) log(`profile of the hub's tunvpn daemon (${prof.file}):\n${prof.phases.map(formatPhase).join('\n')}`);
    for (const b of wgBuilds) {
      if (!b.adapter.available()) {
        log(`${b.adapter.name} (${b.path}): not installed, hub case skipped`);
        continue;
      }
      hub.push(await wireguardGoHub(plan, key, pending, b.path, b.adapter.name));
      log(hubLine(hub[hub.length - 1]));
    }
  }

  if (!opts.profile) {
    if (opts.parts.has('vpns')) log('\n' + renderTable(results, reference));
    const targets = [...(opts.parts.has('vpns') || loads.length > 0 ? targetLines(results, loads, reference) : []), ...hubTargetLines(hub, reference)];
    log('\ntargets (issue 14):\n' + targets.join('\n'));
  }

  const report = {
    date: new Date().toISOString(),
    host: { cpus: cpus().length, cpuModel: cpus()[0]?.model, kernel: release(), node: process.version },
    options: { ...opts, parts: [...opts.parts] },
    reference,
    command: `node dist/bench/vpn-compare.js ${process.argv.slice(2).join(' ')}`.trim(),
    results,
    peerLoad: loads,
    hub,
    profiles: profiles.map((p) => ({ side: p.side, ...p.summary })),
    seconds: (Date.now() - started) / 1000,
  };
  const resultsDir = fromRoot('bench', 'results');
  await mkdir(resultsDir, { recursive: true });
  const jsonPath = join(resultsDir, `${opts.profile ? 'profile-' : ''}${stamp}.json`);
  await writeFile(jsonPath, JSON.stringify(report, null, 2) + '\n');
  log(`\nwrote ${jsonPath}`);
  if (opts.docs) {
    const docsDir = fromRoot('docs', 'bench');
    await mkdir(docsDir, { recursive: true });
    await writeFile(join(docsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
    const rows = results
      .filter((r) => r.status === 'ok' && r.tcp1)
      .map((r) => ({ name: r.name, version: r.version, tcp1Mbps: r.tcp1?.mbps ?? NaN, tcp4Mbps: r.tcp4?.mbps ?? NaN }));
    const subtitle = `${report.date.slice(0, 10)}, ${cpus().length} CPUs, ${opts.tcpSeconds} s per run, network namespaces on one host, MTU 1420`;
    await writeFile(join(docsDir, 'throughput.svg'), renderThroughputSvg(rows, reference, subtitle));
    log(`wrote docs/bench/latest.json and docs/bench/throughput.svg`);
  }
  log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  return results.some((r) => r.status === 'failed') || hub.some((h) => h.status === 'failed') ? 2 : 0;
}

main()
  .catch(async (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  })
  .then(async (code) => {
    await cleanupAll();
    process.exit(code);
  });
