/**
 * The routed hub (issue 14 item 4): N peers that each bring one routed LAN
 * prefix, as a hub of N sites has them. Every peer has its tunnel address
 * (a /32 inside the interface's own /16, reached by the connected route)
 * and one /24 of its own (10.128.0.0/9 cut in /24s), which the daemon routes
 * through its interface: N routes. No endpoints (the sites dial in), so no
 * handshakes go out.
 *
 * tunvpn, from a config file, in a namespace of its own:
 *  - start: spawn to the "tunvpn up" log line (routes and control socket
 *    are set up before it), and beside it when the N-th route appeared
 *    (`ip monitor route`, started before the daemon) and when `wg show`
 *    through the control socket first listed all N peers (asked after the
 *    up line, so it includes one `wg` process);
 *  - memory once up (VmRSS and VmHWM, 0.5 s later);
 *  - reload: one peer's prefix changes in the file, then SIGHUP; time to
 *    the "configuration reloaded" log line, and to the moment
 *    `ip monitor` has shown both the new route and the old one deleted;
 *  - stop: SIGTERM; route deletions seen before the interface went (the
 *    daemon's own batch; IPv4 sends no notification for the routes a
 *    vanishing device takes with it), and the routes left afterwards.
 *
 * The reference: wireguard-go with the same peers loaded by `wg setconf`,
 * the address, link up, and the same N routes in one `ip -force -batch -`;
 * its reload is `wg syncconf` with the changed file (what `wg-quick strip`
 * piped into syncconf does: the whole set re-read and diffed, as tunvpn's
 * SIGHUP does) plus the two route lines in one `ip -batch`.
 *
 * Everything is bounded in time and the namespace goes in a finally.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Netns, run, sleep, uniqueSuffix } from '../../src/testbed/netns.js';
import { ConfigDir, type DaemonProcess, startDaemon, type KeyPair, type PeerSpec } from '../../src/testbed/site-to-site.js';
import { statusMb } from './proc.js';
import { monotonicUs, profilePhases, type PhaseProfile, type PhaseWindow } from './hub-profile.js';
import { peerAddress, spawnWireguardGo, waitForWgDevice, wgConf } from './peer-load.js';

/** Most peers the address plan holds: /24s in 10.128.0.0/9, one spare for the reload. */
export const HUB_MAX_PEERS = 32_000;

/** Issue 14 item 4's targets. */
export const HUB_TARGETS = { startMs: 2_000, rssMb: 300, reloadMs: 100 } as const;

const HUB_ADDRESS = '10.100.0.1/16';
const SETTLE_MS = 500;

