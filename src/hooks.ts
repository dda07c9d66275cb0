/**
 * Up/down hooks: wg-quick's PreUp, PostUp, PreDown and PostDown, as
 * argument vectors (`interface.hooks`). Each hook is one program run
 * without a shell (a vector that wants one names it: ["/bin/sh", "-c",
 * "..."]), with every "%i" in every argument replaced by the interface
 * name, one after another in the configured order.
 *
 * When they run (the daemon calls this module; wg-quick's order):
 *   preUp    before the TUN interface is created
 *   postUp   once the interface, its addresses and routes are up, the
 *            control socket answers and the pipeline moves packets
 *   preDown  at stop, while the interface still exists
 *   postDown at stop, after the interface is gone
 * A failing preUp or postUp hook ends the start (the later hooks do not
 * run); a failing preDown or postDown hook is logged and the next one runs.
 *
 * Why spawn and not execFile: execFile kills a child whose output exceeds
 * maxBuffer, so a chatty hook (`nft list ruleset`) would fail for what it
 * prints. Here output is kept up to a bound and the rest is counted and
 * dropped; the semantics are execFile's (no shell, PATH lookup for a bare
 * name).
 */
import { spawn } from 'node:child_process';
import { TunvpnError } from './errors.js';
import { redactKeyMaterial } from './config/redact.js';
import type { Logger } from './log.js';

import type { HookPhase, HooksConfig } from './config/types.js';

export type { HookPhase, HooksConfig };

export const NO_HOOKS: HooksConfig = { preUp: [], postUp: [], preDown: [], postDown: [] };

/**
 * How long one hook may run before it (its whole process group) is killed:
 * 30 s. A NAT or firewall rule takes milliseconds; the bound is there so
 * that a hook that hangs (waiting for input, a lock, the network) cannot
 * hang the start or the stop forever. systemd's TimeoutStopSec=15s for the
 * unit is shorter: at stop systemd may kill a hook that takes longer.
 */
export const HOOK_TIMEOUT_MS = 30_000;

/** After SIGTERM on timeout, SIGKILL follows this much later. */
const KILL_GRACE_MS = 2_000;

/** Bytes of each of stdout and stderr kept for the debug log; the rest is counted, not kept. */
export const HOOK_OUTPUT_LIMIT = 4096;

/**
 * After the hook exits, its output is read this much longer: a program it
 * left in the background may hold the pipes open forever, and the hook is
 * done when its own process is.
 */
const DRAIN_MS = 200;

/** How a hook ended. */
export interface HookOutcome {
  /** Exit status, when it exited. */
  exitCode: number | null;
  /** The signal that ended it, when one did. */
  signal: NodeJS.Signals | null;
  /** It ran past its timeout and was killed. */
  timedOut: boolean;
  /** It could not be started at all (ENOENT, EACCES...). */
  spawnError?: string;
  stdout: string;
  stderr: string;
  /** Bytes not kept, beyond HOOK_OUTPUT_LIMIT. */
  stdoutDropped: number;
  stderrDropped: number;
  ms: number;
}

export function hookSucceeded(o: HookOutcome): boolean {
  return o.spawnError === undefined && !o.timedOut && o.exitCode === 0;
}

/** "exit status 1", "killed by SIGSEGV", "timed out after 30000 ms (killed)", "not started: spawn /x ENOENT". */
export function describeOutcome(o: HookOutcome, timeoutMs: number): string {
  if (o.spawnError !== undefined) return `could not be started: ${o.spawnError}`;
  if (o.timedOut) return `timed out after ${timeoutMs} ms and was killed`;
  if (o.signal !== null) return `killed by ${o.signal}`;
  return `exit status ${String(o.exitCode)}`;
}

/** A start-up hook (preUp, postUp) failed: the start is abandoned. */
export class HookError extends TunvpnError {
  readonly phase: HookPhase;
  readonly index: number;
  readonly argv: readonly string[];
  readonly outcome: HookOutcome;

  constructor(phase: HookPhase, index: number, argv: readonly string[], outcome: HookOutcome, timeoutMs: number) {
    super('HOOK_FAILED', `${phase} hook interface.hooks.${phase}[${index}] ${JSON.stringify(argv)} failed: ${describeOutcome(outcome, timeoutMs)}`);
    this.phase = phase;
    this.index = index;
    this.argv = argv;
    this.outcome = outcome;
  }
}

/** The vector with every "%i" replaced by the interface name (as wg-quick does: no other escapes). */
export function expandHook(argv: readonly string[], ifname: string): string[] {
  return argv.map((a) => a.split('%i').join(ifname));
}

/** Longest argument shown whole in a log record; in the one-line error, ARG_SHOWN_IN_ERROR. */
const ARG_SHOWN_IN_LOG = 4096;
const ARG_SHOWN_IN_ERROR = 200;

/** Argument vector as it may be logged: key-like runs hidden, long arguments cut (with their length). */
function shown(argv: readonly string[], max = ARG_SHOWN_IN_LOG): string[] {
  return argv.map((a) => {
    const safe = redactKeyMaterial(a);
    return safe.length <= max ? safe : `${safe.slice(0, max)}... (${a.length} characters)`;
  });
}

class Capture {
  private readonly chunks: Buffer[] = [];
  private kept = 0;
  dropped = 0;

