/**
 * The two-site test bed (docs/architecture.md, "Test bed"), in network
 * namespaces:
 *
 *  [la] 10.61.1.10 ─veth─ [ta] ══ tunnel over veth underlay ══ [tb] ─veth─ [lb] 10.61.2.10
 *        LAN A            host A   10.60.0.1 ⇄ 10.60.0.2        host B       LAN B
 *
 * IPv6 runs beside IPv4 everywhere (fd61:1::/64, fd60::/64, fd62::/64,
 * fd61:2::/64). The demo, the benchmarks and the integration tests use it;
 * each creates its own uniquely named namespaces and removes them in every
 * outcome.
 *
 * Options choose the underlay, as users have them: one address family
 * only or both, and its MTU (1500, or PPPoE-like links of exactly tunnel
 * MTU + WireGuard's overhead: `exactUnderlayMtu`); and a
 * second LAN subnet on each side (ADDR_LAN2), so two tunnels (say tunvpn and
 * wireguard-go on host B) can share one bed, each carrying its own pair of
 * LAN subnets.
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

/**
 * The second LAN subnets (SiteToSiteOptions.secondLan), on the same LAN
 * links as ADDR's. Traffic between ADDR_LAN2.la and ADDR_LAN2.lb leaves from
 * these addresses (routes with a preferred source), so a second peer whose
 * allowed IPs are these subnets carries it, not the first.
 */
export const ADDR_LAN2 = {
  la: { v4: '10.61.3.10', v6: 'fd61:3::10' },
  taLan: { v4: '10.61.3.1', v6: 'fd61:3::1' },
  tbLan: { v4: '10.61.4.1', v6: 'fd61:4::1' },
  lb: { v4: '10.61.4.10', v6: 'fd61:4::10' },
  lanA: { v4: '10.61.3.0/24', v6: 'fd61:3::/64' },
  lanB: { v4: '10.61.4.0/24', v6: 'fd61:4::/64' },
} as const;

/**
 * The private link behind the NAT (SiteToSiteOptions.natInFrontOfB): host B
 * has these addresses; the NAT's public side takes ADDR.tbUnder.
 */
export const ADDR_NAT = {
  natPrivate: { v4: '10.59.0.1', v6: 'fd59::1' },
  tbPrivate: { v4: '10.59.0.2', v6: 'fd59::2' },
} as const;

/**
 * Source NAT (masquerade, IPv4 and, on an IPv6 underlay, NAT66) of what
 * leaves `ns` by `publicIf`: connection tracking lets replies back in and
 * nothing unsolicited, as a home router does.
 */
async function masquerade(ns: Netns, publicIf: string): Promise<void> {
  await ns.exec('nft', ['add', 'table', 'inet', 'tbnat']);
  await ns.exec('nft', ['add', 'chain', 'inet', 'tbnat', 'post', '{', 'type', 'nat', 'hook', 'postrouting', 'priority', 'srcnat', ';', '}']);
  await ns.exec('nft', ['add', 'rule', 'inet', 'tbnat', 'post', 'oifname', publicIf, 'masquerade']);
}

export type UnderlayFamily = 'v4' | 'v6';

/**
 * Bytes WireGuard adds to an inner packet of the tunnel MTU: outer IP header
 * (20 or 40), UDP (8), transport header (16) and tag (16). The padding to 16
 * never goes past the MTU, so it adds nothing to a full-size packet.
 */
export const WIREGUARD_OVERHEAD: Readonly<Record<UnderlayFamily, number>> = { v4: 60, v6: 80 };

/** The smallest underlay MTU that carries a full tunnel-MTU packet unfragmented. */
export function exactUnderlayMtu(tunnelMtu: number, family: UnderlayFamily): number {
  return tunnelMtu + WIREGUARD_OVERHEAD[family];
}

export interface SiteToSiteOptions {
  /**
   * Address families on the underlay link between host A and host B:
   * 'dual' (the default) or one only, so a tunnel cannot quietly use the
   * other one.
   */
  underlayFamily?: 'dual' | UnderlayFamily;
  /** MTU of the underlay link, both ends (default 1500). */
  underlayMtu?: number;
  /** Also the ADDR_LAN2 subnets on LAN A and LAN B (default false). */
  secondLan?: boolean;
  /**
   * Host B behind a NAT (a fifth namespace, `nat`, doing masquerade with
   * nftables: needs `nft`): host A cannot reach B until B has sent to it.
   */
  natInFrontOfB?: boolean;
}

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

/**
 * Waits for every promise (none is left running when this returns); collects
 * the values in `into` and throws the first failure.
 */