export interface HubResult {
  vpn: string;
  peers: number;
  status: 'ok' | 'failed';
  error?: string;
  /** Spawn to ready: tunvpn's "tunvpn up" log line; wireguard-go: setconf, address, link and route batch done. */
  startMs?: number;
  /** What startMs is measured to. */
  upMeans?: string;
  /** Spawn to the last of the N routes appearing in `ip monitor`. */
  routesVisibleMs?: number;
  /** Spawn to the first of them (the route batch runs from here to routesVisibleMs). */
  routesFirstMs?: number;
  /** Spawn to `wg show IF peers` (through the control socket) first listing all N peers. */
  peersListedMs?: number;
  /** Routes through the interface once up (`ip route show dev IF`): N expected. */
  routesUp?: number;
  rssMb?: number;
  hwmMb?: number;
  reload?: {
    /** HUP (wireguard-go: `wg syncconf` start) to "configuration reloaded" (wireguard-go: syncconf and route batch done). */
    ms: number;
    /** HUP to both the new route added and the old one deleted, as `ip monitor` shows them. */
    routeSwapMs: number;
    /**
     * The daemon's own split, from its log lines: `load` is "SIGHUP:
     * reloading configuration" to the apply's start (reading and checking
     * the file), then the apply's plan, prepare and commit.
     */
    daemonMs?: { load: number; plan: number; prepare: number; commit: number };
    /** VmHWM after the reload. */
    hwmMb: number;
    /** The daemon's main (JavaScript) thread over `ms`: time on a CPU, and time runnable but waiting for one (a shared machine's share of `ms`). */
    thread?: ThreadTimes;
  };
  /**
   * The same kind of change through the control socket: `wg set IF peer K
   * allowed-ips ...` moves the peer on to another prefix (wireguard-go:
   * plus the two route lines in one `ip -batch`, as wg-quick leaves routes
   * to the caller). No file is read.
   */
  set?: {
    /** `wg set` started to `wg` exited (tunvpn answers once the change, routes included, is applied); wireguard-go: and the route batch done. */
    ms: number;
    /** `wg set` started to both route changes seen in `ip monitor`. */
    routeSwapMs: number;
    /** As reload.thread, over `ms`. */
    thread?: ThreadTimes;
  };
  stop?: {
    /** SIGTERM to exit. */
    ms: number;
    /** Route deletions of our prefixes `ip monitor` showed before the interface was deleted. */
    deletedBeforeLinkGone: number;
    /** Routes to any of the hub's prefixes left in the namespace after the exit: 0 expected. */
    routesLeft: number;
    /** ip monitor's complaints, if any (a lost event makes deletedBeforeLinkGone a lower bound). */
    monitorErrors?: string;
  };
  /** With --hub-profile: the daemon's CPU profile cut into start, reload and stop. */
  profile?: { file: string; phases: PhaseProfile[] };
}

/** Milliseconds a thread spent on a CPU and waiting for one (runnable, not running). */
export interface ThreadTimes {
  cpuMs: number;
  waitMs: number;
}

/**
 * /proc/PID/schedstat: the thread group leader's (the JavaScript thread's)
 * nanoseconds on a CPU and waiting on a run queue. Steadier than wall time
 * on a shared machine: at load 6 on 2 cores the same reload took 219 and
 * 453 ms of wall time. Undefined where the kernel has no schedstats.
 */
export function threadTimes(pid: number): ThreadTimes | undefined {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
    return Number.isFinite(run) && Number.isFinite(wait) ? { cpuMs: run / 1e6, waitMs: wait / 1e6 } : undefined;
  } catch {
    return undefined;
  }
}

/** `after` minus `before`, rounded to 0.1 ms. */
export function threadDelta(before: ThreadTimes | undefined, after: ThreadTimes | undefined): ThreadTimes | undefined {
  if (before === undefined || after === undefined) return undefined;
  return { cpuMs: Math.round((after.cpuMs - before.cpuMs) * 10) / 10, waitMs: Math.round((after.waitMs - before.waitMs) * 10) / 10 };
}

function lanPrefix(i: number): string {
  return `10.${128 + (i >> 8)}.${i & 255}.0/24`;
}

/** The hub's peers (random keys), and what the reload changes: peer `changed` moves from `oldPrefix` to `newPrefix`. */
export interface HubPlan {
  peers: PeerSpec[];
  changed: number;
  oldPrefix: string;
  newPrefix: string;
  /** After the reload, `wg set` through the control socket moves the same peer from newPrefix to this. */
  setPrefix: string;
}

export function hubPlan(count: number): HubPlan {
  if (!Number.isInteger(count) || count < 1 || count > HUB_MAX_PEERS) throw new RangeError(`hub peers must be 1 to ${HUB_MAX_PEERS}, not ${count}`);
  const peers: PeerSpec[] = [];
  for (let i = 0; i < count; i++) {
    peers.push({ name: `site${i}`, publicKey: randomBytes(32).toString('base64'), allowedIPs: [`${peerAddress(i)}/32`, lanPrefix(i)] });
  }
  const changed = count >> 1;
  return { peers, changed, oldPrefix: lanPrefix(changed), newPrefix: lanPrefix(count), setPrefix: lanPrefix(count + 1) };
}

function reloadedPeers(plan: HubPlan): PeerSpec[] {
  return plan.peers.map((p, i) => (i === plan.changed ? { ...p, allowedIPs: [p.allowedIPs[0], plan.newPrefix] } : p));
}

