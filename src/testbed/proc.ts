/**
 * What a test or bench reads about a daemon process from /proc: CPU
 * seconds, resident memory and open descriptors.
 */
import { readdir, readFile } from 'node:fs/promises';
import type { DaemonProcess } from './site-to-site.js';

const CLK_TCK = 100;
const PAGE = 4096;

export interface ProcFigures {
  /** CPU seconds (user + system) so far. */
  cpuSeconds: number;
  rssBytes: number;
  openFds: number;
}

export async function procFigures(pid: number): Promise<ProcFigures> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name, which may contain spaces.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  const rssPages = Number(f[21]);
  const fds = await readdir(`/proc/${pid}/fd`);
  return { cpuSeconds: (utime + stime) / CLK_TCK, rssBytes: rssPages * PAGE, openFds: fds.length };
}

/** The daemon's pid (`ip netns exec` execs node, so the spawned pid is it). */
export function pidOf(d: DaemonProcess): number {
  const pid = d.child.pid;
  if (pid === undefined) throw new Error('daemon has no pid');
  return pid;
}
