/**
 * Differential testing of the control socket: the same `set` requests go to
 * a real tunvpn daemon and to a real wireguard-go (Debian's
 * /usr/bin/wireguard-go), each alone in its own network namespace; after
 * every request their errnos and `get=1` answers are compared, and
 * tunvpn's kernel routes are checked against its allowed IPs.
 *
 * Used by test/control/uapi-differential.test.ts (a bounded seeded run and
 * the regression cases) and by `npm run fuzz:uapi` (long runs).
 *
 * Requests are templates: `{PRIVn}`, `{PUBn}` (a fixed key pool; PRIV0 is
 * the interface's key at start), `{PSKn}`, `{ZERO}` (64 zeros) and
 * `{PORT}` (the port that side's `get` reports now, so `wg showconf |
 * wg setconf` after `listen_port=0` is covered) are filled in per side.
 *
 * What tunvpn does differently on purpose is named in DIVERGENCES and
 * handled explicitly: tunvpn must then have refused the request and changed
 * nothing, and wireguard-go (which applied it, or part of it) is put back
 * into tunvpn's state before the next request.
 */
import { createHash } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { formatCidr } from '../../src/peers/cidr.js';
import { parseGetResponse } from '../../src/control/uapi-client.js';
import { parsePrefix } from '../../src/control/uapi-netip.js';
import { keyToHex, parseSet } from '../../src/control/uapi-protocol.js';
import { UapiError, type UapiInterfaceState, type UapiSetRequest } from '../../src/control/uapi-types.js';
import { loadCrypto } from '../../src/crypto/index.js';
import { parseRouteKey, planRoutes, planRouting } from '../../src/routing.js';
import { Netns, sleep, uniqueSuffix } from '../../src/testbed/netns.js';
import { cliPath, ConfigDir, DaemonProcess } from '../../src/testbed/site-to-site.js';

// ---------------------------------------------------------------- fixed pools

/** Ports outside the kernel's ephemeral range, so a random port (listen_port=0) never looks like one of them. */
export const PORTS = { start: 20000, other: 20001, third: 20002, blocked: 20009 } as const;
const FIXED_PORTS = new Set<number>([PORTS.start, PORTS.other, PORTS.third]);

/** Interface addresses of tunvpn: allowed IPs inside them get no route of their own. */
export const TV_ADDRESSES = ['10.77.0.1/24', 'fd77::1/64'];
/** Routed by another device in tunvpn's namespace: an allowed IP equal to one must be refused (EEXIST). */
export const FOREIGN_ROUTES = ['10.99.0.0/24', 'fd99::/64'];

const KEY_COUNT = 8;

export interface KeyPool {
  priv: string[];
  pub: string[];
  psk: string[];
}

/** Deterministic keys (the same in every run), so regression cases can name them. */
export async function keyPool(): Promise<KeyPool> {
  const crypto = await loadCrypto('auto');
  const priv: string[] = [];
  const pub: string[] = [];
  const psk: string[] = [];
  for (let i = 0; i < KEY_COUNT; i++) {
    const k = new Uint8Array(createHash('sha256').update(`tunvpn uapi differential key ${i}`).digest());
    k[0] &= 248;
    k[31] = (k[31] & 127) | 64;
    priv.push(keyToHex(k));
    pub.push(keyToHex(crypto.publicKey(k)));
    psk.push(createHash('sha256').update(`tunvpn uapi differential psk ${i}`).digest('hex'));
  }
  return { priv, pub, psk };
}

export function fillTemplate(template: string, keys: KeyPool, port: number): string {
  return template.replace(/\{(PRIV|PUB|PSK)(\d)\}|\{ZERO\}|\{PORT\}/g, (whole, kind: string | undefined, n: string | undefined) => {
    if (whole === '{ZERO}') return '0'.repeat(64);
    if (whole === '{PORT}') return String(port);
    const i = Number(n);
    const list = kind === 'PRIV' ? keys.priv : kind === 'PUB' ? keys.pub : keys.psk;
    return list[i] ?? whole;
  });
}

// ---------------------------------------------------------------- generator

/** xorshift32: small, seeded, the same sequence everywhere. */
export class Rng {
  private s: number;

  constructor(seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }

