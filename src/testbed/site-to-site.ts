/**
 * The two-site test bed of design.md section 4, in network namespaces:
 *
 *  [la] 10.61.1.10 ─veth─ [ta] ══ tunnel over veth underlay ══ [tb] ─veth─ [lb] 10.61.2.10
 *        LAN A            host A   10.60.0.1 ⇄ 10.60.0.2        host B       LAN B
 *
 * IPv6 runs beside IPv4 everywhere (fd61:1::/64, fd60::/64, fd62::/64,
 * fd61:2::/64). The demo, the benchmarks and the integration tests use it;
 * each creates its own uniquely named namespaces and removes them in every
 * outcome.
 */
import type { ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { Netns, linkNamespaces, sleep } from './netns.js';

export const ADDR = {
  la: { v4: '10.61.1.10', v6: 'fd61:1::10' },
  taLan: { v4: '10.61.1.1', v6: 'fd61:1::1' },
  taUnder: { v4: '10.60.0.1', v6: 'fd60::1' },
  tbUnder: { v4: '10.60.0.2', v6: 'fd60::2' },
  tbLan: { v4: '10.61.2.1', v6: 'fd61:2::1' },
  lb: { v4: '10.61.2.10', v6: 'fd61:2::10' },
  taTun: { v4: '10.62.0.1', v6: 'fd62::1' },
  tbTun: { v4: '10.62.0.2', v6: 'fd62::2' },
  lanA: { v4: '10.61.1.0/24', v6: 'fd61:1::/64' },
  lanB: { v4: '10.61.2.0/24', v6: 'fd61:2::/64' },
} as const;

/** The project root (holds package.json), from src/ or dist/src/. */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

/** The compiled CLI entry point (npm ci / npm run build makes it). */
export function cliPath(): string {
  return join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
}

async function sysctl(ns: Netns, setting: string): Promise<void> {
  await ns.exec('sysctl', ['-q', '-w', setting]);
}

export class SiteToSite {
  readonly la: Netns;
  readonly ta: Netns;
  readonly tb: Netns;
  readonly lb: Netns;
  /** Interface names of the underlay veth on host A and host B. */
  readonly underA: string;
  readonly underB: string;

  private constructor(la: Netns, ta: Netns, tb: Netns, lb: Netns, underA: string, underB: string) {
    this.la = la;
    this.ta = ta;
    this.tb = tb;
    this.lb = lb;
    this.underA = underA;
    this.underB = underB;
  }

  /** Builds the four namespaces and their links; on failure removes them. */
  static async create(prefix = 's2s'): Promise<SiteToSite> {
    const made: Netns[] = [];
    try {
      const la = await Netns.create(`${prefix}la`);
      made.push(la);
      const ta = await Netns.create(`${prefix}ta`);
      made.push(ta);
      const tb = await Netns.create(`${prefix}tb`);
      made.push(tb);
      const lb = await Netns.create(`${prefix}lb`);
      made.push(lb);
      await linkNamespaces(la, ta, [`${ADDR.la.v4}/24`, `${ADDR.la.v6}/64`], [`${ADDR.taLan.v4}/24`, `${ADDR.taLan.v6}/64`]);
      const under = await linkNamespaces(ta, tb, [`${ADDR.taUnder.v4}/24`, `${ADDR.taUnder.v6}/64`], [`${ADDR.tbUnder.v4}/24`, `${ADDR.tbUnder.v6}/64`]);
      await linkNamespaces(tb, lb, [`${ADDR.tbLan.v4}/24`, `${ADDR.tbLan.v6}/64`], [`${ADDR.lb.v4}/24`, `${ADDR.lb.v6}/64`]);
      for (const host of [ta, tb]) {
        await sysctl(host, 'net.ipv4.ip_forward=1');
        await sysctl(host, 'net.ipv6.conf.all.forwarding=1');
      }
      await la.exec('ip', ['route', 'add', 'default', 'via', ADDR.taLan.v4]);
      await la.exec('ip', ['-6', 'route', 'add', 'default', 'via', ADDR.taLan.v6]);
      await lb.exec('ip', ['route', 'add', 'default', 'via', ADDR.tbLan.v4]);
      await lb.exec('ip', ['-6', 'route', 'add', 'default', 'via', ADDR.tbLan.v6]);
      return new SiteToSite(la, ta, tb, lb, under.ifA, under.ifB);
    } catch (err) {
      await Promise.all(made.map((n) => n.destroy()));
      throw err;
    }
  }

  async destroy(): Promise<void> {
    await Promise.all([this.la, this.ta, this.tb, this.lb].map((n) => n.destroy()));
  }
}

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

export interface PeerSpec {
  name: string;
  publicKey: string;
  endpoint?: string;
  allowedIPs: string[];
  presharedKey?: string;
  persistentKeepalive?: number;
}

export interface HostSpec {
  interfaceName: string;
  privateKey: string;
  listenPort: number;
  addresses: string[];
  peers: PeerSpec[];
  mtu?: number;
  logLevel?: string;
  /** "ip:port" for the Prometheus endpoint; off when absent. */
  metricsListen?: string;
}

/** A private directory holding configs and key files (0700 / 0600). */
export class ConfigDir {
  readonly path: string;

  private constructor(path: string) {
    this.path = path;
  }

  static async create(): Promise<ConfigDir> {
    const dir = await mkdtemp(join(tmpdir(), 'tunvpn-'));
    await chmod(dir, 0o700);
    return new ConfigDir(dir);
  }

  /** Writes `<name>.key` and `<name>.json`; returns the config path. */
  async writeHost(name: string, host: HostSpec): Promise<string> {
    const keyFile = join(this.path, `${name}.key`);
    await writeFile(keyFile, host.privateKey + '\n', { mode: 0o600 });
    const config = {
      interface: {
        name: host.interfaceName,
        privateKeyFile: keyFile,
        listenPort: host.listenPort,
        addresses: host.addresses,
        mtu: host.mtu ?? 1420,
      },
      peers: host.peers.map((p) => {
        const out: Record<string, unknown> = { name: p.name, publicKey: p.publicKey, allowedIPs: p.allowedIPs };
        if (p.endpoint) out.endpoint = p.endpoint;
        if (p.presharedKey) out.presharedKey = p.presharedKey;
        if (p.persistentKeepalive) out.persistentKeepalive = p.persistentKeepalive;
        return out;
      }),
      log: { level: host.logLevel ?? 'info' },
      ...(host.metricsListen ? { metrics: { listen: host.metricsListen } } : {}),
    };
    const path = join(this.path, `${name}.json`);
    await writeFile(path, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
    return path;
  }

  async destroy(): Promise<void> {
    await rm(this.path, { recursive: true, force: true });
  }
}

/** A tunvpn daemon running in a namespace, with its log lines collected. */
export class DaemonProcess {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  private exitCode: number | null | undefined;
  private readonly exited: Promise<number | null>;

  constructor(child: ChildProcess) {
    this.child = child;
    const collect = (chunk: Buffer): void => {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) this.lines.push(line);
    };
    let tail = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      const text = tail + chunk.toString('utf8');
      const parts = text.split('\n');
      tail = parts.pop() ?? '';
      for (const line of parts) if (line.trim()) this.lines.push(line);
    });
    child.stderr?.on('data', collect);
    this.exited = new Promise((resolveExit) => {
      child.once('exit', (code) => {
        if (tail.trim()) this.lines.push(tail);
        this.exitCode = code;
        resolveExit(code);
      });
    });
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** Log lines parsed as JSON (non-JSON lines are skipped). */
  records(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const l of this.lines) {
      try {
        out.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        /* not a JSON log line */
      }
    }
    return out;
  }

  /** Waits for a log line whose msg matches; fails if the daemon exits first. */
  async waitForLog(re: RegExp, timeoutMs = 15_000, from = 0): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const recs = this.records().slice(from);
      const hit = recs.find((r) => typeof r.msg === 'string' && re.test(r.msg));
      if (hit) return hit;
      if (!this.running) throw new Error(`daemon exited (${String(this.exitCode)}) before logging ${re}:\n${this.lines.join('\n')}`);
      if (Date.now() > deadline) throw new Error(`daemon did not log ${re} within ${timeoutMs} ms:\n${this.lines.join('\n')}`);
      await sleep(50);
    }
  }

  signal(sig: NodeJS.Signals): void {
    this.child.kill(sig);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  async stop(graceMs = 5_000): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  wait(): Promise<number | null> {
    return this.exited;
  }
}

/**
 * Starts `tunvpn run` inside `ns` and waits until it reports the interface up.
 * `nodeArgs` go to node itself (e.g. --cpu-prof for profiling).
 */
export async function startDaemon(ns: Netns, configPath: string, extraArgs: string[] = [], nodeArgs: string[] = []): Promise<DaemonProcess> {
  const child = ns.spawn(process.execPath, [...nodeArgs, cliPath(), 'run', '--config', configPath, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = new DaemonProcess(child);
  await proc.waitForLog(/^tunvpn up/);
  return proc;
}

/** Resolves a path relative to the project root. */
export function fromRoot(...parts: string[]): string {
  return resolve(projectRoot(), ...parts);
}

export type { ChildProcess };
