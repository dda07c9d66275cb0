/**
 * Interface configuration through iproute2's `ip`, always via execFile with
 * an argument array (never a shell string), so nothing in an interface name
 * or address can be interpreted by a shell. Arguments are validated before
 * `ip` runs so that a value can never be taken for an option.
 */
import { execFile, spawn } from 'node:child_process';
import { isIP } from 'node:net';
import type { Writable } from 'node:stream';
import { interfaceNameProblem } from '../config/ifname.js';
import { TunvpnError } from '../errors.js';

export class IpCommandError extends TunvpnError {
  /** The full argv that ran, starting with "ip". */
  readonly command: readonly string[];
  /** What `ip` printed on stderr (its own explanation of the failure). */
  readonly stderr: string;
  readonly exitCode: number | undefined;

  constructor(command: readonly string[], stderr: string, exitCode: number | undefined, cause?: unknown) {
    const why = stderr.trim() || (cause instanceof Error ? cause.message : 'failed');
    super('IP_COMMAND_FAILED', `\`${command.join(' ')}\` failed: ${why}`, cause === undefined ? undefined : { cause });
    this.command = command;
    this.stderr = stderr;
    this.exitCode = exitCode;
  }
}

export class IpArgumentError extends TunvpnError {
  constructor(message: string) {
    super('IP_ARGUMENT_INVALID', message);
  }
}

export interface IpOptions {
  /** Run against this named network namespace (`ip -n NAME ...`). */
  netns?: string;
  timeoutMs?: number;
}

/** The one interface-name rule (src/config/ifname.ts): never an option to `ip`, never a control character. */
function checkIfname(ifname: string): void {
  const problem = interfaceNameProblem(ifname);
  if (problem !== undefined) throw new IpArgumentError(`invalid interface name: ${problem}`);
}

/** Returns 4 or 6 for "addr/len" (or a bare address); throws otherwise. */
function cidrFamily(cidr: string): 4 | 6 {
  const slash = cidr.indexOf('/');
  const addr = slash < 0 ? cidr : cidr.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) throw new IpArgumentError(`invalid address ${JSON.stringify(cidr)}`);
  if (slash >= 0) {
    const len = cidr.slice(slash + 1);
    const max = family === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(len) || Number(len) > max) throw new IpArgumentError(`invalid prefix length in ${JSON.stringify(cidr)}`);
  }
  return family === 4 ? 4 : 6;
}

function checkNetns(opts: IpOptions): void {
  if (opts.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(opts.netns)) {
    throw new IpArgumentError(`invalid namespace name ${JSON.stringify(opts.netns)}`);
  }
}

/** Runs `ip ARGS...`; resolves with stdout, rejects with IpCommandError. */
export function runIp(args: readonly string[], opts: IpOptions = {}): Promise<string> {
  const argv = opts.netns === undefined ? [...args] : ['-n', opts.netns, ...args];
  try {
    checkNetns(opts);
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    execFile('ip', argv, { timeout: opts.timeoutMs ?? 10_000, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as { code?: unknown }).code;
        reject(new IpCommandError(['ip', ...argv], stderr, typeof code === 'number' ? code : undefined, err));
        return;
      }
      resolve(stdout);
    });
  });
}

export async function setMtu(ifname: string, mtu: number, opts?: IpOptions): Promise<void> {
  checkIfname(ifname);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new IpArgumentError(`invalid MTU ${mtu}`);
  await runIp(['link', 'set', 'dev', ifname, 'mtu', String(mtu)], opts);
}

export async function setUp(ifname: string, opts?: IpOptions): Promise<void> {
  checkIfname(ifname);
  await runIp(['link', 'set', 'dev', ifname, 'up'], opts);
}

export async function setDown(ifname: string, opts?: IpOptions): Promise<void> {
  checkIfname(ifname);
  await runIp(['link', 'set', 'dev', ifname, 'down'], opts);
}

/**
 * Adds an address ("10.0.0.1/24", "fd00::1/64"). IPv6 addresses skip
 * duplicate address detection (nodad): a point-to-point TUN has no
 * neighbours, and DAD would leave the address tentative (unusable) for a
 * second or more after the interface comes up.
 */
export async function addAddress(ifname: string, cidr: string, opts?: IpOptions): Promise<void> {
  checkIfname(ifname);
  const family = cidrFamily(cidr);
  await runIp(family === 6 ? ['-6', 'addr', 'add', cidr, 'dev', ifname, 'nodad'] : ['-4', 'addr', 'add', cidr, 'dev', ifname], opts);
}

