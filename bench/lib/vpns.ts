/**
 * The VPNs under test, each set up on the same two-site test bed in the
 * simplest configuration that is still encrypted and authenticated: a
 * point-to-point tunnel between host A and host B over the underlay, tunnel
 * addresses 10.62.0.1 / 10.62.0.2, MTU 1420 (WireGuard's default, so every
 * tunnel carries the same inner packet sizes), and a route to the far LAN
 * through the tunnel. Each adapter returns the daemons' pids (host A, host
 * B) so the benchmark can charge them CPU time and memory.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Netns } from '../../src/testbed/netns.js';
import { sleep, uniqueSuffix } from '../../src/testbed/netns.js';
import { ADDR, type ConfigDir, DaemonProcess, type SiteToSite, fromRoot, startDaemon, type KeyPair } from '../../src/testbed/site-to-site.js';
import { resolveDaemonPid } from './proc.js';

export const TUNNEL_MTU = 1420;

export interface DaemonSide {
  side: 'A' | 'B';
  pid: number;
  proc: DaemonProcess;
}

export interface RunningVpn {
  daemons: DaemonSide[];
}

export interface VpnContext {
  bed: SiteToSite;
  dir: ConfigDir;
  wgKeys: () => Promise<KeyPair>;
  /** Extra node options for tunvpn (profiling). */
  tunvpnNodeArgs: string[];
}

export interface VpnAdapter {
  name: string;
  /** How it is configured, for the report. */
  setup: string;
  available(): boolean;
  version(): string;
  start(ctx: VpnContext): Promise<RunningVpn>;
}

export function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function debVersion(pkg: string): string {
  try {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query expands ${Version} itself
    return execFileSync('dpkg-query', ['-W', '-f', '${Version}', pkg], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

function spawnDaemon(ns: Netns, cmd: string, args: string[], env?: NodeJS.ProcessEnv): DaemonProcess {
  return new DaemonProcess(ns.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env }));
}

async function waitForLink(ns: Netns, ifname: string, proc: DaemonProcess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await ns.exec('ip', ['link', 'show', ifname]).then(
      () => true,
      () => false,
    );
    if (ok) return;
    if (!proc.running) throw new Error(`${ifname}: daemon exited before creating it:\n${proc.lines.slice(-20).join('\n')}`);
    if (Date.now() > deadline) throw new Error(`${ifname} did not appear within ${timeoutMs} ms:\n${proc.lines.slice(-20).join('\n')}`);
    await sleep(50);
  }
}

/** Address, MTU, up, and the route to the far LAN, for daemons that leave that to the admin. */
async function configureLink(ns: Netns, ifname: string, local: string, peer: string | undefined, farLan: string): Promise<void> {
  const addr = peer ? ['addr', 'add', local, 'peer', peer, 'dev', ifname] : ['addr', 'add', `${local}/24`, 'dev', ifname];
  await ns.exec('ip', addr);
  await ns.exec('ip', ['link', 'set', ifname, 'mtu', String(TUNNEL_MTU), 'up']);
  await ns.exec('ip', ['route', 'add', farLan, 'dev', ifname]);
}

function sides(a: DaemonProcess, b: DaemonProcess, comm: RegExp): DaemonSide[] {
  const pid = (p: DaemonProcess): number => resolveDaemonPid(p.child.pid ?? -1, comm);
  return [
    { side: 'A', pid: pid(a), proc: a },
    { side: 'B', pid: pid(b), proc: b },
  ];
}

/**
 * Host A and host B as a point-to-point tunnel between them sees them:
 * the interface (`prefix` + a/b + a suffix unique to this run), its own
 * tunnel address and LAN, the peer's tunnel address and LAN, and the
 * underlay addresses to bind to and to reach the peer at.
 */
interface TunnelHost {
  side: 'A' | 'B';
  name: 'a' | 'b';
  ns: Netns;
  ifname: string;
  local: string;
  peerTun: string;
  lan: string;
  farLan: string;
  bind: string;
  remote: string;
}

function tunnelHosts(bed: SiteToSite, prefix: string): [TunnelHost, TunnelHost] {
  const sfx = uniqueSuffix();
  return [
    {
      side: 'A',
      name: 'a',
      ns: bed.ta,
      ifname: `${prefix}a${sfx}`.slice(0, 15),
      local: ADDR.taTun.v4,
      peerTun: ADDR.tbTun.v4,
      lan: ADDR.lanA.v4,
      farLan: ADDR.lanB.v4,
      bind: ADDR.taUnder.v4,
      remote: ADDR.tbUnder.v4,
    },
    {
      side: 'B',
      name: 'b',
      ns: bed.tb,
      ifname: `${prefix}b${sfx}`.slice(0, 15),
      local: ADDR.tbTun.v4,
      peerTun: ADDR.taTun.v4,
      lan: ADDR.lanB.v4,
      farLan: ADDR.lanA.v4,
      bind: ADDR.tbUnder.v4,
      remote: ADDR.taUnder.v4,
    },
  ];
}

