/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time and total
 * (inclusive) time per function, aggregated by name and location, so the
 * report can say what dominates without a GUI.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

export interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** A profile read from its file, with every node by id and each node's parent (to walk a sample's stack). */
export interface LoadedProfile {
  prof: CpuProfile;
  byId: Map<number, ProfileNode>;
  parent: Map<number, number>;
}

/** A function as the summaries aggregate it: by name and location. */
export interface FrameKey {
  key: string;
  name: string;
  where: string;
}

/** Sampled microseconds per function, by FrameKey.key. */
export type TimeByFunction = Map<string, { name: string; where: string; us: number }>;

export interface ProfileEntry {
  name: string;
  where: string;
  selfMs: number;
  selfPercent: number;
  totalMs: number;
  totalPercent: number;
}

export interface ProfileSummary {
  file: string;
  /** Wall time covered by the profile. */
  durationMs: number;
  /** Sampled time not spent idle (what the main thread actually worked). */
  busyMs: number;
  bySelf: ProfileEntry[];
  byTotal: ProfileEntry[];
}

export function loadProfile(file: string): LoadedProfile {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of prof.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  return { prof, byId, parent };
}

/** The function of a call frame, its location relative to `root`. */
export function keyOf(f: CallFrame, root: string): FrameKey {
  const name = f.functionName || '(anonymous)';
  let where = f.url.replace(/^file:\/\//, '');
  if (where.startsWith('/')) where = relative(root, where);
  where = where ? `${where}:${f.lineNumber + 1}` : '';
  return { key: `${name}@${where}`, name, where };
}

/** Adds `us` to the function's entry in `m`. */
export function addTime(m: TimeByFunction, k: FrameKey, us: number): void {
  const e = m.get(k.key) ?? { name: k.name, where: k.where, us: 0 };
  e.us += us;
  m.set(k.key, e);
}

/** The microseconds `m` has for a function (by name and location); 0 if none. */
export function usIn(m: TimeByFunction, e: { name: string; where: string }): number {
  return m.get(`${e.name}@${e.where}`)?.us ?? 0;
}

/** The `top` functions with the most time in `m`, leaving out the names in `skip`. */
export function largest(m: TimeByFunction, top: number, skip: ReadonlySet<string> = new Set()): { name: string; where: string; us: number }[] {
  return [...m.values()]
    .filter((e) => !skip.has(e.name))
    .sort((a, b) => b.us - a.us)
    .slice(0, top);
}

/** Calls `fn` once for each distinct function on the stack of `node`, from the node up to the root. */
export function forEachOnStack(p: LoadedProfile, node: ProfileNode, root: string, fn: (k: FrameKey) => void): void {
  const seen = new Set<string>();
  for (let id: number | undefined = node.id; id !== undefined; id = p.parent.get(id)) {
    const n = p.byId.get(id);
    if (!n) break;
    const k = keyOf(n.callFrame, root);
    if (seen.has(k.key)) continue;
    seen.add(k.key);
    fn(k);
  }
}

export function summariseProfile(file: string, root: string, top = 15): ProfileSummary {
  const loaded = loadProfile(file);
  const { prof } = loaded;
  const self: TimeByFunction = new Map();
  const total: TimeByFunction = new Map();
  let sampled = 0;
  let idle = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i + 1] ?? 0;
    const node = loaded.byId.get(prof.samples[i]);
    if (!node) continue;
    sampled += dt;
    const k = keyOf(node.callFrame, root);
    if (k.name === '(idle)') idle += dt;
    addTime(self, k, dt);
    // Inclusive: each distinct function on the stack once.
    forEachOnStack(loaded, node, root, (kk) => addTime(total, kk, dt));
  }
  const busy = sampled - idle;
  const entries = (m: TimeByFunction, skip: Set<string>): ProfileEntry[] =>
    largest(m, top, skip).map((e) => ({
      name: e.name,
      where: e.where,
      selfMs: usIn(self, e) / 1000,
      selfPercent: busy > 0 ? (100 * usIn(self, e)) / busy : 0,
      totalMs: usIn(total, e) / 1000,
      totalPercent: busy > 0 ? (100 * usIn(total, e)) / busy : 0,
    }));
  return {
    file,
    durationMs: (prof.endTime - prof.startTime) / 1000,
    busyMs: busy / 1000,
    bySelf: entries(self, new Set(['(idle)'])),
    byTotal: entries(total, new Set(['(idle)', '(root)'])),
  };
}

export function formatProfile(title: string, s: ProfileSummary): string {
  const lines = [
    `${title}: ${s.durationMs.toFixed(0)} ms profiled, main thread busy ${s.busyMs.toFixed(0)} ms (${((100 * s.busyMs) / Math.max(1, s.durationMs)).toFixed(0)}%)`,
    '  self ms   self%  total%  function (location)',
  ];
  for (const e of s.bySelf) {
    lines.push(
      `  ${e.selfMs.toFixed(0).padStart(7)}  ${e.selfPercent.toFixed(1).padStart(5)}%  ${e.totalPercent.toFixed(1).padStart(5)}%  ${e.name}${e.where ? ` (${e.where})` : ''}`,
    );
  }
  return lines.join('\n');
}
