/**
 * What a test or bench reads about a process from /proc: CPU seconds
 * (utime + stime, all threads), resident memory, open descriptors, and the
 * process tree (to find a daemon behind a wrapper). One reader for the
 * tests (test/hardening) and the benchmarks (bench/), so that both count
 * CPU and memory the same way, whatever language the process is written in.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import type { DaemonProcess } from './site-to-site.js';

const sysconfCache = new Map<string, number>();

/**
 * /proc/PID/stat counts CPU time in clock ticks (USER_HZ) and memory in
 * pages. Both are asked of the system once (getconf is sysconf(3), which
 * has them from the kernel's auxiliary vector) rather than assumed. The
 * fallbacks, if getconf is missing, are Linux's values: USER_HZ is 100 on
 * every architecture Node runs on (the kernel converts its own HZ to it for
 * userspace), and pages are 4 KiB on x86 (arm64 and ppc64 kernels may use
 * 16 or 64 KiB, which getconf reports).
 */
function sysconf(name: 'CLK_TCK' | 'PAGESIZE', fallback: number): number {
  let value = sysconfCache.get(name);
  if (value === undefined) {
    try {
      value = Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim()) || fallback;
    } catch {
      value = fallback;
    }
    sysconfCache.set(name, value);
  }
  return value;
}

/** Fields of /proc/PID/stat from field 3 (state) on: comm (field 2) may contain spaces and parentheses, so count after the last ')'. */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

// Indexes into statFields(): stat(5) fields 4 (ppid), 14 (utime), 15 (stime), 24 (rss).
const F_PPID = 1;
const F_UTIME = 11;
const F_STIME = 12;
const F_RSS = 21;

function statCpuSeconds(f: string[]): number {
  return (Number(f[F_UTIME]) + Number(f[F_STIME])) / sysconf('CLK_TCK', 100);
}

export interface ProcFigures {
  /** CPU seconds (user + system) so far. */
  cpuSeconds: number;
  rssBytes: number;
  openFds: number;
}

/** CPU, resident memory and open descriptors of a live process (rejects when it is gone). */
export async function procFigures(pid: number): Promise<ProcFigures> {
  const f = statFields(await readFile(`/proc/${pid}/stat`, 'utf8'));
  const fds = await readdir(`/proc/${pid}/fd`);
  return { cpuSeconds: statCpuSeconds(f), rssBytes: Number(f[F_RSS]) * sysconf('PAGESIZE', 4096), openFds: fds.length };
}

/** CPU seconds (user + system) the process has used so far; NaN when gone. */
export function cpuSeconds(pid: number): number {
  try {
    return statCpuSeconds(statFields(readFileSync(`/proc/${pid}/stat`, 'utf8')));
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds (user + system) one thread (`tid`) of process `pid` has used so far; NaN when gone. */
export function threadCpuSeconds(pid: number, tid: number): number {
  try {
    return statCpuSeconds(statFields(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')));
  } catch {
    return Number.NaN;
  }
}

/** A field of /proc/PID/status in kB (VmHWM, VmRSS), as MB; NaN when gone. */
export function statusMb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

export function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(statFields(readFileSync(`/proc/${entry}/stat`, 'utf8'))[F_PPID]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/**
 * The daemon's own pid given the pid we spawned: `ip netns exec` execs the
 * command in place, but a wrapper (shell, sudo) would fork, so follow the
 * process tree down to the first process whose name matches.
 */
export function resolveDaemonPid(spawned: number, comm: RegExp): number {
  const queue = [spawned];
  for (let i = 0; i < queue.length && i < 64; i++) {
    const pid = queue[i];
    if (comm.test(commOf(pid))) return pid;
    queue.push(...childrenOf(pid));
  }
  return spawned;
}

/** The daemon's pid (`ip netns exec` execs node, so the spawned pid is it). */
export function pidOf(d: DaemonProcess): number {
  const pid = d.child.pid;
  if (pid === undefined) throw new Error('daemon has no pid');
  return pid;
}
