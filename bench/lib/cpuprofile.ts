/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time and total
 * (inclusive) time per function, aggregated by name and location, so the
 * report can say what dominates without a GUI.
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
  endTime: number;
}

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

function keyOf(f: CallFrame, root: string): { key: string; name: string; where: string } {
  const name = f.functionName || '(anonymous)';
  let where = f.url.replace(/^file:\/\//, '');
  if (where.startsWith('/')) where = relative(root, where);
  where = where ? `${where}:${f.lineNumber + 1}` : '';
  return { key: `${name}@${where}`, name, where };
}

export function summariseProfile(file: string, root: string, top = 15): ProfileSummary {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of prof.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map<string, { name: string; where: string; us: number }>();
  const total = new Map<string, { name: string; where: string; us: number }>();
  let sampled = 0;
  let idle = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i + 1] ?? 0;
    const node = byId.get(prof.samples[i]);
    if (!node) continue;
    sampled += dt;
    const k = keyOf(node.callFrame, root);
    if (k.name === '(idle)') idle += dt;
    const s = self.get(k.key) ?? { name: k.name, where: k.where, us: 0 };
    s.us += dt;
    self.set(k.key, s);
    // Inclusive: each distinct function on the stack once.
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id);
      if (!n) break;
      const kk = keyOf(n.callFrame, root);
      if (seen.has(kk.key)) continue;
      seen.add(kk.key);
      const t = total.get(kk.key) ?? { name: kk.name, where: kk.where, us: 0 };
      t.us += dt;
      total.set(kk.key, t);
    }
  }
  const busy = sampled - idle;
  const entries = (m: Map<string, { name: string; where: string; us: number }>, skip: Set<string>): ProfileEntry[] =>
    [...m.values()]
      .filter((e) => !skip.has(e.name))
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((e) => ({
        name: e.name,
        where: e.where,
        selfMs: (self.get(`${e.name}@${e.where}`)?.us ?? 0) / 1000,
        selfPercent: busy > 0 ? (100 * (self.get(`${e.name}@${e.where}`)?.us ?? 0)) / busy : 0,
        totalMs: (total.get(`${e.name}@${e.where}`)?.us ?? 0) / 1000,
        totalPercent: busy > 0 ? (100 * (total.get(`${e.name}@${e.where}`)?.us ?? 0)) / busy : 0,
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
