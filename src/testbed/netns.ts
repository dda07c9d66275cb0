/**
 * Network namespaces as hosts: used by the demo, the benchmarks and every
 * integration test (through test/helpers/netns.ts).
 *
 * Namespaces stand in for hosts (docs/architecture.md, "Test bed"): each
 * has its own interfaces, addresses, routes and sockets, so two daemons on
 * one machine talk over real veth links. Every namespace made
 * here has a unique name (prefix, pid, random suffix) and is registered so it
 * can be removed in every outcome: call `destroy()` in afterAll/finally, and
 * `destroyAllNamespaces()` runs on process exit as a last resort.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

const live = new Set<string>();
const liveChildren = new Set<ChildProcess>();

/** Last resort on exit: kill what we started and delete our namespaces. */
export function destroyAllNamespaces(): void {
  for (const child of liveChildren) child.kill('SIGKILL');
  liveChildren.clear();
  for (const name of live) {
    try {
      execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
  live.clear();
}

process.once('exit', destroyAllNamespaces);

export interface ExecResult {
  stdout: string;
  stderr: string;
}

/** Runs a command on the host (not in a namespace), argument array only. */
export async function run(cmd: string, args: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  const { stdout, stderr } = await execFileP(cmd, [...args], {
    timeout: opts.timeoutMs ?? 30_000,
    maxBuffer: 64 * 1024 * 1024,
    encoding: 'utf8',
  });
  return { stdout, stderr };
}

/** A short unique suffix for names of namespaces, links and interfaces. */
export function uniqueSuffix(): string {
  return `${(process.pid % 10000).toString(36)}${randomBytes(2).toString('hex')}`;
}

/**
 * Kills every process still in a namespace (one started with `ip netns
 * exec` keeps its devices alive) and deletes it. Never throws.
 */
export async function deleteNamespace(name: string): Promise<void> {
  try {
    const { stdout } = await run('ip', ['netns', 'pids', name]);
    for (const pid of stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  } catch {
    /* namespace may already be gone */
  }
  await run('ip', ['netns', 'del', name]).catch(() => undefined);
}

export class Netns {
  readonly name: string;
  private readonly children = new Set<ChildProcess>();

  private constructor(name: string) {
    this.name = name;
  }

  /** Creates a namespace named `${prefix}-${unique}` with loopback up. */
  static async create(prefix: string): Promise<Netns> {
    const name = `${prefix}-${uniqueSuffix()}`;
    await run('ip', ['netns', 'add', name]);
    live.add(name);
    const ns = new Netns(name);
    await ns.exec('ip', ['link', 'set', 'lo', 'up']);
    // No duplicate address detection on test links: a tentative link-local
    // address delays the first IPv6 neighbour discovery by about a second.
    await ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.all.accept_dad=0']);
    return ns;
  }

  /** Runs a command inside the namespace and waits for it. */
  exec(cmd: string, args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  /** Starts a long-running command inside the namespace; killed by destroy(). */
  spawn(cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: 'pipe', ...opts });
    this.children.add(child);
    liveChildren.add(child);
    child.once('exit', () => {
      this.children.delete(child);
      liveChildren.delete(child);
    });
    return child;
  }

  /** Kills what spawn() started and deletes the namespace. Idempotent. */
  async destroy(): Promise<void> {
    for (const child of this.children) {
      child.kill('SIGKILL');
    }
    this.children.clear();
    if (!live.has(this.name)) return;
    live.delete(this.name);
    await deleteNamespace(this.name);
  }
}

export interface LinkOptions {
  /** MTU of both ends of the link (the kernel's veth default is 1500). */
  mtu?: number;
}

/**
 * Connects two namespaces with a veth pair and assigns addresses
 * (CIDR strings, e.g. '10.60.0.1/24'). Returns the interface names.
 */
export async function linkNamespaces(
  a: Netns,
  b: Netns,
  addrA: string | readonly string[],
  addrB: string | readonly string[],
  opts: LinkOptions = {},
): Promise<{ ifA: string; ifB: string }> {
  const suffix = uniqueSuffix();
  const ifA = `va${suffix}`.slice(0, 15);
  const ifB = `vb${suffix}`.slice(0, 15);
  await run('ip', ['link', 'add', ifA, 'netns', a.name, 'type', 'veth', 'peer', 'name', ifB, 'netns', b.name]);
  for (const [ns, ifname, addrs] of [
    [a, ifA, addrA],
    [b, ifB, addrB],
  ] as const) {
    // Both ends: a veth end sends frames up to its own MTU whatever the
    // other end's is, so a one-sided MTU would not model a narrow link.
    if (opts.mtu !== undefined) await ns.exec('ip', ['link', 'set', ifname, 'mtu', String(opts.mtu)]);
    for (const addr of typeof addrs === 'string' ? [addrs] : addrs) {
      const args = addr.includes(':') ? ['-6', 'addr', 'add', addr, 'dev', ifname, 'nodad'] : ['addr', 'add', addr, 'dev', ifname];
      await ns.exec('ip', args);
    }
    await ns.exec('ip', ['link', 'set', ifname, 'up']);
  }
  await waitForLinkUp(a, ifA);
  await waitForLinkUp(b, ifB);
  return { ifA, ifB };
}

/** Waits until a link reports carrier (veth up on both ends takes a moment). */
export async function waitForLinkUp(ns: Netns, ifname: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { stdout } = await ns.exec('ip', ['-o', 'link', 'show', ifname]);
    if (/state UP/.test(stdout)) return;
    if (Date.now() > deadline) throw new Error(`link ${ifname} in ${ns.name} not up: ${stdout.trim()}`);
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Pings `address` from `ns` until one reply arrives or `timeoutMs` passes;
 * returns the successful ping's output. Fails with the last ping's output.
 */
export async function pingUntil(ns: Netns, address: string, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const { stdout } = await ns.exec('ping', ['-n', '-c', '1', '-W', '1', address], { timeoutMs: 5_000 });
      return stdout;
    } catch (err) {
      last = String((err as { stdout?: string }).stdout ?? err);
    }
    if (Date.now() > deadline) throw new Error(`no ping reply from ${address} in ${ns.name} within ${timeoutMs} ms: ${last}`);
    await sleep(100);
  }
}

/**
 * The kernel's fragmentation counters of a namespace (nstat names). A
 * datagram too large for the link is split by its sender (FragCreates counts
 * the fragments made) and put back together by the receiver (ReasmReqds
 * counts the fragments received); on a tunnel underlay both must stay
 * unchanged, because reassembly is slow, lossy and, with one lost fragment,
 * loses the whole datagram.
 */
export interface FragmentCounters {
  IpReasmReqds: number;
  IpFragCreates: number;
  Ip6ReasmReqds: number;
  Ip6FragCreates: number;
}

const FRAGMENT_COUNTERS: readonly (keyof FragmentCounters)[] = ['IpReasmReqds', 'IpFragCreates', 'Ip6ReasmReqds', 'Ip6FragCreates'];

/**
 * Reads the fragmentation counters of `ns` with `nstat`: absolute values
 * (-a) without touching nstat's history file (-s), zeros included (-z), so
 * concurrent callers in other namespaces never see each other's deltas.
 */
export async function fragmentCounters(ns: Netns): Promise<FragmentCounters> {
  const { stdout } = await ns.exec('nstat', ['-a', '-s', '-z', ...FRAGMENT_COUNTERS]);
  const out: FragmentCounters = { IpReasmReqds: NaN, IpFragCreates: NaN, Ip6ReasmReqds: NaN, Ip6FragCreates: NaN };
  for (const line of stdout.split('\n')) {
    const [name, value] = line.trim().split(/\s+/);
    if ((FRAGMENT_COUNTERS as readonly string[]).includes(name)) out[name as keyof FragmentCounters] = Number(value);
  }
  for (const name of FRAGMENT_COUNTERS) {
    if (!Number.isFinite(out[name])) throw new Error(`nstat in ${ns.name} did not report ${name}:\n${stdout}`);
  }
  return out;
}

/** What each counter grew by between two readings. */
export function counterGrowth(before: FragmentCounters, after: FragmentCounters): FragmentCounters {
  return {
    IpReasmReqds: after.IpReasmReqds - before.IpReasmReqds,
    IpFragCreates: after.IpFragCreates - before.IpFragCreates,
    Ip6ReasmReqds: after.Ip6ReasmReqds - before.Ip6ReasmReqds,
    Ip6FragCreates: after.Ip6FragCreates - before.Ip6FragCreates,
  };
}