/** Every prefix the hub's routes can use (the N prefixes and the reload's new one). */
function hubPrefixes(plan: HubPlan): Set<string> {
  const s = new Set(plan.peers.map((p) => p.allowedIPs[1]));
  s.add(plan.newPrefix);
  s.add(plan.setPrefix);
  return s;
}

/**
 * `ip monitor route link` in the namespace, each line stamped on arrival:
 * route additions and deletions through `ifname`, and the moment the link
 * itself was deleted.
 */
class RouteMonitor {
  private readonly child: ChildProcess;
  readonly added = new Map<string, number>();
  readonly deleted = new Map<string, number>();
  /** Route deletions counted before the link went, since countDeletions(). */
  deletedBeforeLinkGone = 0;
  linkGoneAt: number | undefined;
  lastAddAt = 0;
  firstAddAt = 0;
  /** What ip monitor said on stderr (an overflowed buffer: "No buffer space available"). */
  errors = '';
  private tail = '';

  constructor(
    ns: Netns,
    private readonly ifname: string,
    private readonly prefixes: ReadonlySet<string>,
  ) {
    // A large receive buffer: 10,000 deletions in one batch overflow the default one.
    const child = ns.spawn('ip', ['-rcvbuf', String(64 << 20), 'monitor', 'route', 'link'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.errors += chunk.toString('utf8');
    });
    this.child = child;
    child.stdout?.on('data', (chunk: Buffer) => {
      const now = Date.now();
      const parts = (this.tail + chunk.toString('utf8')).split('\n');
      this.tail = parts.pop() ?? '';
      for (const line of parts) this.onLine(line, now);
    });
  }

  private onLine(line: string, at: number): void {
    const route = /^(Deleted )?(\d+\.\d+\.\d+\.\d+\/\d+) dev (\S+)/.exec(line);
    if (route) {
      if (route[3] !== this.ifname || !this.prefixes.has(route[2])) return;
      if (route[1]) {
        this.deleted.set(route[2], at);
        if (this.linkGoneAt === undefined) this.deletedBeforeLinkGone++;
      } else {
        this.added.set(route[2], at);
        if (this.firstAddAt === 0) this.firstAddAt = at;
        this.lastAddAt = at;
      }
      return;
    }
    const link = /^Deleted \d+: ([^:@\s]+)[:@]/.exec(line);
    if (link && link[1] === this.ifname) this.linkGoneAt ??= at;
  }

  /** When ip monitor had shown both `added` added and `deleted` deleted (NaN if either is missing). */
  swapSeenAt(added: string, deleted: string): number {
    return Math.max(this.added.get(added) ?? Number.NaN, this.deleted.get(deleted) ?? Number.NaN);
  }

  /** From now on count the deletions before the link goes (the stop's). */
  countDeletions(): void {
    this.deletedBeforeLinkGone = 0;
  }

  /** Waits until `pred` holds (checked every 2 ms); false after `timeoutMs`. */
  async until(pred: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) return false;
      await sleep(2);
    }
    return true;
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

/** Routes to any of `prefixes` in any table of the namespace. */
async function routesTo(ns: Netns, prefixes: ReadonlySet<string>): Promise<number> {
  const { stdout } = await run('ip', ['-n', ns.name, '-4', 'route', 'show', 'table', 'all'], { timeoutMs: 20_000 });
  let n = 0;
  for (const line of stdout.split('\n')) if (prefixes.has(line.split(' ', 1)[0])) n++;
  return n;
}

async function routesDev(ns: Netns, ifname: string): Promise<string[]> {
  const { stdout } = await run('ip', ['-n', ns.name, '-4', 'route', 'show', 'dev', ifname], { timeoutMs: 20_000 });
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ', 1)[0]);
}

async function wgPeerCount(ns: Netns, ifname: string): Promise<number> {
  const { stdout } = await ns.exec('wg', ['show', ifname, 'peers'], { timeoutMs: 20_000 });
  return stdout.split('\n').filter(Boolean).length;
}

