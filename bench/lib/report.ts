/**
 * The comparison table: one row per figure, one column per VPN, every
 * figure followed by its ratio to the reference VPN measured in the same
 * run (the machine is shared and noisy; only ratios travel).
 */
import type { PingResult, TcpResult, UdpResult } from './measure.js';

export interface VpnResult {
  name: string;
  version: string;
  setup: string;
  status: 'ok' | 'failed' | 'skipped';
  error?: string;
  tcp1?: TcpResult;
  tcp4?: TcpResult;
  udpSmall?: UdpResult;
  udpLarge?: UdpResult;
  /** Idle pings on a tunnel that has carried traffic (each round). */
  pingIdle?: PingResult;
  /** Idle pings right after start, before any other traffic (once per VPN). */
  pingFresh?: PingResult;
  pingLoad?: PingResult;
  /** Both daemons' CPU (user + system) over the TCP runs, per GB received. */
  cpuSecondsPerGB?: number;
  /** VmHWM of the daemon on host A and host B, MB. */
  peakRssMb?: { A: number; B: number };
  /** Daemon pids on host A and host B (to match profiles to sides). */
  pids?: { A: number; B: number };
  seconds?: number;
  /** Measurement rounds combined (medians). */
  rounds?: number;
}

interface Metric {
  label: string;
  unit: string;
  digits: number;
  get: (r: VpnResult) => number | undefined;
}

export const METRICS: readonly Metric[] = [
  { label: 'TCP 1 stream', unit: 'Mbit/s', digits: 0, get: (r) => r.tcp1?.mbps },
  { label: 'TCP 4 streams', unit: 'Mbit/s', digits: 0, get: (r) => r.tcp4?.mbps },
  { label: 'UDP small rx', unit: 'kpps', digits: 1, get: (r) => (r.udpSmall ? r.udpSmall.rxPps / 1000 : undefined) },
  { label: 'UDP small loss', unit: '%', digits: 1, get: (r) => r.udpSmall?.lossPercent },
  { label: 'UDP large rx', unit: 'kpps', digits: 1, get: (r) => (r.udpLarge ? r.udpLarge.rxPps / 1000 : undefined) },
  { label: 'UDP large loss', unit: '%', digits: 1, get: (r) => r.udpLarge?.lossPercent },
  { label: 'RTT idle avg', unit: 'ms', digits: 3, get: (r) => r.pingIdle?.avgMs },
  { label: 'RTT idle, fresh', unit: 'ms', digits: 3, get: (r) => r.pingFresh?.avgMs },
  { label: 'RTT loaded avg', unit: 'ms', digits: 2, get: (r) => r.pingLoad?.avgMs },
  { label: 'CPU per GB', unit: 's/GB', digits: 2, get: (r) => r.cpuSecondsPerGB },
  { label: 'peak RSS (max A,B)', unit: 'MB', digits: 1, get: (r) => (r.peakRssMb ? Math.max(r.peakRssMb.A, r.peakRssMb.B) : undefined) },
];

function fmt(v: number | undefined, digits: number): string {
  return v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);
}

/** "name version", or just the name when it already carries the version (wireguard-go builds). */
export function label(r: Pick<VpnResult, 'name' | 'version'>): string {
  return r.name.endsWith(r.version) ? r.name : `${r.name} ${r.version}`;
}

export function ratio(v: number | undefined, ref: number | undefined): number | undefined {
  if (v === undefined || ref === undefined || !Number.isFinite(v) || !Number.isFinite(ref) || ref === 0) return undefined;
  return v / ref;
}

export function renderTable(results: readonly VpnResult[], reference: string): string {
  const ok = results.filter((r) => r.status === 'ok');
  const ref = ok.find((r) => r.name === reference);
  const head = ['figure', 'unit', ...ok.map((r) => r.name)];
  const rows: string[][] = [head];
  for (const m of METRICS) {
    const refV = ref ? m.get(ref) : undefined;
    rows.push([
      m.label,
      m.unit,
      ...ok.map((r) => {
        const v = m.get(r);
        const q = ratio(v, refV);
        return q === undefined || r === ref ? fmt(v, m.digits) : `${fmt(v, m.digits)} (${q.toFixed(2)}x)`;
      }),
    ]);
  }
  const widths = head.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const out = [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  for (const r of results.filter((x) => x.status !== 'ok')) out.push(`${r.name}: ${r.status}${r.error ? ` (${r.error.split('\n')[0]})` : ''}`);
  out.push(`ratios (Nx) against ${reference} in this run; versions: ${results.map(label).join(', ')}`);
  return out.join('\n');
}