  next(): number {
    let x = this.s;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.s = x;
    return x / 0x100000000;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  chance(p: number): boolean {
    return this.next() < p;
  }
}

/**
 * Endpoints never reachable through tunvpn's own interface (no allowed IP
 * in the pool covers them), so handshake attempts cannot loop into the tunnel.
 */
const ENDPOINTS = [
  '127.0.0.1:51820',
  '127.0.0.2:9',
  '127.0.0.1:0',
  '127.0.0.1:000000000000000000000000007',
  '[::1]:5',
  '[0:0::1]:5',
  '[FD00::A]:9',
  '[fd00:0:0:0:0:0:0:a]:9',
  '[fe80::1%lo]:51820',
  '[fe80::1%1]:7',
  '[fe80::2%nosuch0]:7',
  '[fe80::3%99]:7',
  '[::ffff:127.0.0.1]:9',
  '[::FFFF:7F00:1]:10',
];

const ALLOWED = [
  '10.1.0.0/16',
  '10.1.2.0/24',
  '10.1.2.3/32',
  '10.1.2.3/24',
  '10.2.0.0/16',
  '10.2.0.0/15',
  '192.168.7.0/24',
  '0.0.0.0/0',
  '0.0.0.0/1',
  '128.0.0.0/1',
  '10.77.0.0/24',
  '10.77.0.9/32',
  '10.77.0.0/16',
  '10.99.0.0/24',
  '10.99.0.128/25',
  'fd10::/48',
  'fd10:0:0:1::/64',
  'FD10:0:0:1::5/64',
  '2001:db8::/32',
  '2001:db8::1/128',
  'fd77::/64',
  'fd77::9/128',
  'fd99::/64',
  'fe80::/64',
  'fe80::/10',
  '::ffff:10.0.0.0/104',
  '::ffff:10.1.2.3/128',
];

const KEEPALIVES = ['0', '25', '0000025', '65535', '1'];

/** Values for a mutated line: wrong types, edges, other fields' values. */
const GARBAGE = [
  '',
  'true',
  'false',
  'TRUE',
  '1',
  '0',
  '-1',
  '+1',
  '0x10',
  '1_0',
  '65536',
  '4294967296',
  '000000000000000000000000000000000001',
  '99999999999999999999999999',
  '1.2.3.4',
  '010.1.2.3/32',
  '10.1.2.3/08',
  '10.1.2.3/+8',
  '10.1.2.3/33',
  '00000::/16',
  'fe80::%lo/64',
  '[::1]:1',
  '::1:1',
  '[1.2.3.4]:5',
  '127.0.0.1:65536',
  '[fe80::1%]:1',
  '[fe80::1%a/b]:1',
  'localhost:1',
  ' 1',
  '{ZERO}',
  '{PUB1}',
  '{PRIV2}',
  'ab',
];

const KEYS_DEVICE = ['private_key', 'listen_port', 'fwmark', 'replace_peers'];
const KEYS_PEER = [
  'public_key',
  'preshared_key',
  'endpoint',
  'persistent_keepalive_interval',
  'replace_allowed_ips',
  'allowed_ip',
  'remove',
  'update_only',
  'protocol_version',
];
const MUTATION_CHARS = 'az09AF:./%=[]+- _\r\x00\xff\x7f';

function deviceLine(rng: Rng): string {
  switch (rng.int(10)) {
    case 0:
    case 1: {
      const r = rng.int(12);
      // Mostly the interface's own keys and fresh ones; sometimes a peer's (tunvpn refuses), rarely all zeros.
      const key = r < 5 ? `{PRIV${rng.pick([0, 0, 6, 7])}}` : r < 10 ? `{PRIV${1 + rng.int(5)}}` : '{ZERO}';
      return `private_key=${key}`;
    }
    case 2:
    case 3:
    case 4: {
      const p = rng.pick([String(PORTS.start), String(PORTS.other), String(PORTS.third), '{PORT}', '{PORT}', '0', `000${PORTS.other}`, String(PORTS.blocked)]);
      return `listen_port=${p}`;
    }
    case 5:
      return `fwmark=${rng.pick(['0', '0', '00', '7', '51820', '4294967295'])}`;
    default:
      return 'replace_peers=true';
  }
}

function peerLine(rng: Rng): string {
  const r = rng.int(20);
  if (r < 7) return `allowed_ip=${rng.pick(ALLOWED)}`;
  if (r < 10) return `endpoint=${rng.pick(ENDPOINTS)}`;
  if (r < 12) return `persistent_keepalive_interval=${rng.pick(KEEPALIVES)}`;
  if (r < 14) return `preshared_key=${rng.pick(['{PSK0}', '{PSK1}', '{ZERO}'])}`;
  if (r < 16) return 'replace_allowed_ips=true';
  if (r < 17) return 'remove=true';
  if (r < 18) return 'update_only=true';
  return 'protocol_version=1';
}

function mutate(rng: Rng, lines: string[]): void {
  if (lines.length === 0) {
    lines.push(rng.pick(['garbage', '=', 'listen_port', `${rng.pick(KEYS_DEVICE)}=${rng.pick(GARBAGE)}`]));
    return;
  }
  const i = rng.int(lines.length);
  const line = lines[i];
  const eq = line.indexOf('=');
  switch (rng.int(8)) {
    case 0: {
      const at = rng.int(line.length + 1);
      lines[i] = line.slice(0, at) + rng.pick([...MUTATION_CHARS]) + line.slice(at);
      return;
    }
    case 1: {
      const at = rng.int(Math.max(1, line.length));
      lines[i] = line.slice(0, at) + line.slice(at + 1);
      return;
    }
    case 2: {
      const at = rng.int(Math.max(1, line.length));
      lines[i] = line.slice(0, at) + rng.pick([...MUTATION_CHARS]) + line.slice(at + 1);
      return;
    }
    case 3:
    case 4:
      lines[i] = `${eq < 0 ? line : line.slice(0, eq)}=${rng.pick(GARBAGE)}`;
      return;
    case 5:
      lines[i] = `${rng.pick([...KEYS_DEVICE, ...KEYS_PEER])}=${eq < 0 ? '' : line.slice(eq + 1)}`;
      return;
    case 6:
      lines.splice(rng.int(lines.length + 1), 0, line);
      return;
    default: {
      const j = rng.int(lines.length);
      lines[i] = lines[j];
      lines[j] = line;
    }
  }
}

/** One request template: device lines, then peer sections; a quarter of them mutated. */
export function generateRequest(rng: Rng): string {
  const lines: string[] = [];
  if (rng.chance(0.35)) {
    const n = 1 + rng.int(3);
    for (let i = 0; i < n; i++) lines.push(deviceLine(rng));
  }
  const sections = rng.int(4);
  for (let s = 0; s < sections; s++) {
    lines.push(`public_key={PUB${rng.int(KEY_COUNT)}}`);
    const n = rng.int(7);
    for (let i = 0; i < n; i++) lines.push(peerLine(rng));
  }
  if (rng.chance(0.25)) {
    const n = 1 + rng.int(2);
    for (let i = 0; i < n; i++) mutate(rng, lines);
  }
  return lines.map((l) => `${l}\n`).join('');
}

// ---------------------------------------------------------------- the two sides

function errnoOf(reply: string): number {
  const m = /(?:^|\n)errno=(-?\d+)\n\n$/.exec(reply);
  if (!m) throw new Error(`malformed reply: ${JSON.stringify(reply.slice(-200))}`);
  return Number(m[1]);
}

/** One request on its own connection, as `wg` does; resolves with the reply up to its blank line. */
export function uapiExchange(ifname: string, request: string, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(`/var/run/wireguard/${ifname}.sock`);
    let text = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`${ifname}: no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(Buffer.from(request, 'latin1')));
    sock.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      const end = text.indexOf('\n\n');
      if (end >= 0) {
        clearTimeout(timer);
        sock.destroy();
        resolve(text.slice(0, end + 2));
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`${ifname}: connection closed without a reply (got ${JSON.stringify(text)})`));
    });
  });
}

/** A state as both sides must agree on it: no times, no counters, no order. */
export interface NormState {
  privateKey: string | null;
  /** A fixed port as a number; a kernel-chosen one as 'random'; 'unbound' when get reports none. */
  listenPort: number | 'random' | 'unbound';
  fwmark: number;
  peers: { publicKey: string; presharedKey: string | null; endpoint: string | null; keepalive: number; allowedIPs: string[] }[];
}

/** The zone of a scoped endpoint: Debian's wireguard-go (0.0.20220316) parses it but does not print it back. */
function withoutZone(address: string): string {
  const pct = address.indexOf('%');
  return pct < 0 ? address : address.slice(0, pct);
}

export function normalise(state: UapiInterfaceState): NormState {
  return {
    privateKey: state.privateKey ? keyToHex(state.privateKey) : null,
    listenPort: state.listenPort === 0 ? 'unbound' : FIXED_PORTS.has(state.listenPort) || state.listenPort === PORTS.blocked ? state.listenPort : 'random',
    fwmark: state.fwmark,
    peers: state.peers
      .map((p) => ({
        publicKey: keyToHex(p.publicKey),
        presharedKey: p.presharedKey ? keyToHex(p.presharedKey) : null,
        endpoint: p.endpoint ? `${withoutZone(p.endpoint.address)}|${p.endpoint.port}` : null,
        keepalive: p.persistentKeepalive,
        allowedIPs: [...p.allowedIPs].sort(),
      }))
      .sort((a, b) => (a.publicKey < b.publicKey ? -1 : 1)),
  };
}

/** Routes through `dev` in the namespace of process `pid`, from /proc (no process spawned per check). */
export async function routesOf(pid: number, dev: string): Promise<string[]> {
  const out = new Set<string>();
  const v4 = await readFile(`/proc/${pid}/net/route`, 'utf8');
  for (const line of v4.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[0] !== dev) continue;
    // Destination and mask are printed as the host-order hex of the network-order word.
    const dst = Number.parseInt(f[1], 16);
    const mask = Number.parseInt(f[7], 16);
    const bytes = Uint8Array.from([dst & 255, (dst >>> 8) & 255, (dst >>> 16) & 255, dst >>> 24]);
    let bits = 0;
    for (let m = mask >>> 0; m !== 0; m >>>= 1) bits += m & 1;
    out.add(formatCidr({ family: 4, bytes, bits }));
  }
  const v6 = await readFile(`/proc/${pid}/net/ipv6_route`, 'utf8');
  for (const line of v6.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[9] !== dev) continue;
    const bytes = Uint8Array.from(Buffer.from(f[0], 'hex'));
    out.add(formatCidr({ family: 6, bytes, bits: Number.parseInt(f[1], 16) }));
  }
  return [...out].sort();
}

/** canonical CIDR text (our form) of a prefix as `get` prints it. */
function ourCidr(text: string): string {
  const p = parsePrefix(text);
  return formatCidr({ family: p.addr.family, bytes: p.addr.bytes, bits: p.bits });
}

/**
 * Stops a wireguard-go started with spawn(): SIGTERM (it removes its socket
 * file then), SIGKILL after 2 s, and the socket file removed if it is left:
 * /var/run/wireguard is shared by every namespace and every test.
 */
export async function stopWireguardGo(child: ChildProcess, ifname: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }
  await rm(`/var/run/wireguard/${ifname}.sock`, { force: true });
}

export interface BedOptions {
  /** The tunvpn CLI to run (default: this tree's dist/src/cli/main.js). */
  cli?: string;
  /** The daemon's log level; info at least (start-up is awaited through its 'tunvpn up' line). */
  logLevel?: 'info' | 'debug';
}

export class DifferentialBed {
  /** Every route on tunvpn's interface before any request: the kernel's own (fe80::/64, the connected prefixes). */
  private baseline: string[] = [];

  private constructor(
    readonly keys: KeyPool,
    readonly tvNs: Netns,
    readonly wgNs: Netns,
    readonly tvIf: string,
    readonly wgIf: string,
    readonly daemon: DaemonProcess,
    private readonly dir: ConfigDir,
    private readonly wgChild: ChildProcess,
  ) {}

  static async create(opts: BedOptions = {}): Promise<DifferentialBed> {
    const keys = await keyPool();
    const suffix = uniqueSuffix();
    const tvIf = `dtv${suffix}`.slice(0, 15);
    const wgIf = `dwg${suffix}`.slice(0, 15);
    const made: { tv?: Netns; wg?: Netns; dir?: ConfigDir; daemon?: DaemonProcess; wgChild?: ChildProcess } = {};
    try {
      made.tv = await Netns.create('udtv');
      made.wg = await Netns.create('udwg');
      const tv = made.tv;
      const wg = made.wg;
      // Routes another device owns: tunvpn must refuse to take them over.
      // (A veth pair inside the namespace: this kernel has no dummy devices.)
      await tv.exec('ip', ['link', 'add', 'other0', 'type', 'veth', 'peer', 'name', 'other1']);
      await tv.exec('ip', ['addr', 'add', '10.99.0.1/24', 'dev', 'other0']);
      await tv.exec('ip', ['-6', 'addr', 'add', 'fd99::1/64', 'dev', 'other0', 'nodad']);
      await tv.exec('ip', ['link', 'set', 'other1', 'up']);
      await tv.exec('ip', ['link', 'set', 'other0', 'up']);
      // The same port taken in both namespaces: listen_port to it is EADDRINUSE on both sides.
      const blocker = `const d=require('dgram');d.createSocket('udp4').bind(${PORTS.blocked});d.createSocket({type:'udp6',ipv6Only:true}).bind(${PORTS.blocked});console.log('bound')`;
      for (const ns of [tv, wg]) {
        const child = ns.spawn(process.execPath, ['-e', blocker]);
        await new Promise<void>((resolve, reject) => {
          child.stdout?.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`port blocker exited ${String(code)}`)));
        });
      }

      made.dir = await ConfigDir.create();
      const privB64 = Buffer.from(keys.priv[0], 'hex').toString('base64');
      const configPath = await made.dir.writeHost('tv', {
        interfaceName: tvIf,
        privateKey: privB64,
        listenPort: PORTS.start,
        addresses: TV_ADDRESSES,
        peers: [],
        logLevel: opts.logLevel ?? 'info',
      });
      const child = tv.spawn(process.execPath, [opts.cli ?? cliPath(), 'run', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
      made.daemon = new DaemonProcess(child);
      await made.daemon.waitForLog(/^tunvpn up/, 30_000);

      const wgChild = wg.spawn('wireguard-go', ['-f', wgIf], {
        env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', LOG_LEVEL: 'error' },
      });
      made.wgChild = wgChild;
      wgChild.stdout?.resume();
      wgChild.stderr?.resume();
      for (let i = 0; ; i++) {
        try {
          await uapiExchange(wgIf, 'get=1\n\n', 1000);
          break;
        } catch (err) {
          if (i > 100) throw new Error(`wireguard-go did not come up: ${(err as Error).message}`);
          await sleep(50);
        }
      }
      await wg.exec('ip', ['link', 'set', wgIf, 'up']);
      const bed = new DifferentialBed(keys, tv, wg, tvIf, wgIf, made.daemon, made.dir, wgChild);
      await bed.resetBoth();
      bed.baseline = await routesOf(bed.daemonPid, tvIf);
      return bed;
    } catch (err) {
      await made.daemon?.stop();
      if (made.wgChild) await stopWireguardGo(made.wgChild, wgIf);
      await Promise.all([made.tv?.destroy(), made.wg?.destroy()]);
      await made.dir?.destroy();
      throw err;
    }
  }

  get daemonPid(): number {
    const pid = this.daemon.child.pid;
    if (pid === undefined) throw new Error('tunvpn has no pid');
    return pid;
  }

  async destroy(): Promise<void> {
    await this.daemon.stop();
    await stopWireguardGo(this.wgChild, this.wgIf);
    await Promise.all([this.tvNs.destroy(), this.wgNs.destroy()]);
    await this.dir.destroy();
  }

  async getState(side: 'tv' | 'wg'): Promise<UapiInterfaceState> {
    const ifname = side === 'tv' ? this.tvIf : this.wgIf;
    return parseGetResponse(ifname, await uapiExchange(ifname, 'get=1\n\n'));
  }

  async set(side: 'tv' | 'wg', template: string, port: number): Promise<number> {
    const ifname = side === 'tv' ? this.tvIf : this.wgIf;
    return errnoOf(await uapiExchange(ifname, `set=1\n${fillTemplate(template, this.keys, port)}\n`));
  }

  /** The start state on both sides: PRIV0, the start port, no fwmark, no peers. */
  async resetBoth(): Promise<void> {
    const reset = `private_key={PRIV0}\nlisten_port=${PORTS.start}\nfwmark=0\nreplace_peers=true\n`;
    const [a, b] = await Promise.all([this.set('tv', reset, 0), this.set('wg', reset, 0)]);
    if (a !== 0 || b !== 0) throw new Error(`reset failed: tunvpn errno=${a}, wireguard-go errno=${b}`);
  }

  /** Puts wireguard-go into tunvpn's state (after a request tunvpn refused on purpose or that failed half-way in wireguard-go). */
  async resyncWireguardGo(tv: UapiInterfaceState): Promise<void> {
    const lines: string[] = [];
    if (tv.privateKey) lines.push(`private_key=${keyToHex(tv.privateKey)}`);
    // tunvpn's port is free in wireguard-go's namespace too (only the blocked one is taken in both).
    lines.push(`listen_port=${tv.listenPort}`, `fwmark=${tv.fwmark}`, 'replace_peers=true');
    for (const p of tv.peers) {
      lines.push(`public_key=${keyToHex(p.publicKey)}`);
      if (p.presharedKey) lines.push(`preshared_key=${keyToHex(p.presharedKey)}`);
      if (p.endpoint) lines.push(`endpoint=${p.endpoint.family === 6 ? `[${p.endpoint.address}]` : p.endpoint.address}:${p.endpoint.port}`);
      lines.push(`persistent_keepalive_interval=${p.persistentKeepalive}`);
      for (const a of p.allowedIPs) lines.push(`allowed_ip=${a}`);
    }
    const errno = await this.set('wg', lines.map((l) => `${l}\n`).join(''), 0);
    if (errno !== 0) throw new Error(`re-sync of wireguard-go failed: errno=${errno}`);
  }

  /**
   * Main-table routes on tunvpn's interface minus what planRoutes wants of
   * its allowed IPs, and the other way round (a full tunnel's default routes
   * are in their own table: planRouting says which).
   */
  async routeMismatch(tv: UapiInterfaceState): Promise<{ missing: string[]; extra: string[] } | undefined> {
    const allowed = tv.peers.flatMap((p) => p.allowedIPs.map(ourCidr));
    const main = planRouting(await planRoutes(TV_ADDRESSES, allowed), 'auto', tv.fwmark)
      .routes.map(parseRouteKey)
      .filter((r) => r.table === 254)
      .map((r) => r.prefix);
    const want = new Set([...main, ...this.baseline]);
    const have = new Set(await routesOf(this.daemonPid, this.tvIf));
    const missing = [...want].filter((r) => !have.has(r)).sort();
    const extra = [...have].filter((r) => !want.has(r)).sort();
    return missing.length || extra.length ? { missing, extra } : undefined;
  }
}

// ---------------------------------------------------------------- divergences

export interface StepContext {
  /** The request as tunvpn got it, parsed by tunvpn's own parser. */
  parsed: UapiSetRequest | UapiError;
  text: string;
  tvErrno: number;
  wgErrno: number;
  before: UapiInterfaceState;
  keys: KeyPool;
}

export interface NamedDivergence {
  name: string;
  why: string;
  /** Whether this step is explained by it; tunvpn must then have refused and changed nothing. */
  applies(c: StepContext): boolean;
}

const EINVAL = -22;
const EEXIST = -17;
const EADDRINUSE = -98;

function deviceOps(c: StepContext): UapiSetRequest['device'] {
  return c.parsed instanceof UapiError ? [] : c.parsed.device;
}

/** An allowed_ip value Go 1.19's netip accepts and current Go refuses. */
function go119OnlyPrefix(value: string): boolean {
  const slash = value.lastIndexOf('/');
  if (slash < 0) return false;
  const bits = value.slice(slash + 1);
  return /^[+-]?[0-9]+$/.test(bits) && (bits.length > 1 && !/^[1-9]/.test(bits) ? true : /(^|:)[0-9a-fA-F]{5,}(:|$)/.test(value.slice(0, slash)));
}

export const DIVERGENCES: NamedDivergence[] = [
  {
    name: 'keyless interface',
    why: 'an all-zero private_key clears the key in wireguard-go; tunvpn cannot run without one (EINVAL)',
    applies: (c) => c.tvErrno === EINVAL && deviceOps(c).some((op) => op.kind === 'private-key' && op.key === null),
  },
  {
    name: 'private key of a peer',
    why: "a private_key whose public key is a peer's is EINVAL in tunvpn, as in its config loader; wireguard-go silently removes that peer",
    applies: (c) => {
      if (c.tvErrno !== EINVAL || c.parsed instanceof UapiError) return false;
      const peerKeys = new Set([...c.before.peers.map((p) => keyToHex(p.publicKey)), ...c.parsed.peers.map((s) => keyToHex(s.publicKey))]);
      return c.parsed.device.some((op) => {
        if (op.kind !== 'private-key' || op.key === null) return false;
        const i = c.keys.priv.indexOf(keyToHex(op.key));
        return i >= 0 && peerKeys.has(c.keys.pub[i]);
      });
    },
  },
  {
    name: 'route of another device',
    why: 'an allowed IP whose prefix another device routes is EEXIST in tunvpn (it would have to take over that route); wireguard-go adds no routes',
    applies: (c) =>
      c.tvErrno === EEXIST &&
      !(c.parsed instanceof UapiError) &&
      c.parsed.peers.some((s) => s.ops.some((op) => op.kind === 'allowed-ip' && FOREIGN_ROUTES.includes(op.cidr))),
  },
  {
    name: 'Go 1.19 netip',
    why: "Debian's wireguard-go is built with Go 1.19, whose netip.ParsePrefix accepts /08, /+8, /-0 and five-digit IPv6 groups; tunvpn follows current Go (and current wireguard-go): EINVAL",
    applies: (c) => c.tvErrno === EINVAL && c.text.split('\n').some((l) => l.startsWith('allowed_ip=') && go119OnlyPrefix(l.slice('allowed_ip='.length))),
  },
  {
    name: 'only the final port is bound',
    why: 'tunvpn applies a request as a whole and binds only the last listen_port in it; wireguard-go binds each in turn and fails on one in use (EADDRINUSE) even when a later line moves on',
    applies: (c) => {
      const ports = deviceOps(c).filter((op) => op.kind === 'listen-port');
      return (
        c.tvErrno === 0 &&
        c.wgErrno === EADDRINUSE &&
        ports.length > 1 &&
        ports.slice(0, -1).some((op) => op.kind === 'listen-port' && op.port === PORTS.blocked)
      );
    },
  },
  {
    name: 'syntax checked first',
    why: 'tunvpn checks the whole request before applying any of it: a syntax error anywhere answers its errno, where wireguard-go fails first on an earlier line it could not apply',
    applies: (c) => c.parsed instanceof UapiError && c.tvErrno === c.parsed.errno && c.wgErrno !== 0,
  },
];

/** What `step` found wrong. */
export interface Divergence {
  /**
   * errno: the answers differ (and no named divergence explains it);
   * state: both accepted, the states differ; refused but changed: tunvpn
   * refused and yet changed; routes: tunvpn's kernel routes do not track its
   * allowed IPs; unlevel: tunvpn's state is one wireguard-go cannot even
   * hold (a peer with the interface's own key), so the two cannot be put
   * level again.
   */
  kind: 'errno' | 'state' | 'refused but changed' | 'routes' | 'unlevel';
  request: string;
  tvErrno: number;
  wgErrno: number;
  detail: string;
}

export interface StepResult {
  divergences: Divergence[];
  /** The named divergence that explained this request, if one did. */
  named?: string;
  /** Both refused it (same errno): all or nothing in tunvpn, a prefix applied in wireguard-go. */
  bothRefused: boolean;
  /** Both states after the step (level again, unless a divergence says otherwise). */
  tv: UapiInterfaceState;
  wg: UapiInterfaceState;
}

function diffText(a: unknown, b: unknown): string {
  return `tunvpn ${JSON.stringify(a)}\n     wireguard-go ${JSON.stringify(b)}`;
}

/**
 * One request to both sides, then the comparison. Afterwards both sides are
 * in the same state again (wireguard-go re-synced when they legitimately
 * differ), so the next request starts level. `before` is the states the
 * previous step ended with (read afresh when absent).
 */
export async function step(bed: DifferentialBed, template: string, before?: { tv: UapiInterfaceState; wg: UapiInterfaceState }): Promise<StepResult> {
  const divergences: Divergence[] = [];
  const [tvBefore, wgBefore] = before ? [before.tv, before.wg] : await Promise.all([bed.getState('tv'), bed.getState('wg')]);
  const tvText = fillTemplate(template, bed.keys, tvBefore.listenPort);
  const [tvErrno, wgErrno] = await Promise.all([bed.set('tv', template, tvBefore.listenPort), bed.set('wg', template, wgBefore.listenPort)]);
  const [tvAfter, wgAfter] = await Promise.all([bed.getState('tv'), bed.getState('wg')]);
  const nBefore = normalise(tvBefore);
  const nTv = normalise(tvAfter);
  const nWg = normalise(wgAfter);
  // As the server splits it: one \r before each \n dropped, the request ends at the first empty line.
  const lines = tvText
    .split('\n')
    .slice(0, -1)
    .map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  const end = lines.indexOf('');
  const parsed = parseSet(end < 0 ? lines : lines.slice(0, end));
  const ctx: StepContext = { parsed, text: tvText, tvErrno, wgErrno, before: tvBefore, keys: bed.keys };
  const report = (kind: Divergence['kind'], detail: string) => divergences.push({ kind, request: template, tvErrno, wgErrno, detail });

  let named: string | undefined;
  let resync = false;
  const bothRefused = tvErrno !== 0 && tvErrno === wgErrno;
  if (tvErrno === wgErrno && tvErrno === 0) {
    if (JSON.stringify(nTv) !== JSON.stringify(nWg)) {
      report('state', diffText(nTv, nWg));
      resync = true;
    }
  } else {
    const explained = bothRefused ? undefined : DIVERGENCES.find((d) => d.applies(ctx));
    named = explained?.name;
    if (!bothRefused && explained === undefined) report('errno', `tunvpn errno=${tvErrno}, wireguard-go errno=${wgErrno}`);
    // tunvpn refused: nothing of the request may have been applied.
    if (tvErrno !== 0 && JSON.stringify(nTv) !== JSON.stringify(nBefore)) report('refused but changed', diffText(nTv, nBefore));
    resync = true;
  }
  const routes = await bed.routeMismatch(tvAfter);
  if (routes) report('routes', `missing ${JSON.stringify(routes.missing)}, not wanted ${JSON.stringify(routes.extra)}`);
  let wgFinal = wgAfter;
  if (resync) {
    await bed.resyncWireguardGo(tvAfter);
    wgFinal = await bed.getState('wg');
    const again = normalise(wgFinal);
    if (JSON.stringify(again) !== JSON.stringify(nTv)) report('unlevel', diffText(nTv, again));
  }
  return { divergences, named, bothRefused, tv: tvAfter, wg: wgFinal };
}

/** Divergences after which the two sides (or tunvpn's routes) cannot simply be re-synced: a fresh bed follows. */
const NEEDS_FRESH_BED: ReadonlySet<Divergence['kind']> = new Set(['routes', 'refused but changed', 'unlevel']);

export interface RunSummary {
  requests: number;
  ms: number;
  /** Both answered 0 and agree. */
  accepted: number;
  /** Both refused with the same errno (tunvpn unchanged). */
  bothRefused: number;
  /** Requests explained by each named divergence. */
  named: Record<string, number>;
  divergences: { index: number; divergence: Divergence }[];
  bedRestarts: number;
}

/**
 * Runs requests against one bed, replacing it with a fresh one when a
 * divergence leaves it in a state that cannot be levelled (a stale route,
 * a half-applied change), so one bug does not hide the next.
 */
export class DifferentialRunner {
  readonly summary: RunSummary = { requests: 0, ms: 0, accepted: 0, bothRefused: 0, named: {}, divergences: [], bedRestarts: 0 };
  private last: { tv: UapiInterfaceState; wg: UapiInterfaceState } | undefined;

  private constructor(
    private bed: DifferentialBed,
    private readonly opts: BedOptions,
    private readonly onDivergence?: (d: Divergence, index: number) => void,
  ) {}

  static async create(opts: BedOptions = {}, onDivergence?: (d: Divergence, index: number) => void): Promise<DifferentialRunner> {
    return new DifferentialRunner(await DifferentialBed.create(opts), opts, onDivergence);
  }

  get keys(): KeyPool {
    return this.bed.keys;
  }

  async request(template: string): Promise<StepResult | undefined> {
    const index = this.summary.requests++;
    const t0 = performance.now();
    let r: StepResult;
    try {
      r = await step(this.bed, template, this.last);
    } catch (err) {
      // A daemon that stopped answering or refuses to be reset: counted as a divergence, then a fresh bed.
      const d: Divergence = { kind: 'unlevel', request: template, tvErrno: NaN, wgErrno: NaN, detail: `step failed: ${(err as Error).message.split('\n')[0]}` };
      this.summary.divergences.push({ index, divergence: d });
      this.onDivergence?.(d, index);
      await this.restart();
      this.summary.ms += performance.now() - t0;
      return undefined;
    }
    this.last = { tv: r.tv, wg: r.wg };
    if (r.bothRefused) this.summary.bothRefused++;
    else if (r.named) this.summary.named[r.named] = (this.summary.named[r.named] ?? 0) + 1;
    else if (r.divergences.length === 0) this.summary.accepted++;
    for (const d of r.divergences) {
      this.summary.divergences.push({ index, divergence: d });
      this.onDivergence?.(d, index);
    }
    if (r.divergences.some((d) => NEEDS_FRESH_BED.has(d.kind))) await this.restart();
    this.summary.ms += performance.now() - t0;
    return r;
  }

  /** Both sides back to the start state (between regression cases). */
  async reset(): Promise<void> {
    try {
      await this.bed.resetBoth();
      this.last = undefined;
    } catch {
      await this.restart();
    }
  }

  private async restart(): Promise<void> {
    this.summary.bedRestarts++;
    this.last = undefined;
    await this.bed.destroy();
    this.bed = await DifferentialBed.create(this.opts);
  }

  async close(): Promise<void> {
    await this.bed.destroy();
  }
}

/** `count` generated requests from `seed`. */
export async function runGenerated(runner: DifferentialRunner, count: number, seed: number, onProgress?: (done: number) => void): Promise<RunSummary> {
  const rng = new Rng(seed);
  for (let i = 0; i < count; i++) {
    await runner.request(generateRequest(rng));
    if ((i + 1) % 500 === 0) onProgress?.(i + 1);
  }
  return runner.summary;
}
