/**
 * Where the routed hub's time goes (`--hub-profile`): the tunvpn daemon
 * runs under `node --cpu-prof`, and its profile is cut into the hub's
 * phases (start, reload, stop) by time. The bench stamps each phase with
 * the monotonic clock (process.hrtime, CLOCK_MONOTONIC, as V8's profile
 * timestamps are: one clock for every process on the host), so a sample
 * belongs to a phase when its own timestamp falls inside it.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
}

/** Now on the monotonic clock, in microseconds (what V8 stamps samples with). */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export interface PhaseWindow {
  name: string;
  fromUs: number;
  toUs: number;
}

export interface PhaseEntry {
  name: string;
  where: string;
  selfMs: number;
  totalMs: number;
}

export interface PhaseProfile {
  phase: string;
  wallMs: number;
  /** Main-thread samples that were not idle. */
  busyMs: number;
  /** Of busy: garbage collection. */
  gcMs: number;
  bySelf: PhaseEntry[];
  byTotal: PhaseEntry[];
  /** Self time per source file (node's own internals as "node:", native and V8 entries by name), largest first. */
  byFile: { file: string; selfMs: number }[];
}

function keyOf(f: CallFrame, root: string): { key: string; name: string; where: string } {
  const name = f.functionName || '(anonymous)';
  let where = f.url.replace(/^file:\/\//, '');
  if (where.startsWith('/')) where = relative(root, where);
  where = where ? `${where}:${f.lineNumber + 1}` : '';
  return { key: `${name}@${where}`, name, where };
}

/** Self and inclusive time per function inside each window. */
export function profilePhases(file: string, windows: readonly PhaseWindow[], root: string, top = 12): PhaseProfile[] {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of prof.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  type Acc = Map<string, { name: string; where: string; us: number }>;
  const acc = windows.map(() => ({ self: new Map() as Acc, total: new Map() as Acc, files: new Map<string, number>(), busy: 0, gc: 0 }));
  let t = prof.startTime;
  for (let i = 0; i < prof.samples.length; i++) {
    t += prof.timeDeltas[i] ?? 0;
    // A sample stands for the interval up to the next one.
    const dt = prof.timeDeltas[i + 1] ?? 0;
    const w = windows.findIndex((x) => t >= x.fromUs && t < x.toUs);
    if (w < 0) continue;
    const node = byId.get(prof.samples[i]);
    if (!node) continue;
    const k = keyOf(node.callFrame, root);
    if (k.name === '(idle)') continue;
    const a = acc[w];
    a.busy += dt;
    if (k.name === '(garbage collector)') a.gc += dt;
    const s = a.self.get(k.key) ?? { name: k.name, where: k.where, us: 0 };
    s.us += dt;
    a.self.set(k.key, s);
    const file = k.where ? (k.where.startsWith('node:') ? 'node:' : k.where.replace(/:\d+$/, '')) : k.name;
    a.files.set(file, (a.files.get(file) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id);
      if (!n) break;
      const kk = keyOf(n.callFrame, root);
      if (seen.has(kk.key) || kk.name === '(root)') continue;
      seen.add(kk.key);
      const e = a.total.get(kk.key) ?? { name: kk.name, where: kk.where, us: 0 };
      e.us += dt;
      a.total.set(kk.key, e);
    }
  }
  const list = (m: Acc, a: (typeof acc)[number]): PhaseEntry[] =>
    [...m.values()]
      .sort((x, y) => y.us - x.us)
      .slice(0, top)
      .map((e) => ({
        name: e.name,
        where: e.where,
        selfMs: (a.self.get(`${e.name}@${e.where}`)?.us ?? 0) / 1000,
        totalMs: (a.total.get(`${e.name}@${e.where}`)?.us ?? 0) / 1000,
      }));
  return windows.map((w, i) => ({
    phase: w.name,
    wallMs: (w.toUs - w.fromUs) / 1000,
    busyMs: acc[i].busy / 1000,
    gcMs: acc[i].gc / 1000,
    bySelf: list(acc[i].self, acc[i]),
    byTotal: list(acc[i].total, acc[i]),
    byFile: [...acc[i].files]
      .sort((x, y) => y[1] - x[1])
      .slice(0, top)
      .map(([file, us]) => ({ file, selfMs: us / 1000 })),
  }));
}

export function formatPhase(p: PhaseProfile): string {
  const lines = [
    `  ${p.phase}: ${p.wallMs.toFixed(0)} ms wall, main thread busy ${p.busyMs.toFixed(0)} ms (GC ${p.gcMs.toFixed(0)} ms)`,
    '    self ms  total ms  function (location)',
  ];
  const rows = new Map<string, PhaseEntry>();
  for (const e of [...p.byTotal, ...p.bySelf]) rows.set(`${e.name}@${e.where}`, e);
  for (const e of [...rows.values()].sort((a, b) => b.totalMs - a.totalMs)) {
    lines.push(`    ${e.selfMs.toFixed(1).padStart(7)}  ${e.totalMs.toFixed(1).padStart(8)}  ${e.name}${e.where ? ` (${e.where})` : ''}`);
  }
  lines.push(`    self time by file: ${p.byFile.map((f) => `${f.file} ${f.selfMs.toFixed(0)}`).join(', ')}`);
  return lines.join('\n');
}