export async function delAddress(ifname: string, cidr: string, opts?: IpOptions): Promise<void> {
  checkIfname(ifname);
  const family = cidrFamily(cidr);
  await runIp([`-${family}`, 'addr', 'del', cidr, 'dev', ifname], opts);
}

export async function addRoute(ifname: string, cidr: string, opts?: IpOptions): Promise<void> {
  checkIfname(ifname);
  const family = cidrFamily(cidr);
  await runIp([`-${family}`, 'route', 'add', cidr, 'dev', ifname], opts);
}

export async function delRoute(ifname: string, cidr: string, opts?: IpOptions): Promise<void> {
  checkIfname(ifname);
  const family = cidrFamily(cidr);
  await runIp([`-${family}`, 'route', 'del', cidr, 'dev', ifname], opts);
}

interface IpJsonRoute {
  dst?: unknown;
}

function normalizeDst(dst: string, family: 4 | 6): string {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  return dst.includes('/') ? dst : `${dst}/${family === 4 ? 32 : 128}`;
}

/**
 * Destinations (as CIDRs) of the main-table routes through `ifname`, IPv4
 * then IPv6. Kernel-made IPv6 link-local and multicast routes are left out.
 */
export async function listRoutes(ifname: string, opts?: IpOptions): Promise<string[]> {
  checkIfname(ifname);
  const out: string[] = [];
  for (const family of [4, 6] as const) {
    const text = await runIp(['-j', `-${family}`, 'route', 'show', 'dev', ifname], opts);
    const parsed: unknown = text.trim() ? JSON.parse(text) : [];
    if (!Array.isArray(parsed)) continue;
    for (const r of parsed as IpJsonRoute[]) {
      if (typeof r.dst !== 'string') continue;
      const dst = normalizeDst(r.dst, family);
      if (family === 6 && (dst.startsWith('fe80:') || dst.startsWith('ff00:'))) continue;
      out.push(dst);
    }
  }
  return out;
}

/** What `ip -force -batch -` did with each line. */
export interface IpBatchResult {
  /** 0-based line index to `ip`'s explanation ("RTNETLINK answers: File exists"). */
  failed: Map<number, string>;
  /**
   * Set when `ip` stopped before the end (an argument it could not parse
   * exits the batch even with -force): which lines ran is then unknown.
   */
  aborted?: string;
}

/**
 * Runs many `ip` commands in one process: `ip -force -batch -`, one command
 * per line on stdin. With -force, ip goes on after a failed line, printing
 * its error and then `Command failed -:N` (N 1-based) on stderr; the exit
 * status is non-zero if any line failed. One process for 20,000 routes
 * instead of 20,000 (about 0.6 s of kernel work instead of minutes).
 * Lines must have been built from validated values (see routeLine).
 */
export async function runIpBatch(lines: readonly string[], opts: IpOptions = {}, y: BatchSlicer = NO_BATCH_SLICES): Promise<IpBatchResult> {
  if (lines.length === 0) return { failed: new Map() };
  checkNetns(opts);
  for (const line of lines) {
    if (line.includes('\n')) throw new IpArgumentError('a batch line holds a newline');
    if (y.due()) await y.pause();
  }
  const argv = [...(opts.netns === undefined ? [] : ['-n', opts.netns]), '-force', '-batch', '-'];
  const timeoutMs = opts.timeoutMs ?? 10_000 + lines.length;
  const child = spawn('ip', argv, { stdio: ['pipe', 'ignore', 'pipe'] });
  const done = new Promise<IpBatchResult>((resolve, reject) => {
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (stderr.length < 16 * 1024 * 1024) stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new IpCommandError(['ip', ...argv], stderr, undefined, err));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (signal !== null) {
        reject(new IpCommandError(['ip', ...argv], stderr, undefined, new Error(`killed by ${signal}`)));
        return;
      }
      resolve(parseBatchErrors(stderr, code ?? 0));
    });
  });
  // Handled below; without this a failure while the writer waits would count as unhandled.
  done.catch(() => undefined);
  // EPIPE if ip exits early (an aborted batch): the close handler reports it.
  child.stdin.on('error', () => undefined);
  await writeInSlices(child.stdin, lines, y);
  return done;
}

/** Something that lets long loops give the event loop a turn (a Yielder). */
export interface BatchSlicer {
  due(): boolean;
  pause(): Promise<void>;
}

const NO_BATCH_SLICES: BatchSlicer = { due: () => false, pause: () => Promise.resolve() };