/**
 * A namespace and a private config directory (it holds a key), and the
 * one undo that stops what runs there and removes both: registered in
 * `pending` so a SIGINT midway (the bench's handler runs every pending
 * undo) leaves nothing behind either.
 */
async function workspace(
  prefix: string,
  pending: Set<() => Promise<void>>,
  stop: () => Promise<unknown> | undefined,
): Promise<{ ns: Netns; dir: ConfigDir; undo: () => Promise<void> }> {
  const ns = await Netns.create(prefix);
  let dir: ConfigDir;
  try {
    dir = await ConfigDir.create();
  } catch (err) {
    await ns.destroy();
    throw err;
  }
  const made = dir;
  let done = false;
  const undo = async (): Promise<void> => {
    if (done) return;
    done = true;
    await stop();
    await ns.destroy();
    await made.destroy();
  };
  pending.add(undo);
  return { ns, dir, undo };
}

/**
 * Waits for ip monitor to have shown all `count` routes and records when
 * the first and the last appeared. If it lost events (its buffer
 * overflowed: it says so) the times stay unset; `ip route show` counts the
 * routes either way.
 */
async function routesSeen(mon: RouteMonitor, count: number, t0: number, result: HubResult): Promise<void> {
  await mon.until(() => mon.added.size >= count || mon.errors !== '', 10_000);
  if (mon.added.size >= count) {
    result.routesVisibleMs = mon.lastAddAt - t0;
    result.routesFirstMs = mon.firstAddAt - t0;
  } else if (mon.errors === '') {
    throw new Error(`only ${mon.added.size} of ${count} routes appeared in ip monitor within 10 s`);
  }
}

/**
 * Once up, for either VPN: when ip monitor showed the routes, when `wg
 * show` listed every peer, the routes through the interface, and the
 * daemon's memory after SETTLE_MS.
 */
async function upFigures(
  ns: Netns,
  ifname: string,
  mon: RouteMonitor,
  prefixes: ReadonlySet<string>,
  count: number,
  t0: number,
  pid: number,
  result: HubResult,
): Promise<void> {
  await routesSeen(mon, count, t0, result);
  const peers = await wgPeerCount(ns, ifname);
  result.peersListedMs = Date.now() - t0;
  check(peers === count, `wg show listed ${peers} peers, not ${count}`);
  result.routesUp = (await routesDev(ns, ifname)).filter((p) => prefixes.has(p)).length;
  check(result.routesUp === count, `${result.routesUp} routes through ${ifname}, not ${count}`);
  await sleep(SETTLE_MS);
  result.rssMb = statusMb(pid, 'VmRSS');
  result.hwmMb = statusMb(pid, 'VmHWM');
}

/** After the daemon exited (`stopMs` after the signal): what ip monitor saw before the link went, and the routes left (recorded, then any left is an error). */
async function stopFigures(ns: Netns, mon: RouteMonitor, prefixes: ReadonlySet<string>, stopMs: number, result: HubResult): Promise<void> {
  await mon.until(() => mon.linkGoneAt !== undefined, 2_000);
  result.stop = {
    ms: stopMs,
    deletedBeforeLinkGone: mon.deletedBeforeLinkGone,
    routesLeft: await routesTo(ns, prefixes),
    ...(mon.errors ? { monitorErrors: mon.errors.trim().slice(0, 500) } : {}),
  };
  check(result.stop.routesLeft === 0, `${result.stop.routesLeft} routes left after stop`);
}

/** One hub run: its workspace, its result, and the daemon and route monitor its undo stops (set by the run as it starts them). */
interface HubRun {
  readonly ns: Netns;
  readonly dir: ConfigDir;
  readonly result: HubResult;
  proc?: DaemonProcess;
  monitor?: RouteMonitor;
}

/**
 * Runs `body` in a workspace of its own; a throw marks the result failed,
 * with the daemon's last lines, and the workspace goes either way.
 */