async function settleAll<T>(promises: Promise<T>[], into: T[] = []): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const values: T[] = [];
  for (const r of settled) {
    if (r.status === 'fulfilled') {
      values.push(r.value);
      into.push(r.value);
    }
  }
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return values;
}

export class SiteToSite {
  readonly la: Netns;
  readonly ta: Netns;
  readonly tb: Netns;
  readonly lb: Netns;
  /** The NAT in front of host B (SiteToSiteOptions.natInFrontOfB), else undefined. */
  readonly nat: Netns | undefined;
  /** Interface names of the underlay veth on host A and host B (behind a NAT: B's private side). */
  readonly underA: string;
  readonly underB: string;
  readonly underlayFamily: 'dual' | UnderlayFamily;
  readonly underlayMtu: number;

  private constructor(parts: {
    la: Netns;
    ta: Netns;
    tb: Netns;
    lb: Netns;
    nat: Netns | undefined;
    underA: string;
    underB: string;
    underlayFamily: 'dual' | UnderlayFamily;
    underlayMtu: number;
  }) {
    this.la = parts.la;
    this.ta = parts.ta;
    this.tb = parts.tb;
    this.lb = parts.lb;
    this.nat = parts.nat;
    this.underA = parts.underA;
    this.underB = parts.underB;
    this.underlayFamily = parts.underlayFamily;
    this.underlayMtu = parts.underlayMtu;
  }

  /** Every namespace tunnel datagrams cross: host A, the NAT if any, host B. */
  get underlayHosts(): Netns[] {
    return this.nat ? [this.ta, this.nat, this.tb] : [this.ta, this.tb];
  }