const tunvpn: VpnAdapter = {
  name: 'tunvpn',
  setup: 'this repository, `tunvpn run` with one peer each side, default crypto backend',
  available: () => true,
  version: () => {
    const pkg = JSON.parse(readFileSync(fromRoot('package.json'), 'utf8')) as { version: string };
    return `${pkg.version} (node ${process.version})`;
  },
  async start(ctx) {
    const { bed, dir } = ctx;
    const a = await ctx.wgKeys();
    const b = await ctx.wgKeys();
    const sfx = uniqueSuffix();
    const cfgA = await dir.writeHost('tunvpn-a', {
      interfaceName: `tva${sfx}`.slice(0, 15),
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`],
      mtu: TUNNEL_MTU,
      peers: [{ name: 'b', publicKey: b.publicKey, endpoint: `${ADDR.tbUnder.v4}:51820`, allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4] }],
    });
    const cfgB = await dir.writeHost('tunvpn-b', {
      interfaceName: `tvb${sfx}`.slice(0, 15),
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`],
      mtu: TUNNEL_MTU,
      peers: [{ name: 'a', publicKey: a.publicKey, endpoint: `${ADDR.taUnder.v4}:51820`, allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4] }],
    });
    const pa = await startDaemon(bed.ta, cfgA, [], ctx.tunvpnNodeArgs);
    const pb = await startDaemon(bed.tb, cfgB, [], ctx.tunvpnNodeArgs);
    return { daemons: sides(pa, pb, /^node|^MainThread/) };
  },
};

const WG_ENV = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };

/**
 * What a wireguard-go binary says it is: `wireguard-go --version` prints
 * "wireguard-go v0.0.20250522" on its first line. The Debian package's
 * version would name the package, not the binary actually run.
 */