async function hubRun(prefix: string, vpn: string, peers: number, pending: Set<() => Promise<void>>, body: (run: HubRun) => Promise<void>): Promise<HubResult> {
  const result: HubResult = { vpn, peers, status: 'ok' };
  let run: HubRun | undefined;
  const { ns, dir, undo } = await workspace(prefix, pending, () => {
    run?.monitor?.stop();
    return run?.proc?.stop();
  });
  const r: HubRun = { ns, dir, result };
  run = r;
  try {
    await body(r);
  } catch (err) {
    result.status = 'failed';
    result.error = (err as Error).message + (r.proc ? `\n${r.proc.lines.slice(-8).join('\n')}` : '');
  } finally {
    pending.delete(undo);
    await undo();
  }
  return result;
}

/** Starts the run's route monitor (its undo stops it) before the daemon, and gives it time to subscribe: ip monitor has no ready signal. */
async function watchRoutes(run: HubRun, ifname: string, prefixes: ReadonlySet<string>): Promise<RouteMonitor> {
  const mon = new RouteMonitor(run.ns, ifname, prefixes);
  run.monitor = mon;
  await sleep(200);
  return mon;
}

function numberOf(v: unknown): number {
  return typeof v === 'number' ? v : Number.NaN;
}

/** Time from `t0` to the record's own timestamp (pino's `time`, epoch ms). */
function at(rec: Record<string, unknown>, t0: number): number {
  return numberOf(rec.time) - t0;
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

/**
 * `profileDir`: run the daemon under `node --cpu-prof` writing there, and
 * cut its profile into the phases (start: spawn to "tunvpn up"; reload:
 * HUP to "configuration reloaded"; stop: SIGTERM to exit).
 */
export async function tunvpnHub(
  plan: HubPlan,
  key: KeyPair,
  pending: Set<() => Promise<void>>,
  nodeArgs: readonly string[] = [],
  profileDir?: string,
  root = process.cwd(),
): Promise<HubResult> {
  const count = plan.peers.length;
  return hubRun('bkh', 'tunvpn', count, pending, async (run) => {
    const { ns, dir, result } = run;
    const ifname = `tvh${uniqueSuffix()}`.slice(0, 15);
    const host = { interfaceName: ifname, privateKey: key.privateKey, listenPort: 51820, addresses: [HUB_ADDRESS], peers: plan.peers, logLevel: 'info' };
    const cfg = await dir.writeHost('hub', host);
    const prefixes = hubPrefixes(plan);
    const mon = await watchRoutes(run, ifname, prefixes);
    const windows: PhaseWindow[] = [];
    // Log records carry epoch ms; the profile, the monotonic clock.
    const mono = (epochMs: number): number => monotonicUs() + (epochMs - Date.now()) * 1000;
    const t0 = Date.now();
    const proc = await startDaemon(ns, cfg, [], [...nodeArgs, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])]);
    run.proc = proc;
    const up = await proc.waitForLog(/^tunvpn up/);
    result.startMs = at(up, t0);
    windows.push({ name: 'start (spawn to "tunvpn up")', fromUs: mono(t0), toUs: mono(numberOf(up.time)) });
    result.upMeans = '"tunvpn up" log line (routes and control socket are set up before it)';
    const pid = proc.child.pid ?? -1;
    await upFigures(ns, ifname, mon, prefixes, count, t0, pid, result);

    // Reload: one peer's prefix moves.
    await dir.writeHost('hub', { ...host, peers: reloadedPeers(plan) });
    const from = proc.records().length;
    const h0 = Date.now();
    const thread0 = threadTimes(pid);
    proc.signal('SIGHUP');
    const done = await proc.waitForLog(/^configuration reloaded|^reload (rejected|failed)/, 20_000, from);
    const reloadThread = threadDelta(thread0, threadTimes(pid));
    check(typeof done.msg === 'string' && done.msg.startsWith('configuration reloaded'), `reload: ${String(done.msg)}`);
    check(
      await mon.until(() => mon.added.has(plan.newPrefix) && mon.deleted.has(plan.oldPrefix), 5_000),
      `reload: the route swap ${plan.oldPrefix} -> ${plan.newPrefix} did not show in ip monitor`,
    );
    const swapAt = mon.swapSeenAt(plan.newPrefix, plan.oldPrefix);
    const after = new Set(await routesDev(ns, ifname));
    check(after.has(plan.newPrefix) && !after.has(plan.oldPrefix), `reload: ip route does not show ${plan.newPrefix} instead of ${plan.oldPrefix}`);
    windows.push({ name: 'reload (HUP to "configuration reloaded")', fromUs: mono(h0), toUs: mono(numberOf(done.time)) });
    const ms = done.ms as { plan?: unknown; prepare?: unknown; commit?: unknown } | undefined;
    const hup = proc
      .records()
      .slice(from)
      .find((r) => r.msg === 'SIGHUP: reloading configuration');
    const split = ms ? { plan: numberOf(ms.plan), prepare: numberOf(ms.prepare), commit: numberOf(ms.commit) } : undefined;
    result.reload = {
      ms: at(done, h0),
      routeSwapMs: swapAt - h0,
      daemonMs: split && hup ? { load: numberOf(done.time) - numberOf(hup.time) - split.plan - split.prepare - split.commit, ...split } : undefined,
      hwmMb: statusMb(pid, 'VmHWM'),
      ...(reloadThread ? { thread: reloadThread } : {}),
    };
    const w0 = Date.now();
    const setThread0 = threadTimes(pid);
    result.set = await moveByWgSet(
      ns,
      ifname,
      plan,
      mon,
      async () => undefined,
      () => threadDelta(setThread0, threadTimes(pid)),
    );
    windows.push({ name: 'wg set (wg started to wg exited)', fromUs: mono(w0), toUs: mono(w0 + result.set.ms) });

    // Stop: every route goes, by the daemon's own batch.
    mon.countDeletions();
    const s0 = Date.now();
    const code = await proc.stop(20_000);
    const stopMs = Date.now() - s0;
    windows.push({ name: 'stop (SIGTERM to exit)', fromUs: mono(s0), toUs: mono(s0 + stopMs) });
    check(code === 0, `tunvpn exited with ${String(code)} on SIGTERM:\n${proc.lines.slice(-10).join('\n')}`);
    await stopFigures(ns, mon, prefixes, stopMs, result);
    if (profileDir) {
      const file = (await readdir(profileDir))
        .filter((f) => f.endsWith('.cpuprofile') && f.includes(`.${pid}.`))
        .sort()
        .pop();
      if (file) result.profile = { file: join(profileDir, file), phases: profilePhases(join(profileDir, file), windows, root) };
    }
  });
}