  constructor(private readonly limit: number) {}

  add(chunk: Buffer): void {
    const room = this.limit - this.kept;
    if (room <= 0) {
      this.dropped += chunk.length;
      return;
    }
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.chunks.push(part);
    this.kept += part.length;
    this.dropped += chunk.length - part.length;
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}

export interface RunHookOptions {
  timeoutMs?: number;
  outputLimit?: number;
}

/** Runs one already expanded vector to its end; never throws. */
export function runHook(argv: readonly string[], opts: RunHookOptions = {}): Promise<HookOutcome> {
  const timeoutMs = opts.timeoutMs ?? HOOK_TIMEOUT_MS;
  const out = new Capture(opts.outputLimit ?? HOOK_OUTPUT_LIMIT);
  const err = new Capture(opts.outputLimit ?? HOOK_OUTPUT_LIMIT);
  const t0 = performance.now();
  return new Promise<HookOutcome>((resolve) => {
    const [file, ...args] = argv;
    let child;
    try {
      if (file === undefined || file === '') throw new Error('empty argument vector');
      // detached: its own process group, so a timeout kills what it started too.
      child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, shell: false });
    } catch (e) {
      // Bad arguments throw at once (the config loader refuses them first).
      resolve({
        exitCode: null,
        signal: null,
        timedOut: false,
        spawnError: (e as Error).message,
        stdout: '',
        stderr: '',
        stdoutDropped: 0,
        stderrDropped: 0,
        ms: 0,
      });
      return;
    }
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const killGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      killTimer = setTimeout(() => killGroup('SIGKILL'), KILL_GRACE_MS);
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.add(c));
    child.stderr.on('data', (c: Buffer) => err.add(c));
    let settled = false;
    const finish = (exitCode: number | null, signal: NodeJS.Signals | null, spawnError?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      const done = (): void => {
        child.stdout.destroy();
        child.stderr.destroy();
        const o: HookOutcome = {
          exitCode,
          signal,
          timedOut,
          stdout: out.text(),
          stderr: err.text(),
          stdoutDropped: out.dropped,
          stderrDropped: err.dropped,
          ms: Math.round(performance.now() - t0),
        };
        if (spawnError !== undefined) o.spawnError = spawnError;
        resolve(o);
      };
      if (spawnError !== undefined) {
        done();
        return;
      }
      // Let the output already written arrive, but do not wait for a
      // background process that inherited the pipes.
      let closed = 0;
      const drain = setTimeout(done, DRAIN_MS);
      const onClose = (): void => {
        if (++closed === 2) {
          clearTimeout(drain);
          done();
        }
      };
      if (child.stdout.readableEnded) closed++;
      else child.stdout.once('end', onClose);
      if (child.stderr.readableEnded) closed++;
      else child.stderr.once('end', onClose);
      if (closed === 2) {
        clearTimeout(drain);
        done();
      }
    };
    child.once('error', (e: NodeJS.ErrnoException) => finish(null, null, e.message));
    child.once('exit', (code, signal) => finish(code, signal));
  });
}

export interface RunPhaseOptions extends RunHookOptions {
  phase: HookPhase;
  hooks: readonly (readonly string[])[];
  ifname: string;
  log: Logger;
  /**
   * Start-up phases stop at the first failure and throw HookError;
   * teardown phases log it and run the next hook.
   */
  stopOnFailure: boolean;
}

/**
 * Runs a phase's hooks in order. Logs, for each: its command and outcome at
 * info (warn or error when it failed), its output at debug (bounded); key-
 * like text is hidden in all of them. Returns how many failed (teardown).
 */
export async function runHookPhase(opts: RunPhaseOptions): Promise<number> {
  const timeoutMs = opts.timeoutMs ?? HOOK_TIMEOUT_MS;
  let failures = 0;
  for (let i = 0; i < opts.hooks.length; i++) {
    const argv = expandHook(opts.hooks[i], opts.ifname);
    const hook = `interface.hooks.${opts.phase}[${i}]`;
    const o = await runHook(argv, { timeoutMs, outputLimit: opts.outputLimit });
    const ok = hookSucceeded(o);
    const result = describeOutcome(o, timeoutMs);
    const fields = { hook, argv: shown(argv), exitCode: o.exitCode, signal: o.signal ?? undefined, timedOut: o.timedOut || undefined, ms: o.ms };
    if (o.stdout !== '' || o.stderr !== '') {
      opts.log.debug(
        {
          hook,
          stdout: redactKeyMaterial(o.stdout),
          stderr: redactKeyMaterial(o.stderr),
          stdoutDropped: o.stdoutDropped || undefined,
          stderrDropped: o.stderrDropped || undefined,
        },
        `${opts.phase} hook output`,
      );
    }
    if (ok) {
      opts.log.info(fields, `${opts.phase} hook ran: ${result}`);
      continue;
    }
    failures++;
    if (opts.stopOnFailure) {
      opts.log.error(fields, `${opts.phase} hook failed: ${result}`);
      throw new HookError(opts.phase, i, shown(argv, ARG_SHOWN_IN_ERROR), o, timeoutMs);
    }
    opts.log.warn(fields, `${opts.phase} hook failed: ${result}; teardown continues`);
  }
  return failures;
}
