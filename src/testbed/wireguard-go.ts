/**
 * Debian's wireguard-go as the other end of a tunnel in the test bed: the
 * interop tests, the underlay matrix and anything else that needs "the real
 * WireGuard" on host B.
 *
 * Started in the foreground (`-f`) inside a namespace and configured with
 * `wg set` and `ip`, as a user would. Its control socket lives in
 * /var/run/wireguard/IFACE.sock, which every namespace shares, so each
 * instance gets a unique interface name; the socket is removed on stop
 * (a wireguard-go killed with its namespace leaves it behind).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Netns, sleep, uniqueSuffix } from './netns.js';
import type { ConfigDir } from './site-to-site.js';

/** Debian's build refuses to run without this (it prefers the kernel module). */
export const WG_GO_ENV: NodeJS.ProcessEnv = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };

export interface WgGoPeerSpec {
  publicKey: string;
  /** "10.60.0.1:51820" or "[fd60::1]:51820"; none: it learns it from the peer's handshake. */
  endpoint?: string;
  allowedIPs: string[];
  presharedKey?: string;
  persistentKeepalive?: number;
}

export interface WgGoSpec {
  privateKey: string;
  listenPort: number;
  /** Interface addresses (CIDR). */
  addresses: string[];
  /** Tunnel MTU (wireguard-go's default is 1420). */
  mtu?: number;
  peers: WgGoPeerSpec[];
  /** Routed into the interface; default: every peer's allowed IPs. */
  routes?: string[];
  /** Interface name prefix; a unique suffix is appended (default "wgo"). */
  namePrefix?: string;
}

export class WireguardGo {
  readonly ns: Netns;
  readonly ifname: string;
  readonly socketPath: string;
  readonly child: ChildProcess;
  private readonly output: string[];

  private constructor(ns: Netns, ifname: string, child: ChildProcess, output: string[]) {
    this.ns = ns;
    this.ifname = ifname;
    this.socketPath = `/var/run/wireguard/${ifname}.sock`;
    this.child = child;
    this.output = output;
  }

  /**
   * Starts wireguard-go in `ns` and configures it; key files go to `dir`
   * (0600). Resolves once the interface is up with its addresses and routes.
   */
  static async start(ns: Netns, dir: ConfigDir, spec: WgGoSpec): Promise<WireguardGo> {
    const ifname = `${spec.namePrefix ?? 'wgo'}${uniqueSuffix()}`.slice(0, 15);
    const output: string[] = [];
    const child = ns.spawn('wireguard-go', ['-f', ifname], { env: WG_GO_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => output.push(d.toString()));
    child.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
    const wg = new WireguardGo(ns, ifname, child, output);
    try {
      await wg.waitForSocket();
      const keyFile = join(dir.path, `${ifname}.key`);
      await writeFile(keyFile, spec.privateKey + '\n', { mode: 0o600 });
      const args = ['set', ifname, 'private-key', keyFile, 'listen-port', String(spec.listenPort)];
      for (const [i, p] of spec.peers.entries()) {
        args.push('peer', p.publicKey, 'allowed-ips', p.allowedIPs.join(','));
        if (p.endpoint) args.push('endpoint', p.endpoint);
        if (p.persistentKeepalive) args.push('persistent-keepalive', String(p.persistentKeepalive));
        if (p.presharedKey) {
          const pskFile = join(dir.path, `${ifname}-${i}.psk`);
          await writeFile(pskFile, p.presharedKey + '\n', { mode: 0o600 });
          args.push('preshared-key', pskFile);
        }
      }
      await ns.exec('wg', args);
      for (const addr of spec.addresses) {
        await ns.exec('ip', [...(addr.includes(':') ? ['-6'] : []), 'addr', 'add', addr, 'dev', ifname, ...(addr.includes(':') ? ['nodad'] : [])]);
      }
      if (spec.mtu !== undefined) await ns.exec('ip', ['link', 'set', ifname, 'mtu', String(spec.mtu)]);
      await ns.exec('ip', ['link', 'set', ifname, 'up']);
      for (const route of spec.routes ?? spec.peers.flatMap((p) => p.allowedIPs)) {
        // replace: a peer's /32 inside the interface's own subnet is already routed there.
        await ns.exec('ip', [...(route.includes(':') ? ['-6'] : []), 'route', 'replace', route, 'dev', ifname]);
      }
      return wg;
    } catch (err) {
      await wg.stop();
      throw err;
    }
  }

  /** `wg show IF latest-handshakes`: unix seconds per peer public key (0: none yet). */
  async latestHandshakes(): Promise<Map<string, number>> {
    const { stdout } = await this.ns.exec('wg', ['show', this.ifname, 'latest-handshakes']);
    const out = new Map<string, number>();
    for (const line of stdout.split('\n')) {
      const [key, when] = line.trim().split(/\s+/);
      if (key && when !== undefined) out.set(key, Number(when));
    }
    return out;
  }

  /** What wireguard-go printed (it logs little unless LOG_LEVEL=debug). */
  get log(): string {
    return this.output.join('');
  }

  /** Stops wireguard-go (its interface goes with it) and removes its socket. Idempotent. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 2_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(this.socketPath, { force: true });
  }

  private async waitForSocket(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    // The socket appears after the TUN device: once it is there, `wg set` works.
    while (!existsSync(this.socketPath)) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`wireguard-go ${this.ifname} exited (${String(this.child.exitCode ?? this.child.signalCode)}): ${this.log.trim()}`);
      }
      if (Date.now() > deadline) throw new Error(`wireguard-go ${this.ifname}: no control socket within ${timeoutMs} ms: ${this.log.trim()}`);
      await sleep(20);
    }
  }
}