/** `wg set` moves the changed peer from newPrefix to setPrefix; `routes` does what the daemon does not. */
async function moveByWgSet(
  ns: Netns,
  ifname: string,
  plan: HubPlan,
  mon: RouteMonitor,
  routes: () => Promise<void>,
  thread: () => ThreadTimes | undefined = () => undefined,
): Promise<{ ms: number; routeSwapMs: number; thread?: ThreadTimes }> {
  const peer = plan.peers[plan.changed];
  const t0 = Date.now();
  await ns.exec('wg', ['set', ifname, 'peer', peer.publicKey, 'allowed-ips', `${peer.allowedIPs[0]},${plan.setPrefix}`], { timeoutMs: 20_000 });
  await routes();
  const ms = Date.now() - t0;
  const times = thread();
  check(
    await mon.until(() => mon.added.has(plan.setPrefix) && (mon.deleted.get(plan.newPrefix) ?? 0) >= t0, 5_000),
    `wg set: the route swap ${plan.newPrefix} -> ${plan.setPrefix} did not show in ip monitor`,
  );
  const swapAt = mon.swapSeenAt(plan.setPrefix, plan.newPrefix);
  return { ms, routeSwapMs: swapAt - t0, ...(times ? { thread: times } : {}) };
}

/** `ip -force -batch -` in the namespace, the lines on its stdin; throws on any failed line or after `timeoutMs`. */
function ipBatch(ns: Netns, lines: readonly string[], timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['-n', ns.name, '-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      if (stderr.length < 64 * 1024) stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`ip -batch of ${lines.length} lines: ${signal ?? `exit ${String(code)}`}: ${stderr.slice(0, 2000)}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(lines.join('\n') + '\n');
  });
}

