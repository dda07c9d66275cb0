/**
 * The composition root: the one place that wires config, crypto, protocol,
 * peer table, TUN device, UDP transport and logging together.
 *
 *   start:  config ─▶ crypto backend ─▶ WireGuardDevice + peers
 *           ─▶ TUN (addresses, MTU, up, routes) ─▶ UDP sockets ─▶ pipeline
 *   SIGHUP: new config ─▶ validate (keep the old one on error) ─▶ diff
 *           ─▶ remove / add / update peers in place ─▶ routes follow
 *   stop:   routes and interface removed, sockets closed
 *
 * Everything that moves packets lives in src/pipeline/; everything that
 * decides about the protocol lives in src/protocol/. This file only builds,
 * reconfigures and tears down.
 */
import { loadConfig, diffConfig, summarizeConfig, type PeerConfig, type TunvpnConfig, type ConfigDiff } from './config/index.js';
import { mergeUapiRequest } from './control/uapi-apply.js';
import { UapiServer } from './control/uapi-server.js';
import { UAPI_EADDRINUSE, UAPI_EINVAL, UapiError, type UapiDevice, type UapiInterfaceState, type UapiSetRequest } from './control/uapi-types.js';
import type { MetricsServer, MetricsSnapshot } from './control/metrics.js';
import { loadCrypto } from './crypto/index.js';
import type { CryptoBackend } from './crypto/types.js';
import { TunvpnError } from './errors.js';
import type { Logger } from './log.js';
import { PeerTable } from './peers/peer-table.js';
import { Pipeline, setEndpoint, type DaemonPeer } from './pipeline/pipeline.js';
import { WireGuardDevice, type ProtocolConstants } from './protocol/device.js';
import { planRoutes } from './routing.js';
import { resolveEndpoint, formatEndpoint } from './transport/endpoint.js';
import { openTransport, type DatagramTransport, type TransportOptions } from './transport/datagram-transport.js';
import { TunDevice, type TunStats } from './tun/tun-device.js';
import { warmTransportPath } from './protocol/warmup.js';
import * as ip from './tun/iproute.js';

export class DaemonError extends TunvpnError {}

export interface DaemonOptions {
  /** Control socket directory (default /var/run/wireguard, where `wg` looks). */
  controlDir?: string;
  /** Called when something outside asks the daemon to stop (its control socket was deleted). */
  onShutdownRequest?: () => void;
  /** Already loaded and validated (the CLI needs its log level first). */
  config: TunvpnConfig;
  /** Where reloads read the config from. */
  configPath: string;
  logger: Logger;
  /** Timer tick period; the protocol's timers are coarse (seconds). */
  tickMs?: number;
}

const monotonicMs = (): number => performance.now();

/**
 * Shortened protocol timers for soak tests: only with NODE_ENV=test and
 * TUNVPN_TEST_REKEY_AFTER_TIME_MS; the other timers keep the defaults'
 * ratios to Rekey-After-Time (Reject 1.5x, Rekey-Attempt 0.75x), and
 * Rekey-Timeout is at most a quarter of it so a rekey is not held back.
 */
export function testTimers(env: NodeJS.ProcessEnv): Partial<ProtocolConstants> | undefined {
  const ms = Number(env.TUNVPN_TEST_REKEY_AFTER_TIME_MS);
  if (env.NODE_ENV !== 'test' || !Number.isFinite(ms) || ms <= 0) return undefined;
  return { rekeyAfterTime: ms, rejectAfterTime: ms * 1.5, rekeyAttemptTime: ms * 0.75, rekeyTimeout: Math.min(5_000, ms / 4) };
}

/**
 * TUN offloads (TSO on reads, coalesced writes) are on unless
 * TUNVPN_TUN_OFFLOAD=off: the switch exists to measure their effect and to
 * rule them out when chasing a problem. See docs/decisions.md.
 */
function tunOffloadWanted(): boolean {
  return process.env.TUNVPN_TUN_OFFLOAD !== 'off';
}

/**
 * Socket buffers sized for bursts; TUNVPN_UDP=dgram forces the portable
 * node:dgram path (tests exercise both; the native one is the default).
 */
function transportOptions(port: number, mtu: number): TransportOptions {
  return { port, maxDatagram: maxDatagramFor(mtu), recvBufferSize: 4 << 20, sendBufferSize: 4 << 20, dgram: process.env.TUNVPN_UDP === 'dgram' };
}

/** The largest transport datagram an MTU makes: header 16 + padding up to 15 + tag 16. */
function maxDatagramFor(mtu: number): number {
  return mtu + 16 + 15 + 16;
}