/** Bytes of batch text per write: about what a pipe holds. */
const BATCH_CHUNK = 64 * 1024;

/**
 * Writes the batch a pipe's worth at a time, waiting for the pipe to drain
 * and yielding between chunks: 50,000 lines joined and written at once
 * (1.5 MB of text, then of UTF-8) held the packet thread for tens of
 * milliseconds, and the text then waited in memory while ip worked.
 */
async function writeInSlices(stdin: Writable, lines: readonly string[], y: BatchSlicer): Promise<void> {
  let i = 0;
  while (i < lines.length && !stdin.destroyed) {
    let size = 0;
    const start = i;
    while (i < lines.length && size < BATCH_CHUNK) size += lines[i++].length + 1;
    const ok = stdin.write(lines.slice(start, i).join('\n') + '\n');
    if (!ok)
      await new Promise<void>((resolve) => {
        const go = (): void => {
          stdin.off('drain', go);
          stdin.off('close', go);
          resolve();
        };
        stdin.on('drain', go);
        stdin.on('close', go);
      });
    if (y.due()) await y.pause();
  }
  stdin.end();
}

/** Splits ip's stderr into per-line errors. Exported for tests. */
export function parseBatchErrors(stderr: string, exitCode: number): IpBatchResult {
  const failed = new Map<number, string>();
  let pending: string[] = [];
  for (const raw of stderr.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const m = /^Command failed -:(\d+)$/.exec(line);
    if (m) {
      failed.set(Number(m[1]) - 1, pending.join('; ') || 'failed');
      pending = [];
    } else {
      pending.push(line);
    }
  }
  const result: IpBatchResult = { failed };
  // Text after the last "Command failed", or a failure exit with nothing
  // attributed to a line: ip gave up part-way.
  if (pending.length > 0 || (exitCode !== 0 && failed.size === 0)) result.aborted = pending.join('; ') || `ip exited ${exitCode}`;
  return result;
}

/**
 * One batch line adding or deleting a route through `ifname`. No -4/-6: ip
 * infers the family from the prefix. An IPv6 delete names the metric our
 * add got (1024, the kernel's default for user routes), so it never takes
 * the kernel's own route for the same prefix (fe80::/64 has metric 256).
 */
export function routeLine(op: 'add' | 'del', ifname: string, cidr: string, table: number = MAIN_TABLE): string {
  checkIfname(ifname);
  const family = cidrFamily(cidr);
  if (!cidr.includes('/')) throw new IpArgumentError(`route ${JSON.stringify(cidr)} needs a prefix length`);
  checkTable(table);
  const where = table === MAIN_TABLE ? '' : ` table ${table}`;
  return op === 'del' && family === 6 ? `route del ${cidr} dev ${ifname}${where} metric 1024` : `route ${op} ${cidr} dev ${ifname}${where}`;
}

/** The kernel's main routing table (RT_TABLE_MAIN). */
export const MAIN_TABLE = 254;

function checkTable(table: number): void {
  if (!Number.isInteger(table) || table < 1 || table > 0xffffffff) throw new IpArgumentError(`invalid routing table ${table}`);
}

function checkMark(mark: number): void {
  if (!Number.isInteger(mark) || mark < 1 || mark > 0xffffffff) throw new IpArgumentError(`invalid fwmark ${mark}`);
}

/**
 * A policy rule of a full tunnel (wg-quick's add_default, per family):
 *   not-fwmark: `not fwmark M table T`: everything except the tunnel's own
 *     (marked) datagrams looks up T, whose only route is the default route
 *     through the tunnel;
 *   suppress: `table main suppress_prefixlength 0`: before that, the main
 *     table, ignoring its default routes (prefix length 0), so more
 *     specific routes (the LAN, the underlay's own subnet) still win.
 * Always with an explicit priority: that, the selector and the table
 * identify a rule exactly (for deleting ours and nobody else's).
 */
export interface PolicyRule {
  family: 4 | 6;
  priority: number;
  kind: 'not-fwmark' | 'suppress';
  /** not-fwmark: the mark and the table; suppress: the table is main. */
  mark: number;
  table: number;
}

function ruleArgs(op: 'add' | 'del', r: PolicyRule): string[] {
  if (r.family !== 4 && r.family !== 6) throw new IpArgumentError(`invalid rule family ${String(r.family)}`);
  if (!Number.isInteger(r.priority) || r.priority < 1 || r.priority > 32765) throw new IpArgumentError(`invalid rule priority ${r.priority}`);
  const head = [`-${r.family}`, 'rule', op];
  if (r.kind === 'suppress') return [...head, 'table', 'main', 'suppress_prefixlength', '0', 'priority', String(r.priority)];
  checkMark(r.mark);
  checkTable(r.table);
  return [...head, 'not', 'fwmark', String(r.mark), 'table', String(r.table), 'priority', String(r.priority)];
}

