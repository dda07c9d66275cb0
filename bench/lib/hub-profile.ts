/**
 * Where the routed hub's time goes (`--hub-profile`): the tunvpn daemon
 * runs under `node --cpu-prof`, and its profile is cut into the hub's
 * phases (start, reload, stop) by time. The bench stamps each phase with
 * the monotonic clock (process.hrtime, CLOCK_MONOTONIC, as V8's profile
 * timestamps are: one clock for every process on the host), so a sample
 * belongs to a phase when its own timestamp falls inside it.
 */
import { addTime, forEachOnStack, keyOf, largest, loadProfile, type TimeByFunction, usIn } from './cpuprofile.js';

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

/** Self and inclusive time per function inside each window. */
export function profilePhases(file: string, windows: readonly PhaseWindow[], root: string, top = 12): PhaseProfile[] {
  const loaded = loadProfile(file);
  const { prof } = loaded;
  const acc = windows.map(() => ({ self: new Map() as TimeByFunction, total: new Map() as TimeByFunction, files: new Map<string, number>(), busy: 0, gc: 0 }));
  let t = prof.startTime;
  for (let i = 0; i < prof.samples.length; i++) {
    t += prof.timeDeltas[i] ?? 0;
    // A sample stands for the interval up to the next one.
    const dt = prof.timeDeltas[i + 1] ?? 0;
    const w = windows.findIndex((x) => t >= x.fromUs && t < x.toUs);
    if (w < 0) continue;
    const node = loaded.byId.get(prof.samples[i]);
    if (!node) continue;
    const k = keyOf(node.callFrame, root);
    if (k.name === '(idle)') continue;
    const a = acc[w];
    a.busy += dt;
    if (k.name === '(garbage collector)') a.gc += dt;
    addTime(a.self, k, dt);
    const file = k.where ? (k.where.startsWith('node:') ? 'node:' : k.where.replace(/:\d+$/, '')) : k.name;
    a.files.set(file, (a.files.get(file) ?? 0) + dt);
    forEachOnStack(loaded, node, root, (kk) => {
      if (kk.name !== '(root)') addTime(a.total, kk, dt);
    });
  }
  const list = (m: TimeByFunction, a: (typeof acc)[number]): PhaseEntry[] =>
    largest(m, top).map((e) => ({
      name: e.name,
      where: e.where,
      selfMs: usIn(a.self, e) / 1000,
      totalMs: usIn(a.total, e) / 1000,
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