/** Why a configuration change was not applied. */
type ApplyOutcome = { ok: true } | { ok: false; reason: 'interface-name' | 'restart-needed' | 'port'; message: string };

export class Daemon implements UapiDevice {
  private config: TunvpnConfig;
  private readonly log: Logger;
  private readonly configPath: string;
  private readonly crypto: CryptoBackend;
  private readonly device: WireGuardDevice;
  private readonly table: PeerTable<DaemonPeer>;
  private readonly tun: TunDevice;
  private transport: DatagramTransport;
  private readonly pipeline: Pipeline;
  private routes: string[] = [];
  private ticker: NodeJS.Timeout | undefined;
  private control: UapiServer | undefined;
  private metrics: MetricsServer | undefined;
  private changeQueue: Promise<void> = Promise.resolve();
  private stopped = false;

  private constructor(parts: {
    config: TunvpnConfig;
    log: Logger;
    configPath: string;
    crypto: CryptoBackend;
    device: WireGuardDevice;
    table: PeerTable<DaemonPeer>;
    tun: TunDevice;
    transport: DatagramTransport;
    pipeline: Pipeline;
  }) {
    this.config = parts.config;
    this.log = parts.log;
    this.configPath = parts.configPath;
    this.crypto = parts.crypto;
    this.device = parts.device;
    this.table = parts.table;
    this.tun = parts.tun;
    this.transport = parts.transport;
    this.pipeline = parts.pipeline;
  }

  get interfaceName(): string {
    return this.tun.name;
  }

  get listenPort(): number {
    return this.transport.port;
  }

  /** Builds everything from the config file; on failure undoes what it did. */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const log = opts.logger;
    const config = opts.config;
    for (const w of config.warnings) log.warn({ warning: w }, 'config warning');
    const crypto = await loadCrypto(config.crypto.backend);
    log.info({ backend: crypto.name }, 'crypto backend loaded');

    const constants = testTimers(process.env);
    if (constants) log.warn({ constants }, 'test timers in use (NODE_ENV=test): never in production');
    const device = new WireGuardDevice({
      crypto,
      privateKey: config.interface.privateKey,
      now: monotonicMs,
      wallClock: Date.now,
      constants,
    });
    const table = new PeerTable<DaemonPeer>();