export function wireguardGoVersion(path: string): string {
  try {
    const out = execFileSync(path, ['--version'], { encoding: 'utf8', env: WG_ENV, timeout: 5_000 });
    const m = /wireguard-go v?(\S+)/.exec(out);
    return m ? m[1] : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * The wireguard-go binaries to measure: `--wireguard-go PATH[,PATH...]`,
 * else $TUNVPN_BENCH_WIREGUARD_GO (same form), else `wireguard-go` on PATH.
 * The first one is the reference every ratio is taken against.
 */
export function wireguardGoPaths(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  const text = flag ?? env.TUNVPN_BENCH_WIREGUARD_GO ?? 'wireguard-go';
  const paths = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return paths.length ? paths : ['wireguard-go'];
}

/** One wireguard-go build as its own VPN column, named by the version the binary reports. */
export function wireguardGoAdapter(path: string): VpnAdapter {
  const version = wireguardGoVersion(path);
  return {
    name: `wireguard-go ${version}`,
    setup: `${path} -f, configured with \`wg set\` (one peer, endpoint both ways)`,
    available: () => hasCommand(path) && hasCommand('wg'),
    version: () => version,
    async start(ctx) {
      const { bed, dir } = ctx;
      const keys = { A: await ctx.wgKeys(), B: await ctx.wgKeys() };
      const hosts = tunnelHosts(bed, 'wg');
      const procs: DaemonProcess[] = [];
      for (const h of hosts) {
        const other = h.side === 'A' ? keys.B : keys.A;
        const proc = spawnDaemon(h.ns, path, ['-f', h.ifname], WG_ENV);
        procs.push(proc);
        await waitForLink(h.ns, h.ifname, proc);
        const keyFile = join(dir.path, `wg-${h.side}.key`);
        await writeFile(keyFile, keys[h.side].privateKey + '\n', { mode: 0o600 });
        await h.ns.exec('wg', [
          'set',
          h.ifname,
          'private-key',
          keyFile,
          'listen-port',
          '51820',
          'peer',
          other.publicKey,
          'allowed-ips',
          `${h.peerTun}/32,${h.farLan}`,
          'endpoint',
          `${h.remote}:51820`,
        ]);
        await configureLink(h.ns, h.ifname, h.local, undefined, h.farLan);
      }
      return { daemons: sides(procs[0], procs[1], /wireguard/) };
    },
  };
}

const fastd: VpnAdapter = {
  name: 'fastd',
  setup: 'fastd tun mode, method salsa2012+umac, one peer each side',
  available: () => hasCommand('fastd'),
  version: () => debVersion('fastd'),
  async start(ctx) {
    const { bed, dir } = ctx;
    const keygen = (): { secret: string; pub: string } => {
      const secret = execFileSync('fastd', ['--generate-key', '--machine-readable'], { encoding: 'utf8' }).trim();
      const tmp = join(dir.path, `fastd-key-${uniqueSuffix()}.conf`);
      execFileSync('sh', ['-c', `umask 077; printf 'secret "%s";\\n' "$1" > "$2"`, 'sh', secret, tmp]);
      const pub = execFileSync('fastd', ['--show-key', '--machine-readable', '-c', tmp], { encoding: 'utf8' }).trim();
      return { secret, pub };
    };
    const keys = { A: keygen(), B: keygen() };
    const hosts = tunnelHosts(bed, 'fd');
    const procs: DaemonProcess[] = [];
    for (const h of hosts) {
      const other = h.side === 'A' ? keys.B : keys.A;
      const conf = join(dir.path, `fastd-${h.side}.conf`);
      await writeFile(
        conf,
        [
          'log level warn;',
          'mode tun;',
          `interface "${h.ifname}";`,
          'method "salsa2012+umac";',
          `bind ${h.bind}:10000;`,
          `secret "${keys[h.side].secret}";`,
          `mtu ${TUNNEL_MTU};`,
          `peer "${h.side === 'A' ? 'b' : 'a'}" {`,
          `  key "${other.pub}";`,
          `  remote ${h.remote}:10000;`,
          '}',
          '',
        ].join('\n'),
        { mode: 0o600 },
      );
      const proc = spawnDaemon(h.ns, 'fastd', ['-c', conf]);
      procs.push(proc);
      await waitForLink(h.ns, h.ifname, proc);
      await configureLink(h.ns, h.ifname, h.local, h.peerTun, h.farLan);
    }
    return { daemons: sides(procs[0], procs[1], /fastd/) };
  },
};

const tinc: VpnAdapter = {
  name: 'tinc',
  setup: 'tinc 1.0 router mode, Cipher aes-256-cbc, Digest sha256, RSA-2048 host keys',
  available: () => hasCommand('tincd'),
  version: () => debVersion('tinc'),
  async start(ctx) {
    const { bed, dir } = ctx;
    const hosts = tunnelHosts(bed, 'tc');
    const hostFile = (h: (typeof hosts)[number]): string =>
      [`Address = ${h.bind}`, 'Port = 655', `Subnet = ${h.lan}`, `Subnet = ${h.local}/32`, 'Cipher = aes-256-cbc', 'Digest = sha256', ''].join('\n');
    const confDirs: Record<string, string> = {};
    for (const h of hosts) {
      const cdir = join(dir.path, `tinc-${h.name}`);
      confDirs[h.name] = cdir;
      await mkdir(join(cdir, 'hosts'), { recursive: true, mode: 0o700 });
      await writeFile(
        join(cdir, 'tinc.conf'),
        [
          `Name = ${h.name}`,
          'Mode = router',
          'AddressFamily = ipv4',
          `BindToAddress = ${h.bind}`,
          'Device = /dev/net/tun',
          'DeviceType = tun',
          `Interface = ${h.ifname}`,
          ...(h.side === 'A' ? ['ConnectTo = b'] : []),
          '',
        ].join('\n'),
      );
      await writeFile(join(cdir, 'hosts', h.name), hostFile(h));
      execFileSync('tincd', ['-c', cdir, '-K', '2048'], { stdio: ['ignore', 'ignore', 'ignore'] });
    }
    // Each side needs the other's host file (with its public key).
    for (const h of hosts) {
      for (const other of hosts) {
        if (other === h) continue;
        await writeFile(join(confDirs[h.name], 'hosts', other.name), readFileSync(join(confDirs[other.name], 'hosts', other.name)));
      }
    }
    const procs: DaemonProcess[] = [];
    for (const h of hosts) {
      const proc = spawnDaemon(h.ns, 'tincd', ['-c', confDirs[h.name], '-D', '-d0', '--pidfile', join(confDirs[h.name], 'pid')]);
      procs.push(proc);
      await waitForLink(h.ns, h.ifname, proc);
      await configureLink(h.ns, h.ifname, h.local, undefined, h.farLan);
    }
    return { daemons: sides(procs[0], procs[1], /tincd/) };
  },
};

const openvpn: VpnAdapter = {
  name: 'openvpn',
  setup: 'OpenVPN p2p static key over UDP, AES-256-CBC + HMAC-SHA256, tun-mtu 1420, default mssfix',
  available: () => hasCommand('openvpn'),
  version: () => debVersion('openvpn'),
  async start(ctx) {
    const { bed, dir } = ctx;
    const keyFile = join(dir.path, 'openvpn-static.key');
    execFileSync('openvpn', ['--genkey', 'secret', keyFile], { stdio: 'ignore' });
    const hosts = tunnelHosts(bed, 'ov');
    const procs: DaemonProcess[] = [];
    for (const h of hosts) {
      const proc = spawnDaemon(h.ns, 'openvpn', [
        '--dev',
        h.ifname,
        '--dev-type',
        'tun',
        '--disable-dco',
        '--proto',
        'udp',
        '--local',
        h.bind,
        '--lport',
        '1194',
        '--remote',
        h.remote,
        '--rport',
        '1194',
        '--ifconfig',
        h.local,
        h.peerTun,
        '--secret',
        keyFile,
        h.side === 'A' ? '0' : '1',
        '--cipher',
        'AES-256-CBC',
        '--auth',
        'SHA256',
        '--tun-mtu',
        String(TUNNEL_MTU),
        '--verb',
        '1',
      ]);
      procs.push(proc);
      await waitForLink(h.ns, h.ifname, proc);
      // OpenVPN brings the link up itself; it only lacks the route.
      const deadline = Date.now() + 10_000;
      for (;;) {
        const ok = await h.ns.exec('ip', ['route', 'add', h.farLan, 'dev', h.ifname]).then(
          () => true,
          () => false,
        );
        if (ok) break;
        if (Date.now() > deadline) throw new Error(`openvpn: cannot route ${h.farLan} via ${h.ifname}:\n${proc.lines.slice(-20).join('\n')}`);
        await sleep(100);
      }
    }
    return { daemons: sides(procs[0], procs[1], /openvpn/) };
  },
};

const quicktun: VpnAdapter = {
  name: 'quicktun',
  setup: 'QuickTun TUN mode, protocol nacltai (curve25519xsalsa20poly1305 with timestamps)',
  available: () => hasCommand('quicktun') && hasCommand('keypair'),
  version: () => debVersion('quicktun'),
  async start(ctx) {
    const { bed } = ctx;
    const keygen = (): { secret: string; pub: string } => {
      const out = execFileSync('keypair', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const secret = /SECRET:\s*([0-9a-f]{64})/.exec(out)?.[1];
      const pub = /PUBLIC:\s*([0-9a-f]{64})/.exec(out)?.[1];
      if (!secret || !pub) throw new Error(`quicktun keypair: unexpected output ${out}`);
      return { secret, pub };
    };
    const keys = { A: keygen(), B: keygen() };
    const hosts = tunnelHosts(bed, 'qt');
    const procs: DaemonProcess[] = [];
    for (const h of hosts) {
      const other = h.side === 'A' ? keys.B : keys.A;
      // QuickTun reads its settings the ifupdown way: IFACE names the
      // interface and every option is an IF_QT_* variable.
      const proc = spawnDaemon(h.ns, 'quicktun', [], {
        PATH: process.env.PATH,
        IFACE: h.ifname,
        IF_QT_TUN_MODE: '1',
        IF_QT_PROTOCOL: 'nacltai',
        IF_QT_PRIVATE_KEY: keys[h.side].secret,
        IF_QT_PUBLIC_KEY: other.pub,
        IF_QT_LOCAL_ADDRESS: h.bind,
        IF_QT_LOCAL_PORT: '2998',
        IF_QT_REMOTE_ADDRESS: h.remote,
        IF_QT_REMOTE_PORT: '2998',
      });
      procs.push(proc);
      await waitForLink(h.ns, h.ifname, proc);
      await configureLink(h.ns, h.ifname, h.local, h.peerTun, h.farLan);
    }
    return { daemons: sides(procs[0], procs[1], /quicktun/) };
  },
};

/** No VPN: the underlay routes LAN to LAN directly (the ceiling of the bed). */
const plain: VpnAdapter = {
  name: 'plain',
  setup: 'no VPN: static routes over the underlay veth',
  available: () => true,
  version: () => 'kernel',
  async start(ctx) {
    const { bed } = ctx;
    await bed.ta.exec('ip', ['route', 'add', ADDR.lanB.v4, 'via', ADDR.tbUnder.v4]);
    await bed.tb.exec('ip', ['route', 'add', ADDR.lanA.v4, 'via', ADDR.taUnder.v4]);
    return { daemons: [] };
  },
};

/** Every VPN but wireguard-go, whose builds are chosen at run time (wireguardGoAdapter). */
export const OTHER_VPNS: readonly VpnAdapter[] = [tunvpn, fastd, tinc, openvpn, quicktun, plain];