/** `path` is the wireguard-go binary, `name` its column (e.g. "wireguard-go 0.0.20250522"). */
export async function wireguardGoHub(plan: HubPlan, key: KeyPair, pending: Set<() => Promise<void>>, path: string, name: string): Promise<HubResult> {
  const count = plan.peers.length;
  return hubRun('bkg', name, count, pending, async (run) => {
    const { ns, dir, result } = run;
    const ifname = `wgh${uniqueSuffix()}`.slice(0, 15);
    const conf = join(dir.path, 'wg.conf');
    await writeFile(conf, wgConf(key.privateKey, plan.peers), { mode: 0o600 });
    const prefixes = hubPrefixes(plan);
    const mon = await watchRoutes(run, ifname, prefixes);
    const t0 = Date.now();
    const proc = spawnWireguardGo(ns, path, ifname);
    run.proc = proc;
    await waitForWgDevice(ns, ifname, proc, name);
    await ns.exec('wg', ['setconf', ifname, conf], { timeoutMs: 60_000 });
    await ns.exec('ip', ['addr', 'add', HUB_ADDRESS, 'dev', ifname]);
    await ns.exec('ip', ['link', 'set', ifname, 'up']);
    await ipBatch(
      ns,
      plan.peers.map((p) => `route add ${p.allowedIPs[1]} dev ${ifname}`),
    );
    result.startMs = Date.now() - t0;
    result.upMeans = '`wg setconf`, address, link up and the route batch done';
    const pid = proc.child.pid ?? -1;
    await upFigures(ns, ifname, mon, prefixes, count, t0, pid, result);

    const conf2 = join(dir.path, 'wg2.conf');
    await writeFile(conf2, wgConf(key.privateKey, reloadedPeers(plan)), { mode: 0o600 });
    const h0 = Date.now();
    await ns.exec('wg', ['syncconf', ifname, conf2], { timeoutMs: 60_000 });
    await ipBatch(ns, [`route add ${plan.newPrefix} dev ${ifname}`, `route del ${plan.oldPrefix} dev ${ifname}`]);
    const reloadMs = Date.now() - h0;
    check(await mon.until(() => mon.added.has(plan.newPrefix) && mon.deleted.has(plan.oldPrefix), 5_000), 'reload: the route swap did not show in ip monitor');
    const swapAt = mon.swapSeenAt(plan.newPrefix, plan.oldPrefix);
    result.reload = { ms: reloadMs, routeSwapMs: swapAt - h0, hwmMb: statusMb(pid, 'VmHWM') };
    result.set = await moveByWgSet(ns, ifname, plan, mon, () =>
      ipBatch(ns, [`route add ${plan.setPrefix} dev ${ifname}`, `route del ${plan.newPrefix} dev ${ifname}`]),
    );

    // wireguard-go leaves routes to whoever added them: they go with the device.
    mon.countDeletions();
    const s0 = Date.now();
    await proc.stop(20_000);
    const stopMs = Date.now() - s0;
    await stopFigures(ns, mon, prefixes, stopMs, result);
  });
}

function threadText(t: ThreadTimes | undefined): string {
  return t === undefined ? '' : `; main thread on a CPU ${t.cpuMs.toFixed(0)} ms, waiting for one ${t.waitMs.toFixed(0)} ms`;
}