export async function addRule(r: PolicyRule, opts?: IpOptions): Promise<void> {
  await runIp(ruleArgs('add', r), opts);
}

export async function delRule(r: PolicyRule, opts?: IpOptions): Promise<void> {
  await runIp(ruleArgs('del', r), opts);
}

interface IpJsonRule {
  priority?: unknown;
  not?: unknown;
  fwmark?: unknown;
  fwmask?: unknown;
  table?: unknown;
  suppress_prefixlen?: unknown;
  src?: unknown;
  srclen?: unknown;
  dst?: unknown;
  iif?: unknown;
  oif?: unknown;
}

function tableNumber(t: unknown): number | undefined {
  if (t === 'main') return MAIN_TABLE;
  if (typeof t === 'number') return t;
  if (typeof t === 'string' && /^\d+$/.test(t)) return Number(t);
  return undefined;
}

/**
 * Whether `ip rule show` lists exactly rule `r` (same priority, same
 * selector and nothing more, same table): only such a rule may be taken
 * for one of ours.
 */
export async function ruleExists(r: PolicyRule, opts?: IpOptions): Promise<boolean> {
  const text = await runIp(['-j', `-${r.family}`, 'rule', 'show'], opts);
  const parsed: unknown = text.trim() ? JSON.parse(text) : [];
  if (!Array.isArray(parsed)) return false;
  return (parsed as IpJsonRule[]).some((k) => {
    if (k.priority !== r.priority || tableNumber(k.table) !== (r.kind === 'suppress' ? MAIN_TABLE : r.table)) return false;
    if ((k.src !== undefined && k.src !== 'all') || k.dst !== undefined || k.iif !== undefined || k.oif !== undefined) return false;
    if (r.kind === 'suppress') return k.suppress_prefixlen === 0 && k.fwmark === undefined && k.not === undefined;
    const mark = typeof k.fwmark === 'string' ? Number(k.fwmark) : k.fwmark;
    return 'not' in k && mark === r.mark && (k.fwmask === undefined || Number(k.fwmask) === 0xffffffff) && k.suppress_prefixlen === undefined;
  });
}

/** A main-table route as `ip -j route show` reports it. */
export interface KernelRoute {
  /** As ip prints it ("default" and bare addresses made into prefixes). */
  dst: string;
  family: 4 | 6;
  /** Absent for routes without one (blackhole, unreachable, multipath). */
  dev?: string;
  /** "unicast" unless ip says otherwise. */
  type: string;
  /** The table it was listed from (absent or 254: main). */
  table?: number;
}

interface IpJsonMainRoute {
  dst?: unknown;
  dev?: unknown;
  type?: unknown;
}

/** Every route of the main table, IPv4 then IPv6 (one `ip -j route show` run per family asked for). */
export async function listMainRoutes(opts?: IpOptions, families: readonly (4 | 6)[] = [4, 6]): Promise<KernelRoute[]> {
  return listTableRoutes(MAIN_TABLE, opts, families);
}

/** Every route of one table; a table that does not exist yet has none. */
export async function listTableRoutes(table: number, opts?: IpOptions, families: readonly (4 | 6)[] = [4, 6]): Promise<KernelRoute[]> {
  checkTable(table);
  const out: KernelRoute[] = [];
  for (const family of families) {
    let text: string;
    try {
      text = await runIp(['-j', `-${family}`, 'route', 'show', 'table', table === MAIN_TABLE ? 'main' : String(table)], opts);
    } catch (err) {
      // ip exits 2 with "FIB table does not exist" for a table no route was ever put in.
      if (err instanceof IpCommandError && /table does not exist/i.test(err.stderr)) continue;
      throw err;
    }
    const parsed: unknown = text.trim() ? JSON.parse(text) : [];
    if (!Array.isArray(parsed)) continue;
    for (const r of parsed as IpJsonMainRoute[]) {
      if (typeof r.dst !== 'string') continue;
      const route: KernelRoute = { dst: normalizeDst(r.dst, family), family, type: typeof r.type === 'string' ? r.type : 'unicast', table };
      if (typeof r.dev === 'string') route.dev = r.dev;
      out.push(route);
    }
  }
  return out;
}
