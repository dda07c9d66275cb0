/**
 * Runs the compiled `tunvpn` CLI as a child process with a time limit and
 * a memory cap, and reports what it did: exit status, output, wall time and
 * peak RSS (through rusage-preload.ts). Used by the config fuzzer and the
 * config-load benchmark.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CliRun {
  /** Exit status, or null when killed (timeout) or ended by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** stdout or stderr went past `maxOutputBytes` (the rest was dropped). */
  outputCapped: boolean;
  wallMs: number;
  /** Peak resident set size in MiB; NaN when the child died before reporting. */
  maxRssMb: number;
  cpuMs: number;
}

export interface CliRunOptions {
  timeoutMs: number;
  /** V8 heap cap (--max-old-space-size), MiB: a runaway case crashes instead of eating the machine. */
  heapMb: number;
  maxOutputBytes?: number;
  env?: NodeJS.ProcessEnv;
  /** Another build of the CLI (e.g. main's, for before/after figures); default this checkout's dist/. */
  bin?: string;
}

/** The repository root, from either bench/lib (vitest runs the sources) or dist/bench/lib. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = dirname(dir);
  }
  throw new Error('repository root not found');
}

/** The compiled CLI and the compiled preload; both built by `tsc -p tsconfig.json`. */
export function compiledPaths(root = repoRoot()): { bin: string; preload: string } {
  return { bin: join(root, 'dist', 'src', 'cli', 'main.js'), preload: join(root, 'dist', 'bench', 'lib', 'rusage-preload.js') };
}

export function runCli(args: readonly string[], opts: CliRunOptions): Promise<CliRun> {
  const paths = compiledPaths();
  const bin = opts.bin ?? paths.bin;
  const preload = paths.preload;
  for (const f of [bin, preload]) if (!existsSync(f)) throw new Error(`${f} is missing: run npx tsc -p tsconfig.json first`);
  const max = opts.maxOutputBytes ?? 4 << 20;
  const start = process.hrtime.bigint();
  const child = spawn(process.execPath, [`--max-old-space-size=${opts.heapMb}`, '--import', preload, bin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    env: { ...(opts.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin' }), TUNVPN_RUSAGE_FD: '3' },
  });
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], sizes: { stdout: 0, stderr: 0 }, capped: false };
  for (const name of ['stdout', 'stderr'] as const) {
    child[name]?.on('data', (chunk: Buffer) => {
      if (out.sizes[name] + chunk.length > max) {
        out.capped = true;
        return;
      }
      out.sizes[name] += chunk.length;
      out[name].push(chunk);
    });
  }
  let usage = '';
  const fd3 = child.stdio[3];
  if (fd3 && 'on' in fd3) (fd3 as NodeJS.ReadableStream).on('data', (c: Buffer) => (usage += c.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, opts.timeoutMs);
  return new Promise((resolve, reject) => {
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
      let maxRssMb = Number.NaN;
      let cpuMs = Number.NaN;
      try {
        const u = JSON.parse(usage.trim().split('\n').pop() ?? '') as { maxRssKiB: number; userUs: number; systemUs: number };
        maxRssMb = u.maxRssKiB / 1024;
        cpuMs = (u.userUs + u.systemUs) / 1000;
      } catch {
        /* killed or crashed before its exit handler ran */
      }
      resolve({
        code,
        signal,
        timedOut,
        stdout: Buffer.concat(out.stdout).toString('utf8'),
        stderr: Buffer.concat(out.stderr).toString('utf8'),
        outputCapped: out.capped,
        wallMs,
        maxRssMb,
        cpuMs,
      });
    });
  });
}