    let tun: TunDevice | undefined;
    let transport: DatagramTransport | undefined;
    let daemon: Daemon | undefined;
    try {
      tun = TunDevice.open({ name: config.interface.name, mtu: config.interface.mtu, offload: tunOffloadWanted() });
      transport = await openTransport(transportOptions(config.interface.listenPort, config.interface.mtu));
      log.info({ transport: transport.kind, tunOffload: tun.offload }, 'UDP transport open');
      const pipeline = new Pipeline({ device, table, tun, transport, log, mtu: config.interface.mtu });
      daemon = new Daemon({ config, log, configPath: opts.configPath, crypto, device, table, tun, transport, pipeline });
      for (const peer of config.peers) await daemon.addPeer(peer);
      await daemon.configureInterface();
      const ifname = tun.name;
      daemon.control = await UapiServer.listen(ifname, daemon, {
        dir: opts.controlDir,
        logger: log,
        // The cross-platform API: a deleted socket file means "shut down".
        onSocketRemoved: () => {
          log.warn({ interface: ifname }, 'control socket removed: shutting down');
          opts.onShutdownRequest?.();
        },
      });
      await daemon.syncMetrics(undefined);
      if (process.env.TUNVPN_WARMUP !== 'off') {
        const w = warmTransportPath(crypto, monotonicMs, Date.now);
        log.info({ packets: w.packets, ms: Math.round(w.ms) }, 'packet path warmed up');
      }
      pipeline.start();
      daemon.ticker = setInterval(() => pipeline.tick(), opts.tickMs ?? 100);
      // Every peer with a known endpoint gets a handshake at once (wg waits
      // for the first packet): after a restart the other side's stale
      // session is replaced within one round trip instead of after
      // Keepalive-Timeout + Rekey-Timeout, and NAT mappings open early.
      for (const p of table.values()) {
        if (p.endpoint) pipeline.initiate(p);
      }
      log.info(
        { interface: tun.name, listenPort: transport.port, peers: config.peers.length },
        `tunvpn up: ${summarizeConfig({ ...config, interface: { ...config.interface, name: tun.name } })}`,
      );
      return daemon;
    } catch (err) {
      await daemon?.control?.close();
      await daemon?.metrics?.close();
      if (transport) await transport.close();
      tun?.close();
      throw err;
    }
  }

  /** Starts, moves or stops the metrics endpoint to match the config. */
  private async syncMetrics(before: TunvpnConfig['metrics']['listen']): Promise<void> {
    const want = this.config.metrics.listen;
    if (before?.host === want?.host && before?.port === want?.port && (this.metrics !== undefined) === (want !== undefined)) return;
    await this.metrics?.close();
    this.metrics = undefined;
    if (want) {
      // prom-client costs several MB of heap: loaded only when metrics are on.
      const { startMetricsServer } = await import('./control/metrics.js');
      this.metrics = await startMetricsServer(want, () => this.metricsSnapshot(), { logger: this.log });
      this.log.info({ listen: `${want.host.includes(':') ? `[${want.host}]` : want.host}:${this.metrics.port}` }, 'metrics endpoint up');
    }
  }

  private metricsSnapshot(): MetricsSnapshot {
    let handshakesStarted = 0;
    let handshakesCompleted = 0;
    const peers = this.table.values().map((p) => {
      handshakesStarted += p.proto.stats.handshakesStarted;
      handshakesCompleted += p.proto.stats.handshakesCompleted;
      return {
        name: p.config.name,
        publicKey: p.config.publicKey,
        rxBytes: p.proto.stats.rxBytes,
        txBytes: p.proto.stats.txBytes,
        rxPackets: p.rxPackets,
        txPackets: p.txPackets,
        lastHandshakeWallMs: p.proto.stats.lastHandshakeWallMs,
      };
    });
    return { peers, drops: this.pipeline.drops, handshakesStarted, handshakesCompleted, cookieRepliesSent: this.pipeline.cookieRepliesSent, tun: this.tun.stats };
  }

  /** UAPI `get`: the running state, as `wg show` reports it. */
  snapshot(): UapiInterfaceState {
    return {
      privateKey: this.config.interface.privateKey,
      listenPort: this.transport.port,
      fwmark: 0,
      peers: this.table.values().map((p) => ({
        publicKey: p.config.publicKeyBytes,
        presharedKey: p.config.presharedKey,
        endpoint: p.endpoint,
        persistentKeepalive: p.config.persistentKeepalive,
        lastHandshakeWallMs: p.proto.stats.lastHandshakeWallMs,
        rxBytes: p.proto.stats.rxBytes,
        txBytes: p.proto.stats.txBytes,
        allowedIPs: this.table.allowedIPsOf(p.config.publicKey),
      })),
    };
  }

  /**
   * UAPI `set` (`wg set`, `wg setconf`): merged into the effective config and
   * applied like a reload; lasts until the next reload or restart.
   */
  apply(req: UapiSetRequest): Promise<void> {
    return this.serialised(async () => {
      const next = mergeUapiRequest(this.config, req, this.device.publicKey);
      const outcome = await this.applyConfig(next, 'configuration changed through the control socket');
      if (!outcome.ok) {
        throw new UapiError(outcome.reason === 'port' ? UAPI_EADDRINUSE : UAPI_EINVAL, outcome.message);
      }
    });
  }

  private async configureInterface(): Promise<void> {
    const name = this.tun.name;
    await ip.setMtu(name, this.config.interface.mtu);
    for (const addr of this.config.interface.addresses) await ip.addAddress(name, addr);
    await ip.setUp(name);
    await this.syncRoutes();
  }

  /** Makes the kernel's routes through our interface match the config. */
  private async syncRoutes(): Promise<void> {
    const wanted = planRoutes(
      this.config.interface.addresses,
      this.table.keys().flatMap((k) => this.table.allowedIPsOf(k)),
    );
    const wantedSet = new Set(wanted);
    const haveSet = new Set(this.routes);
    for (const r of this.routes) {
      if (!wantedSet.has(r)) {
        await ip.delRoute(this.tun.name, r).catch((err: unknown) => this.log.warn({ route: r, err: String(err) }, 'could not remove route'));
      }
    }
    for (const r of wanted) {
      if (!haveSet.has(r)) await ip.addRoute(this.tun.name, r);
    }
    this.routes = wanted;
  }

  private async addPeer(cfg: PeerConfig): Promise<void> {
    const proto = this.device.addPeer({
      publicKey: cfg.publicKeyBytes,
      presharedKey: cfg.presharedKey,
      persistentKeepalive: cfg.persistentKeepalive,
    });
    const peer: DaemonPeer = { config: cfg, proto, endpoint: undefined, endpointKey: undefined, rxPackets: 0, txPackets: 0 };
    if (cfg.endpoint) {
      try {
        setEndpoint(peer, await resolveEndpoint(cfg.endpoint.host, cfg.endpoint.port));
      } catch (err) {
        // A peer whose name does not resolve yet can still reach us (roaming).
        this.log.warn({ peer: peerLabel(cfg), err: (err as Error).message }, 'endpoint not resolved');
      }
    }
    this.table.add(cfg.publicKey, peer, cfg.allowedIPs);
    this.pipeline.registerPeer(peer);
  }

  private removePeer(cfg: PeerConfig): void {
    const peer = this.table.get(cfg.publicKey);
    if (!peer) return;
    this.pipeline.unregisterPeer(peer);
    this.table.remove(cfg.publicKey);
    this.device.removePeer(cfg.publicKeyBytes);
  }

  /** Applies a changed peer in place: its session keeps running. */
  private async updatePeer(after: PeerConfig, fields: readonly string[]): Promise<void> {
    const peer = this.table.get(after.publicKey);
    if (!peer) return;
    peer.config = after;
    if (fields.includes('presharedKey')) peer.proto.setPresharedKey(after.presharedKey);
    if (fields.includes('persistentKeepalive')) peer.proto.setPersistentKeepalive(after.persistentKeepalive);
    if (fields.includes('allowedIPs')) this.table.setAllowedIPs(after.publicKey, after.allowedIPs);
    if (fields.includes('endpoint') && after.endpoint) {
      try {
        setEndpoint(peer, await resolveEndpoint(after.endpoint.host, after.endpoint.port));
      } catch (err) {
        this.log.warn({ peer: peerLabel(after), err: (err as Error).message }, 'endpoint not resolved');
      }
    }
  }

  /**
   * Re-reads the config (SIGHUP). An invalid config is logged and ignored:
   * nothing that runs changes. Returns whether the new config was applied.
   */
  reload(): Promise<boolean> {
    return this.serialised(async () => {
      let next: TunvpnConfig;
      try {
        next = await loadConfig(this.configPath);
      } catch (err) {
        const issues = (err as { issues?: unknown }).issues;
        this.log.error({ err: (err as Error).message, issues }, 'reload rejected: the running configuration is kept');
        return false;
      }
      return (await this.applyConfig(next, 'configuration reloaded')).ok;
    });
  }

  /**
   * Runs configuration changes one at a time: a HUP during a reload, or a
   * control-socket `set` during either, waits for the one before it.
   */
  private serialised<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.changeQueue.then(fn, fn);
    this.changeQueue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** The configuration in force: the file's, plus changes made through the control socket. */
  get effectiveConfig(): TunvpnConfig {
    return this.config;
  }

  /**
   * Makes the running daemon match `next`: peers added, removed and changed
   * in place (sessions of unchanged peers keep running), interface settings,
   * routes. Steps that can fail for outside reasons (binding a new port) run
   * first, so a failure leaves everything as it was.
   */
  private async applyConfig(next: TunvpnConfig, what: string): Promise<ApplyOutcome> {
    if (this.stopped) return { ok: false, reason: 'interface-name', message: 'the daemon is stopping' };
    const diff = diffConfig(this.config, next);
    if (diff.interfaceChanged.includes('name')) {
      const message = 'the interface name cannot change without a restart';
      this.log.error({ fields: ['interface.name'] }, `${what}: rejected, ${message}`);
      return { ok: false, reason: 'interface-name', message };
    }
    const mtuLimit = Math.min(this.tun.slotSize, this.transport.maxDatagram === 0 ? Infinity : this.transport.maxDatagram - 47);
    if (next.interface.mtu > mtuLimit) {
      // Read buffers (TUN slots, UDP slots) are sized at start; growing them
      // means reopening the TUN device, which drops every tunnel.
      const message = `an MTU above ${mtuLimit} needs a restart (read buffers are sized at start)`;
      this.log.error({ fields: ['interface.mtu'] }, `${what}: rejected, ${message}`);
      return { ok: false, reason: 'restart-needed', message };
    }
    let newTransport: DatagramTransport | undefined;
    if (diff.interfaceChanged.includes('listenPort')) {
      try {
        newTransport = await openTransport(transportOptions(next.interface.listenPort, next.interface.mtu));
      } catch (err) {
        const message = (err as Error).message;
        this.log.error({ err: message }, `${what}: rejected, the running configuration is kept`);
        return { ok: false, reason: 'port', message };
      }
    }
    const metricsBefore = this.config.metrics.listen;
    await this.applyInterfaceChanges(next, diff, newTransport);
    for (const p of diff.removed) this.removePeer(p);
    for (const c of diff.changed) await this.updatePeer(c.after, c.fields);
    for (const p of diff.added) await this.addPeer(p);
    this.config = next;
    await this.syncRoutes();
    await this.syncMetrics(metricsBefore).catch((err: unknown) => this.log.error({ err: (err as Error).message }, 'metrics endpoint failed'));
    // New peers with a known endpoint get a handshake at once, as at start.
    for (const p of diff.added) {
      const peer = this.table.get(p.publicKey);
      if (peer?.endpoint) this.pipeline.initiate(peer);
    }
    for (const w of next.warnings) this.log.warn({ warning: w }, 'config warning');
    this.log.info(
      {
        added: diff.added.map(peerLabel),
        removed: diff.removed.map(peerLabel),
        changed: diff.changed.map((c) => ({ peer: peerLabel(c.after), fields: c.fields })),
        unchanged: diff.unchanged.length,
        interfaceChanged: diff.interfaceChanged,
      },
      what,
    );
    return { ok: true };
  }

  private async applyInterfaceChanges(next: TunvpnConfig, diff: ConfigDiff, newTransport: DatagramTransport | undefined): Promise<void> {
    const name = this.tun.name;
    const cur = this.config.interface;
    const nxt = next.interface;
    if (newTransport) {
      const old = this.transport;
      this.transport = newTransport;
      this.pipeline.setTransport(newTransport);
      await old.close();
    }
    if (diff.interfaceChanged.includes('privateKey')) this.device.setPrivateKey(nxt.privateKey);
    if (diff.interfaceChanged.includes('mtu')) {
      await ip.setMtu(name, nxt.mtu);
      this.pipeline.setMtu(nxt.mtu);
    }
    if (diff.interfaceChanged.includes('addresses')) {
      for (const a of cur.addresses) if (!nxt.addresses.includes(a)) await ip.delAddress(name, a).catch(() => undefined);
      for (const a of nxt.addresses) if (!cur.addresses.includes(a)) await ip.addAddress(name, a);
    }
    if (next.log.level !== this.config.log.level) this.log.level = next.log.level;
  }

  /** Removes routes and the interface, closes sockets. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    await this.control?.close();
    await this.metrics?.close();
    this.pipeline.stop();
    for (const r of this.routes) await ip.delRoute(this.tun.name, r).catch(() => undefined);
    this.routes = [];
    await this.transport.close();
    // Closing the TUN fd deletes the (non-persistent) interface and with it
    // its addresses and any routes left.
    this.tun.close();
    for (const p of this.table.values()) this.device.removePeer(p.config.publicKeyBytes);
    this.crypto.memzero(this.config.interface.privateKey);
    this.log.info({ interface: this.tun.name }, 'tunvpn stopped');
  }

  /** A snapshot for status output and tests. */
  status(): DaemonStatus {
    return {
      interface: this.tun.name,
      listenPort: this.transport.port,
      publicKey: Buffer.from(this.device.publicKey).toString('base64'),
      peers: this.table.values().map((p) => ({
        name: p.config.name,
        publicKey: p.config.publicKey,
        endpoint: p.endpoint ? formatEndpoint(p.endpoint) : undefined,
        allowedIPs: p.config.allowedIPs,
        rxBytes: p.proto.stats.rxBytes,
        txBytes: p.proto.stats.txBytes,
        lastHandshakeWallMs: p.proto.stats.lastHandshakeWallMs,
        persistentKeepalive: p.config.persistentKeepalive,
      })),
      drops: { ...this.pipeline.drops },
      packets: { ...this.pipeline.counters },
      cookieRepliesSent: this.pipeline.cookieRepliesSent,
      tun: { offload: this.tun.offload, ...this.tun.stats },
      routes: [...this.routes],
    };
  }
}

export interface DaemonStatus {
  interface: string;
  listenPort: number;
  publicKey: string;
  peers: {
    name: string | undefined;
    publicKey: string;
    endpoint: string | undefined;
    allowedIPs: string[];
    rxBytes: number;
    txBytes: number;
    lastHandshakeWallMs: number;
    persistentKeepalive: number;
  }[];
  drops: Record<string, number>;
  /** Packets moved: read from / written to the TUN device, received / sent on UDP. */
  packets: { tunRx: number; tunTx: number; udpRx: number; udpTx: number; keepalivesRx: number };
  /** Cookie replies sent instead of handshake responses (under load): a handshake flood. */
  cookieRepliesSent: number;
  /** The TUN device's offload state and counters (see TunDevice). */
  tun: { offload: boolean } & TunStats;
  routes: string[];
}

export function peerLabel(p: PeerConfig): string {
  return p.name ?? `${p.publicKey.slice(0, 8)}…`;
}