  /** Builds the namespaces and their links; on failure removes them. */
  static async create(prefix = 's2s', opts: SiteToSiteOptions = {}): Promise<SiteToSite> {
    const family = opts.underlayFamily ?? 'dual';
    const mtu = opts.underlayMtu ?? 1500;
    // IPv6 needs 1280 on every link (RFC 8200); below it the kernel turns IPv6 off on the link.
    if (!Number.isInteger(mtu) || mtu < (family === 'v4' ? 576 : 1280) || mtu > 65535) {
      throw new RangeError(`SiteToSite: underlayMtu ${mtu} is not usable for a ${family} underlay`);
    }
    const made: Netns[] = [];
    try {
      // Namespaces and links are independent until routes go in: make them concurrently.
      const roles = opts.natInFrontOfB ? ['la', 'ta', 'tb', 'lb', 'nb'] : ['la', 'ta', 'tb', 'lb'];
      const [la, ta, tb, lb, ...rest] = await settleAll(
        roles.map((role) => Netns.create(`${prefix}${role}`)),
        made,
      );
      const nat: Netns | undefined = rest[0];
      const lanA = [`${ADDR.la.v4}/24`, `${ADDR.la.v6}/64`];
      const lanARouter = [`${ADDR.taLan.v4}/24`, `${ADDR.taLan.v6}/64`];
      const lanB = [`${ADDR.lb.v4}/24`, `${ADDR.lb.v6}/64`];
      const lanBRouter = [`${ADDR.tbLan.v4}/24`, `${ADDR.tbLan.v6}/64`];
      if (opts.secondLan) {
        lanA.push(`${ADDR_LAN2.la.v4}/24`, `${ADDR_LAN2.la.v6}/64`);
        lanARouter.push(`${ADDR_LAN2.taLan.v4}/24`, `${ADDR_LAN2.taLan.v6}/64`);
        lanB.push(`${ADDR_LAN2.lb.v4}/24`, `${ADDR_LAN2.lb.v6}/64`);
        lanBRouter.push(`${ADDR_LAN2.tbLan.v4}/24`, `${ADDR_LAN2.tbLan.v6}/64`);
      }
      const onUnderlay = (addr: { v4: string; v6: string }, v4Len = 24, v6Len = 64): string[] => [
        ...(family !== 'v6' ? [`${addr.v4}/${v4Len}`] : []),
        ...(family !== 'v4' ? [`${addr.v6}/${v6Len}`] : []),
      ];
      // Behind a NAT, host B's public underlay address is the NAT's; B itself sits on a
      // private link behind it, every link of the path with the underlay MTU.
      const links = [
        linkNamespaces(la, ta, lanA, lanARouter),
        nat
          ? linkNamespaces(ta, nat, onUnderlay(ADDR.taUnder), onUnderlay(ADDR.tbUnder), { mtu })
          : linkNamespaces(ta, tb, onUnderlay(ADDR.taUnder), onUnderlay(ADDR.tbUnder), { mtu }),
        linkNamespaces(tb, lb, lanBRouter, lanB),
        ...(nat ? [linkNamespaces(nat, tb, onUnderlay(ADDR_NAT.natPrivate), onUnderlay(ADDR_NAT.tbPrivate), { mtu })] : []),
      ];
      const [, under, , natLink] = await settleAll(links);
      await Promise.all(
        [ta, tb, ...(nat ? [nat] : [])].map((host) => host.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1'])),
      );
      const routes: [Netns, string[]][] = [
        [la, ['route', 'add', 'default', 'via', ADDR.taLan.v4]],
        [la, ['-6', 'route', 'add', 'default', 'via', ADDR.taLan.v6]],
        [lb, ['route', 'add', 'default', 'via', ADDR.tbLan.v4]],
        [lb, ['-6', 'route', 'add', 'default', 'via', ADDR.tbLan.v6]],
      ];
      if (nat) {
        if (family !== 'v6') routes.push([tb, ['route', 'add', 'default', 'via', ADDR_NAT.natPrivate.v4]]);
        if (family !== 'v4') routes.push([tb, ['-6', 'route', 'add', 'default', 'via', ADDR_NAT.natPrivate.v6]]);
      }
      if (opts.secondLan) {
        // Preferred sources, so what la sends to LAN B comes from LAN A and what it sends to
        // LAN B2 from LAN A2 (and back): IPv6 would otherwise pick by longest common prefix
        // (fd61:3::10 for fd61:2::10), and the reply would come back through the other tunnel.
        routes.push(
          [la, ['route', 'add', ADDR.lanB.v4, 'via', ADDR.taLan.v4, 'src', ADDR.la.v4]],
          [la, ['-6', 'route', 'add', ADDR.lanB.v6, 'via', ADDR.taLan.v6, 'src', ADDR.la.v6]],
          [lb, ['route', 'add', ADDR.lanA.v4, 'via', ADDR.tbLan.v4, 'src', ADDR.lb.v4]],
          [lb, ['-6', 'route', 'add', ADDR.lanA.v6, 'via', ADDR.tbLan.v6, 'src', ADDR.lb.v6]],
          [la, ['route', 'add', ADDR_LAN2.lanB.v4, 'via', ADDR_LAN2.taLan.v4, 'src', ADDR_LAN2.la.v4]],
          [la, ['-6', 'route', 'add', ADDR_LAN2.lanB.v6, 'via', ADDR_LAN2.taLan.v6, 'src', ADDR_LAN2.la.v6]],
          [lb, ['route', 'add', ADDR_LAN2.lanA.v4, 'via', ADDR_LAN2.tbLan.v4, 'src', ADDR_LAN2.lb.v4]],
          [lb, ['-6', 'route', 'add', ADDR_LAN2.lanA.v6, 'via', ADDR_LAN2.tbLan.v6, 'src', ADDR_LAN2.lb.v6]],
        );
      }
      for (const [ns, args] of routes) await ns.exec('ip', args);
      if (nat) await masquerade(nat, under.ifB);
      return new SiteToSite({
        la,
        ta,
        tb,
        lb,
        nat,
        underA: under.ifA,
        underB: natLink ? natLink.ifB : under.ifB,
        underlayFamily: family,
        underlayMtu: mtu,
      });
    } catch (err) {
      await Promise.all(made.map((n) => n.destroy()));
      throw err;
    }
  }

  /**
   * Host A's or host B's underlay address as a WireGuard endpoint
   * ("10.60.0.2:51820", "[fd60::2]:51820"), in `family` or the bed's own
   * (IPv4 on a dual-stack underlay). Behind a NAT, B's is the NAT's public
   * address: it reaches B only once B has sent from that port (the mapping
   * masquerade made keeps the port when it is free).
   */
  endpoint(host: 'a' | 'b', port: number, family?: UnderlayFamily): string {
    const fam = family ?? (this.underlayFamily === 'v6' ? 'v6' : 'v4');
    if (this.underlayFamily !== 'dual' && this.underlayFamily !== fam) {
      throw new Error(`SiteToSite: the underlay is ${this.underlayFamily} only, no ${fam} endpoint`);
    }
    const addr = ADDR[host === 'a' ? 'taUnder' : 'tbUnder'][fam];
    return fam === 'v6' ? `[${addr}]:${port}` : `${addr}:${port}`;
  }

  async destroy(): Promise<void> {
    await Promise.all([this.la, this.ta, this.tb, this.lb, ...(this.nat ? [this.nat] : [])].map((n) => n.destroy()));
  }
}

/** A key pair as base64 (src/testbed/keys.ts makes them); the benchmarks know it by this name. */
export type { KeyPairText as KeyPair } from './keys.js';

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