/** One line per VPN for the console. */
export function hubLine(r: HubResult): string {
  if (r.status !== 'ok') return `${r.vpn} hub of ${r.peers} routed peers: FAILED ${r.error ?? ''}`;
  const f = (v: number | undefined, d = 0): string => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(d));
  return (
    `${r.vpn} hub of ${r.peers} routed peers: up in ${f(r.startMs)} ms (routes appear ${f(r.routesFirstMs)}-${f(r.routesVisibleMs)} ms, wg show lists all ${f(r.peersListedMs)} ms), ` +
    `RSS ${f(r.rssMb, 1)} MB (peak ${f(r.hwmMb, 1)}); reload ${f(r.reload?.ms)} ms (route swap visible ${f(r.reload?.routeSwapMs)} ms` +
    `${r.reload?.daemonMs ? `; load/plan/prepare/commit ${r.reload.daemonMs.load}/${r.reload.daemonMs.plan}/${r.reload.daemonMs.prepare}/${r.reload.daemonMs.commit} ms` : ''}${threadText(r.reload?.thread)}); ` +
    `wg set ${f(r.set?.ms)} ms (route swap visible ${f(r.set?.routeSwapMs)} ms${threadText(r.set?.thread)}); stop ${f(r.stop?.ms)} ms, ${f(r.stop?.deletedBeforeLinkGone)} routes deleted before the link went, ${f(r.stop?.routesLeft)} left`
  );
}

/** Target lines for tunvpn's hub, with ratios to the reference build's. */
export function hubTargetLines(results: readonly HubResult[], reference: string): string[] {
  const t = results.find((r) => r.vpn === 'tunvpn');
  if (!t) return [];
  const ref = results.find((r) => r.vpn === reference && r.status === 'ok');
  const mark = (ok: boolean | undefined): string => (ok === undefined ? '  n/a ' : ok ? '  met ' : ' MISSED');
  const vs = (a: number | undefined, b: number | undefined): string =>
    a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? '' : ` (${(a / b).toFixed(2)}x ${reference})`;
  const ok = t.status === 'ok';
  const n = t.peers;
  const out: string[] = [];
  if (!ok) out.push(` MISSED routed hub of ${n} peers: failed: ${t.error?.split('\n')[0] ?? ''}`);
  out.push(
    `${mark(ok && t.startMs !== undefined ? t.startMs < HUB_TARGETS.startMs : undefined)} hub of ${n} routed peers up < 2 s: ${t.startMs === undefined ? '-' : (t.startMs / 1000).toFixed(2)} s${vs(t.startMs, ref?.startMs)}`,
  );
  out.push(
    `${mark(ok && t.hwmMb !== undefined ? t.hwmMb < HUB_TARGETS.rssMb : undefined)} hub of ${n} routed peers < 300 MB: peak ${t.hwmMb?.toFixed(1) ?? '-'} MB${vs(t.hwmMb, ref?.hwmMb)}`,
  );
  out.push(
    `${mark(ok && t.reload ? Math.max(t.reload.ms, t.reload.routeSwapMs) < HUB_TARGETS.reloadMs : undefined)} reload changing one prefix < 100 ms: ${t.reload?.ms ?? '-'} ms to "configuration reloaded", route swap visible at ${t.reload?.routeSwapMs ?? '-'} ms${vs(t.reload?.ms, ref?.reload?.ms)}`,
  );
  if (t.set)
    out.push(
      `  info the same change by \`wg set\` through the control socket (no file read): ${t.set.ms} ms, route swap visible at ${t.set.routeSwapMs} ms${vs(t.set.ms, ref?.set?.ms)}`,
    );
  const lost = t.stop?.monitorErrors ? ` (a lower bound: ip monitor lost events: ${t.stop.monitorErrors.split('\n')[0]})` : '';
  out.push(
    `${mark(ok && t.stop ? t.stop.routesLeft === 0 : undefined)} stop removes every route: ${t.stop?.routesLeft ?? '-'} left; ${t.stop?.deletedBeforeLinkGone ?? '-'} of ${n} seen deleted by the daemon before the interface went${lost}`,
  );
  return out;
}
