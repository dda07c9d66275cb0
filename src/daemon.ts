/**
 * The composition root: the one place that wires config, crypto, protocol,
 * peer table, TUN device, UDP transport and logging together.
 *
 *   start:  config ─▶ crypto backend ─▶ WireGuardDevice + peers
 *           ─▶ TUN (addresses, MTU, up, routes) ─▶ UDP sockets ─▶ pipeline
 *   SIGHUP, control-socket set: one apply path, all or nothing (docs/apply.md)
 *           desired config (file, or effective config + request merged)
 *           ─▶ plan: diff, validate (nothing touched yet)
 *           ─▶ prepare: new port, MTU, addresses, routes; undone on failure
 *           ─▶ commit (cannot fail): transport, key, peers, old routes and
 *              addresses deleted, config swapped, old secrets wiped
 *   stop:   our routes and the interface removed, sockets closed
 *
 * Everything that moves packets lives in src/pipeline/; everything that
 * decides about the protocol lives in src/protocol/. This file only builds,
 * reconfigures and tears down.
 */
import { isIP } from 'node:net';
import { loadConfig, summarizeConfig, type PeerConfig, type TunvpnConfig, type ConfigDiff } from './config/index.js';
import { diffConfigSliced } from './config/diff.js';
import { mergeUapiRequest, wipeConfigSecrets, wipeRequestSecrets } from './control/uapi-apply.js';
import { UapiServer } from './control/uapi-server.js';
import {
  UAPI_EADDRINUSE,
  UAPI_EEXIST,
  UAPI_EINVAL,
  UAPI_ENODEV,
  UapiError,
  type UapiDevice,
  type UapiInterfaceState,
  type UapiPeerState,
  type UapiSetRequest,
} from './control/uapi-types.js';
import type { MetricsServer, MetricsSnapshot } from './control/metrics.js';
import { loadCrypto } from './crypto/index.js';
import type { CryptoBackend } from './crypto/types.js';
import { TunvpnError } from './errors.js';
import type { Logger } from './log.js';
import { PeerTable } from './peers/peer-table.js';
import { Pipeline, setEndpoint, type DaemonPeer } from './pipeline/pipeline.js';
import { WireGuardDevice, type ProtocolConstants } from './protocol/device.js';
import { resolveConstants } from './protocol/constants.js';
import { DEFAULT_RESOLVE_INTERVAL_S, EndpointRefresher, MAX_CONCURRENT_LOOKUPS } from './peers/reresolve.js';
import { Yielder } from './cooperative.js';
import { parseCidr, formatCidr } from './peers/cidr.js';
import { OwnedRoutes, OwnedRules, endpointLoopWarnings, RouteApplyError, RouteConflictError, RuleApplyError, describeRule, planRoutes, planRouting, type PendingRoutes, type PendingRules, type RoutingPlan } from './routing.js';
import { resolveEndpoint, formatEndpoint, type Endpoint } from './transport/endpoint.js';
import { openTransport, type DatagramTransport, type TransportOptions } from './transport/datagram-transport.js';
import { TunDevice, type TunStats } from './tun/tun-device.js';
import { warmTransportPath } from './protocol/warmup.js';
import { HookError, NO_HOOKS, runHookPhase } from './hooks.js';
import * as ip from './tun/iproute.js';

export class DaemonError extends TunvpnError {}

/** errno values (negative, as the control socket sends them) that uapi-types.ts does not name. */
const EACCES = -13;

/**
 * A configuration change refused before anything that runs changed: the
 * errno for the control socket, the field for the log.
 */
export class ApplyError extends TunvpnError {
  readonly errno: number;
  /** The config path of the field at fault, e.g. "interface.listenPort", "peers[3].allowedIPs[0]". */
  readonly field: string | undefined;

  constructor(errno: number, message: string, field?: string, options?: { cause?: unknown }) {
    super('APPLY_REJECTED', message, options);
    this.errno = errno;
    this.field = field;
  }
}

/** What an applied change did, for the one log line that says so. */
export interface ApplySummary {
  added: number;
  removed: number;
  changed: number;
  unchanged: number;
  recreated: number;
  interfaceChanged: string[];
}

export interface DaemonOptions {
  /** Control socket directory (default /var/run/wireguard, where `wg` looks). */
  controlDir?: string;
  /**
   * A listening control socket inherited from systemd (socket activation),
   * already checked to be controlDir/IFNAME.sock; absent, the daemon makes
   * its own.
   */
  controlSocketFd?: number;
  /** Called when something outside asks the daemon to stop (its control socket was deleted). */
  onShutdownRequest?: () => void;
  /** Already loaded and validated (the CLI needs its log level first). */
  config: TunvpnConfig;
  /** Where reloads read the config from. */
  configPath: string;
  logger: Logger;
  /** Timer tick period; the protocol's timers are coarse (seconds). */
  tickMs?: number;
  /**
   * Where the daemon records the policy rules it adds (IFNAME.rules.json),
   * so a start after a crash removes exactly those. Default: TUNVPN_STATE_DIR
   * or /run/tunvpn.
   */
  stateDir?: string;
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
function transportOptions(port: number, mtu: number, fwmark: number): TransportOptions {
  return { port, maxDatagram: maxDatagramFor(mtu), recvBufferSize: 4 << 20, sendBufferSize: 4 << 20, dgram: process.env.TUNVPN_UDP === 'dgram', fwmark };
}

/** The largest transport datagram an MTU makes: header 16 + padding up to 15 + tag 16. */
function maxDatagramFor(mtu: number): number {
  return mtu + 16 + 15 + 16;
}

/** Labels of at most this many peers go into a change's log line (the counts are always there). */
const LOGGED_PEERS = 10;
/** Allowed IPs a removed peer gives up per slice: about 1 us each, so about 1 ms. */
const REMOVE_SLICE = 1000;

/** Everything a change needs, checked and computed before anything is touched. */
interface ApplyPlan {
  next: TunvpnConfig;
  diff: ConfigDiff;
  rebind: boolean;
  wantedRoutes: string[];
  routing: RoutingPlan;
  addressesToAdd: string[];
  addressesToDelete: string[];
  /** Resolved endpoints of added and changed peers, by public key (absent: none, or not resolvable). */
  endpoints: Map<string, Endpoint>;
  yielder: Yielder;
}

interface Prepared {
  transport: DatagramTransport | undefined;
  routes: PendingRoutes;
  rules: PendingRules;
}

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
  private readonly routes: OwnedRoutes;
  private readonly rules: OwnedRules;
  /** The mark the sockets carry: interface.fwmark, or a full tunnel's own (51820). */
  private mark: number;
  /** While a commit runs: the configuration and peers before it, which `get` reports (never a half-applied state). */
  private committing: { config: TunvpnConfig; peers: Map<string, DaemonPeer> } | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private control: UapiServer | undefined;
  private metrics: MetricsServer | undefined;
  private changeQueue: Promise<void> = Promise.resolve();
  /** Looks endpoint host names up again while their peers have no live session (src/peers/reresolve.ts). */
  private refresher: EndpointRefresher | undefined;
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
    stateDir: string;
    mark: number;
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
    this.routes = new OwnedRoutes(parts.tun.name);
    this.rules = new OwnedRules(parts.tun.name, parts.stateDir);
    this.mark = parts.mark;
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
    for (const w of [...config.warnings, ...endpointLoopWarnings(config)]) log.warn({ warning: w }, 'config warning');
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
    // Read once for this start; a reload's hooks apply at the next stop and start.
    const hooks = config.interface.hooks ?? NO_HOOKS;
    try {
      // wg-quick's PreUp: before the interface exists.
      await runHookPhase({ phase: 'preUp', hooks: hooks.preUp, ifname: config.interface.name, log, stopOnFailure: true });
      tun = TunDevice.open({ name: config.interface.name, mtu: config.interface.mtu, offload: tunOffloadWanted() });
      const routing = planRouting(await planRoutesYielding(config, new Yielder()), config.interface.table, config.interface.fwmark);
      transport = await openTransport(transportOptions(config.interface.listenPort, config.interface.mtu, routing.mark));
      log.info({ transport: transport.kind, tunOffload: tun.offload }, 'UDP transport open');
      const pipeline = new Pipeline({ device, table, tun, transport, log, mtu: config.interface.mtu });
      const stateDir = opts.stateDir ?? process.env.TUNVPN_STATE_DIR ?? '/run/tunvpn';
      daemon = new Daemon({ config, log, configPath: opts.configPath, crypto, device, table, tun, transport, pipeline, stateDir, mark: routing.mark });
      const y = new Yielder();
      const endpoints = await daemon.resolveEndpoints(config.peers, y);
      for (const peer of config.peers) await daemon.addPeer(peer, endpoints.get(peer.publicKey), y);
      await daemon.configureInterface();
      const ifname = tun.name;
      daemon.control = await UapiServer.listen(ifname, daemon, {
        dir: opts.controlDir,
        listenFd: opts.controlSocketFd,
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
      daemon.refresher = daemon.makeRefresher(constants);
      pipeline.start();
      const refresher = daemon.refresher;
      daemon.ticker = setInterval(() => {
        pipeline.tick();
        refresher.tick();
      }, opts.tickMs ?? 100);
      // Every peer with a known endpoint gets a handshake at once (wg waits
      // for the first packet): after a restart the other side's stale
      // session is replaced within one round trip instead of after
      // Keepalive-Timeout + Rekey-Timeout, and NAT mappings open early.
      for (const p of table.values()) {
        if (p.endpoint) pipeline.initiate(p);
      }
      // wg-quick's PostUp: the interface, addresses, routes and control socket are up, packets move.
      await runHookPhase({ phase: 'postUp', hooks: hooks.postUp, ifname: tun.name, log, stopOnFailure: true });
      log.info(
        { interface: tun.name, listenPort: transport.port, peers: config.peers.length },
        `tunvpn up: ${summarizeConfig({ ...config, interface: { ...config.interface, name: tun.name } })}`,
      );
      return daemon;
    } catch (err) {
      if (daemon?.ticker) clearInterval(daemon.ticker);
      daemon?.pipeline.stop();
      if (err instanceof HookError) log.error({ hook: `interface.hooks.${err.phase}[${err.index}]` }, 'start abandoned: no further hooks run, the interface is removed');
      await daemon?.control?.close();
      await daemon?.metrics?.close();
      // Rules outlive the interface: delete the ones this start added.
      if (daemon) for (const f of await daemon.rules.removeAll()) log.warn({ rule: f }, 'could not remove rule');
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
    if (this.committing !== undefined) return this.snapshotBefore(this.committing.config, this.committing.peers);
    return {
      privateKey: this.config.interface.privateKey,
      listenPort: this.transport.port,
      // The configured mark, as wireguard-go reports what was set; a full
      // tunnel's own 51820 (with no fwmark set) is in status() and the log.
      fwmark: this.config.interface.fwmark,
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
   * `get` while a large change is being committed (it yields to the event
   * loop, so a `get` can arrive half-way): the state as it was before the
   * change, as if the `get` had come first. wireguard-go makes such a `get`
   * wait; answering the previous state is the same linearisation.
   */
  private snapshotBefore(config: TunvpnConfig, peers: Map<string, DaemonPeer>): UapiInterfaceState {
    const out: UapiPeerState[] = [];
    for (const c of config.peers) {
      const live = peers.get(c.publicKey);
      const cidrs = c.allowedIPs.map((t) => parseCidr(t));
      cidrs.sort(compareCidrText);
      out.push({
        publicKey: c.publicKeyBytes,
        presharedKey: c.presharedKey,
        endpoint: live?.endpoint,
        persistentKeepalive: c.persistentKeepalive,
        lastHandshakeWallMs: live?.proto.stats.lastHandshakeWallMs ?? 0,
        rxBytes: live?.proto.stats.rxBytes ?? 0,
        txBytes: live?.proto.stats.txBytes ?? 0,
        allowedIPs: cidrs.map(formatCidr),
      });
    }
    return { privateKey: config.interface.privateKey, listenPort: this.transport.port, fwmark: config.interface.fwmark, peers: out };
  }

  /**
   * UAPI `set` (`wg set`, `wg setconf`): merged into the effective config and
   * applied like a reload, all or nothing; lasts until the next reload or
   * restart. The request's key buffers are wiped once it is applied or refused.
   */
  apply(req: UapiSetRequest): Promise<void> {
    return this.serialised(async () => {
      const what = 'configuration changed through the control socket';
      try {
        const yielder = new Yielder();
        const merged = await mergeUapiRequest(this.config, req, { publicKeyOf: (k) => this.crypto.publicKey(k), yielder });
        await this.applyConfig(merged.config, { recreated: merged.recreated, yielder, what });
      } catch (err) {
        if (err instanceof ApplyError || err instanceof UapiError) {
          const field = err instanceof ApplyError ? err.field : undefined;
          this.log.warn({ reason: err.message, field, errno: err.errno }, `control socket change rejected: ${err.message}`);
          throw err instanceof UapiError ? err : new UapiError(err.errno, err.message, { cause: err });
        }
        this.log.error({ err: (err as Error).message }, 'control socket change failed');
        throw err;
      } finally {
        wipeRequestSecrets(req);
      }
    });
  }

  private async configureInterface(): Promise<void> {
    const name = this.tun.name;
    await ip.setMtu(name, this.config.interface.mtu);
    for (const addr of this.config.interface.addresses) await ip.addAddress(name, addr);
    await ip.setUp(name);
    const y = new Yielder();
    const routing = planRouting(await planRoutesYielding(this.config, y), this.config.interface.table, this.config.interface.fwmark);
    // A run that crashed (kill -9) left its rules: the interface, and every
    // route through it, went with the process; rules do not.
    for (const r of await this.rules.removeLeftovers(routing.rules)) this.log.warn({ rule: describeRule(r) }, 'removed a rule an earlier run of this interface left behind');
    let pending: PendingRoutes;
    try {
      pending = await this.routes.prepare(routing.routes, y);
    } catch (err) {
      if (err instanceof RouteConflictError || err instanceof RouteApplyError) {
        throw new DaemonError(err.code, `${err.message}${routeField(this.config, err.prefix)}`, { cause: err });
      }
      throw err;
    }
    try {
      await this.rules.commit(await this.rules.prepare(routing.rules));
    } catch (err) {
      await this.routes.undo(pending, y);
      if (err instanceof RuleApplyError) throw new DaemonError(err.code, `${err.message} (interface.table)`, { cause: err });
      throw err;
    }
    await this.routes.commit(pending, y);
    if (this.rules.recordProblem !== undefined) {
      this.log.warn({ record: this.rules.record, err: this.rules.recordProblem }, 'cannot record the policy rules: after a crash only those the next start wants itself are found again');
    }
    this.warnSrcValidMark();
    if (routing.rules.length > 0) this.log.info({ table: routing.rules[0].table, fwmark: routing.mark, rules: routing.rules.map(describeRule) }, 'full tunnel: default routes in their own table');
  }

  /** A full tunnel over IPv4 wants src_valid_mark (as wg-quick sets it); say so once if it could not be set. */
  private warnSrcValidMark(): void {
    const problem = this.rules.srcValidMarkProblem;
    if (problem === undefined) return;
    this.rules.srcValidMarkProblem = undefined;
    this.log.warn(
      { sysctl: 'net.ipv4.conf.all.src_valid_mark', err: problem },
      'cannot set net.ipv4.conf.all.src_valid_mark=1: with a strict reverse-path filter (rp_filter=1) replies to the full tunnel may be dropped; set it in /etc/sysctl.d/',
    );
  }

  /**
   * Re-resolution of endpoint host names: "fresh" is wireguard-tools' 135 s,
   * Rekey-After-Time plus three Rekey-Timeouts (a session that should have
   * been rekeyed and was not after three tries), so shortened test timers
   * shorten it too. A new address is used at once: the next initiation
   * goes there, and one starts now (unless one went less than
   * Rekey-Timeout ago; its retry goes there).
   */
  private makeRefresher(constants: Partial<ProtocolConstants> | undefined): EndpointRefresher {
    const c = resolveConstants(constants);
    const refresher = new EndpointRefresher({
      resolve: resolveEndpoint,
      now: monotonicMs,
      intervalMs: resolveIntervalMs(this.config),
      freshHandshakeMs: c.rekeyAfterTime + 3 * c.rekeyTimeout,
      maxConcurrent: MAX_CONCURRENT_LOOKUPS,
      log: this.log,
      label: (p) => p.name ?? `${p.publicKey.slice(0, 8)}…`,
      peer: (key) => {
        const p = this.table.get(key);
        return p === undefined ? undefined : { lastHandshakeAt: p.proto.lastHandshakeAt, endpoint: p.endpoint, configured: p.config.endpoint };
      },
      apply: (key, endpoint) => {
        const p = this.table.get(key);
        if (p === undefined) return;
        setEndpoint(p, endpoint);
        this.pipeline.initiate(p);
      },
    });
    refresher.sync(this.config.peers);
    return refresher;
  }

  /** A new peer: protocol peer, peer table and pipeline as one. Allowed IPs go in slices (a peer can have 50,000). */
  private async addPeer(cfg: PeerConfig, endpoint: Endpoint | undefined, y: Yielder): Promise<DaemonPeer> {
    const proto = this.device.addPeer({
      publicKey: cfg.publicKeyBytes,
      presharedKey: cfg.presharedKey,
      persistentKeepalive: cfg.persistentKeepalive,
    });
    const peer: DaemonPeer = { config: cfg, proto, endpoint: undefined, endpointKey: undefined, rxPackets: 0, txPackets: 0 };
    if (endpoint) setEndpoint(peer, endpoint);
    this.table.add(cfg.publicKey, peer);
    this.pipeline.registerPeer(peer);
    for (const cidr of cfg.allowedIPs) {
      this.table.addAllowedIP(cfg.publicKey, cidr);
      if (y.due()) await y.pause();
    }
    return peer;
  }

  /** Removes a peer; its allowed IPs leave the peer table in slices first (a peer can have 50,000). */
  private async removePeer(cfg: PeerConfig, y: Yielder): Promise<void> {
    const peer = this.table.get(cfg.publicKey);
    if (!peer) return;
    while (this.table.removeSomeAllowedIPs(cfg.publicKey, REMOVE_SLICE) > 0) await y.pause();
    this.pipeline.unregisterPeer(peer);
    this.table.remove(cfg.publicKey);
    this.device.removePeer(cfg.publicKeyBytes);
  }

  /** Applies a changed peer in place: its session keeps running. */
  private async updatePeer(after: PeerConfig, fields: readonly string[], endpoint: Endpoint | undefined, y: Yielder): Promise<void> {
    const peer = this.table.get(after.publicKey);
    if (!peer) return;
    peer.config = after;
    if (fields.includes('presharedKey')) peer.proto.setPresharedKey(after.presharedKey);
    if (fields.includes('persistentKeepalive')) peer.proto.setPersistentKeepalive(after.persistentKeepalive);
    if (fields.includes('allowedIPs')) {
      // Only the difference, against what the table holds, in slices.
      const want = new Set(after.allowedIPs);
      for (const cidr of this.table.allowedIPsOf(after.publicKey)) {
        if (!want.has(cidr)) this.table.removeAllowedIP(after.publicKey, cidr);
        if (y.due()) await y.pause();
      }
      for (const cidr of after.allowedIPs) {
        this.table.addAllowedIP(after.publicKey, cidr);
        if (y.due()) await y.pause();
      }
    }
    if (fields.includes('endpoint') && endpoint) setEndpoint(peer, endpoint);
  }

  /**
   * Re-reads the config (SIGHUP). An invalid config, or one that cannot be
   * applied, is logged (`reload rejected`) and nothing that runs changes.
   * Returns whether the new config was applied. Never rejects.
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
      try {
        await this.applyConfig(next, { recreated: new Set(), yielder: new Yielder(), what: 'configuration reloaded' });
        // As tunvpn check says it (tens of ms for 20,000 peers: not on the control socket's path).
        for (const w of endpointLoopWarnings(this.config)) this.log.warn({ warning: w }, 'config warning');
        return true;
      } catch (err) {
        if (err instanceof ApplyError) {
          this.log.error({ reason: err.message, field: err.field, errno: err.errno }, `reload rejected: ${err.message}`);
        } else {
          this.log.error({ err: (err as Error).message }, 'reload failed');
        }
        return false;
      }
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

  /** Routes through our interface that the daemon added (and will delete). */
  get ownedRoutes(): string[] {
    return [...this.routes.owned];
  }

  /**
   * Makes the running daemon match `next`, all or nothing (docs/apply.md):
   * plan (pure checks), prepare (reversible steps that can fail for outside
   * reasons), commit (cannot fail). Throws ApplyError when refused; then
   * nothing that runs has changed and `next`'s secrets are wiped. On success
   * `next` is the effective config and the old one's secrets are wiped.
   */
  private async applyConfig(next: TunvpnConfig, opts: { recreated: ReadonlySet<string>; yielder: Yielder; what: string }): Promise<ApplySummary> {
    const t0 = performance.now();
    let plan: ApplyPlan;
    let prepared: Prepared;
    let t1: number;
    let t2: number;
    try {
      plan = await this.plan(next, opts.recreated, opts.yielder);
      t1 = performance.now();
      prepared = await this.prepare(plan);
      t2 = performance.now();
    } catch (err) {
      wipeConfigSecrets(next);
      throw err;
    }
    const summary = await this.commit(plan, prepared, opts.yielder);
    this.refresher?.sync(this.config.peers, resolveIntervalMs(this.config));
    const t3 = performance.now();
    const d = plan.diff;
    this.log.info(
      {
        ...summary,
        peers: {
          added: d.added.slice(0, LOGGED_PEERS).map(peerLabel),
          removed: d.removed.slice(0, LOGGED_PEERS).map(peerLabel),
          changed: d.changed.slice(0, LOGGED_PEERS).map((c) => ({ peer: peerLabel(c.after), fields: c.fields })),
        },
        ms: { plan: Math.round(t1 - t0), prepare: Math.round(t2 - t1), commit: Math.round(t3 - t2) },
        pauses: opts.yielder.pauses,
      },
      opts.what,
    );
    return summary;
  }

  /** Everything that can be checked without side effects; throws ApplyError. */
  private async plan(next: TunvpnConfig, recreated: ReadonlySet<string>, y: Yielder): Promise<ApplyPlan> {
    if (this.stopped) throw new ApplyError(UAPI_ENODEV, 'the daemon is stopping');
    const cur = this.config.interface;
    const nxt = next.interface;
    const diff = await diffConfigSliced(this.config, next, recreated, y);
    if (diff.interfaceChanged.includes('name')) {
      throw new ApplyError(UAPI_EINVAL, 'the interface name cannot change without a restart', 'interface.name');
    }
    const mtuLimit = Math.min(this.tun.slotSize, this.transport.maxDatagram === 0 ? Infinity : this.transport.maxDatagram - 47);
    if (nxt.mtu > mtuLimit) {
      // Read buffers (TUN slots, UDP slots) are sized at start; growing them
      // means reopening the TUN device, which drops every tunnel.
      throw new ApplyError(UAPI_EINVAL, `an MTU above ${mtuLimit} needs a restart (read buffers are sized at start)`, 'interface.mtu');
    }
    if (diff.interfaceChanged.includes('privateKey')) {
      // The config loader and the merge refuse this already; the protocol
      // layer would drop that peer behind the peer table's back.
      const own = Buffer.from(this.crypto.publicKey(nxt.privateKey)).toString('base64');
      const i = next.peers.findIndex((p) => p.publicKey === own);
      if (i >= 0) throw new ApplyError(UAPI_EINVAL, `the private key's public key is peer ${own}'s`, `peers[${i}].publicKey`);
    }
    // listen_port equal to the port we are bound to is no change (so
    // `wg showconf | wg setconf` works after listen_port=0); 0 asks for a
    // new kernel-chosen port unless it already was 0.
    const rebind = nxt.listenPort !== cur.listenPort && (nxt.listenPort === 0 || nxt.listenPort !== this.transport.port);
    const routing = planRouting(await planRoutesYielding(next, y), nxt.table, nxt.fwmark);
    const wantedRoutes = routing.routes;
    if (routing.mark !== 0 && this.transport.kind === 'dgram') {
      const why = nxt.fwmark !== 0 ? `fwmark ${nxt.fwmark}` : `a full tunnel (its sockets need fwmark ${routing.mark})`;
      throw new ApplyError(UAPI_EINVAL, `${why} needs the native UDP binding: node:dgram cannot set SO_MARK`, 'interface.fwmark');
    }
    const addressesToAdd = diff.interfaceChanged.includes('addresses') ? nxt.addresses.filter((a) => !cur.addresses.includes(a)) : [];
    const addressesToDelete = diff.interfaceChanged.includes('addresses') ? cur.addresses.filter((a) => !nxt.addresses.includes(a)) : [];
    const needEndpoint: PeerConfig[] = [...diff.added];
    for (const c of diff.changed) if (c.fields.includes('endpoint')) needEndpoint.push(c.after);
    const endpoints = await this.resolveEndpoints(needEndpoint, y);
    return { next, diff, rebind, wantedRoutes, routing, addressesToAdd, addressesToDelete, endpoints, yielder: y };
  }

  /** IP literals at once, host names looked up together; an unresolvable name is a warning (the peer can still roam to us). */
  private async resolveEndpoints(peers: readonly PeerConfig[], y: Yielder): Promise<Map<string, Endpoint>> {
    const out = new Map<string, Endpoint>();
    const lookups: Promise<void>[] = [];
    for (const p of peers) {
      const e = p.endpoint;
      if (e === undefined) continue;
      const family = isIP(e.host);
      if (family !== 0) out.set(p.publicKey, { address: e.host, port: e.port, family: family === 6 ? 6 : 4 });
      else {
        lookups.push(
          resolveEndpoint(e.host, e.port).then(
            (r) => void out.set(p.publicKey, r),
            (err: unknown) => this.log.warn({ peer: peerLabel(p), err: (err as Error).message }, 'endpoint not resolved'),
          ),
        );
      }
      if (y.due()) await y.pause();
    }
    await Promise.all(lookups);
    return out;
  }

  /** The reversible steps, in order; on a failure the ones done are undone in reverse and ApplyError is thrown. */
  private async prepare(plan: ApplyPlan): Promise<Prepared> {
    const name = this.tun.name;
    const cur = this.config.interface;
    const nxt = plan.next.interface;
    const undo: (() => Promise<unknown>)[] = [];
    try {
      let transport: DatagramTransport | undefined;
      if (plan.rebind) {
        try {
          transport = await openTransport(transportOptions(nxt.listenPort, nxt.mtu, plan.routing.mark));
        } catch (err) {
          throw portError(err, nxt.listenPort);
        }
        const t = transport;
        undo.push(() => t.close());
      }
      const markBefore = this.mark;
      if (!plan.rebind && plan.routing.mark !== this.mark) {
        // SO_MARK on the running sockets: no rebind, sessions and port stay.
        try {
          this.transport.setMark(plan.routing.mark);
        } catch (err) {
          throw new ApplyError(UAPI_EINVAL, `cannot set fwmark ${plan.routing.mark}: ${(err as Error).message}`, 'interface.fwmark', { cause: err });
        }
        undo.push(async () => this.transport.setMark(markBefore));
      }
      if (nxt.mtu !== cur.mtu) {
        await ip.setMtu(name, nxt.mtu).catch((err: unknown) => {
          throw new ApplyError(UAPI_EINVAL, `cannot set MTU ${nxt.mtu}: ${(err as Error).message}`, 'interface.mtu', { cause: err });
        });
        undo.push(() => ip.setMtu(name, cur.mtu));
      }
      for (const a of plan.addressesToAdd) {
        await ip.addAddress(name, a).catch((err: unknown) => {
          const exists = /File exists/i.test(String((err as { stderr?: unknown }).stderr ?? (err as Error).message));
          const i = nxt.addresses.indexOf(a);
          throw new ApplyError(exists ? UAPI_EEXIST : UAPI_EINVAL, `cannot add address ${a}: ${(err as Error).message}`, `interface.addresses[${i}]`, { cause: err });
        });
        undo.push(() => ip.delAddress(name, a));
      }
      let routes: PendingRoutes;
      try {
        routes = await this.routes.prepare(plan.wantedRoutes, plan.yielder);
      } catch (err) {
        if (err instanceof RouteConflictError || err instanceof RouteApplyError) {
          const errno = err instanceof RouteConflictError || err.exists ? UAPI_EEXIST : UAPI_EINVAL;
          throw new ApplyError(errno, err.message, routeFieldPath(plan.next, err.prefix), { cause: err });
        }
        throw new ApplyError(UAPI_EINVAL, `routes: ${(err as Error).message}`, undefined, { cause: err });
      }
      const pendingRoutes = routes;
      undo.push(() => this.routes.undo(pendingRoutes, plan.yielder));
      let rules: PendingRules;
      try {
        rules = await this.rules.prepare(plan.routing.rules);
      } catch (err) {
        if (err instanceof RuleApplyError) throw new ApplyError(err.exists ? UAPI_EEXIST : UAPI_EINVAL, err.message, 'interface.table', { cause: err });
        throw new ApplyError(UAPI_EINVAL, `rules: ${(err as Error).message}`, 'interface.table', { cause: err });
      }
      return { transport, routes, rules };
    } catch (err) {
      for (const step of undo.reverse()) {
        await step().catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'could not undo a prepared step'));
      }
      throw err;
    }
  }

  /**
   * The steps that cannot fail (a failure to delete something no longer
   * wanted is logged, not undone). Yields to the event loop between slices,
   * so the packets of peers that did not change keep moving; a `get`
   * meanwhile answers the state before the change (see snapshot()).
   */
  private async commit(plan: ApplyPlan, prepared: Prepared, y: Yielder): Promise<ApplySummary> {
    const { next, diff } = plan;
    const old = this.config;
    const livePeers = new Map<string, DaemonPeer>();
    // In slices (20,000 peers); nothing has changed yet, so a get meanwhile sees the old state anyway.
    for (const p of this.table.values()) {
      livePeers.set(p.config.publicKey, p);
      if (y.due()) await y.pause();
    }
    this.committing = { config: old, peers: livePeers };
    const metricsBefore = old.metrics.listen;
    /** New peers with a known endpoint: they get a handshake once the change is answered. */
    const initiate: DaemonPeer[] = [];
    try {
      if (prepared.transport) {
        const previous = this.transport;
        this.transport = prepared.transport;
        this.pipeline.setTransport(prepared.transport);
        await previous.close().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'closing the old UDP socket failed'));
      }
      if (diff.interfaceChanged.includes('privateKey')) this.device.setPrivateKey(next.interface.privateKey);
      for (const p of diff.removed) {
        await this.removePeer(p, y);
        if (y.due()) await y.pause();
      }
      for (const c of diff.changed) {
        await this.updatePeer(c.after, c.fields, plan.endpoints.get(c.after.publicKey), y);
        if (y.due()) await y.pause();
      }
      // The old config's buffers are wiped below: every peer that stays
      // must point at its new config.
      for (const p of diff.unchanged) {
        const peer = this.table.get(p.publicKey);
        if (peer) peer.config = p;
        if (y.due()) await y.pause();
      }
      for (const p of diff.added) {
        const peer = await this.addPeer(p, plan.endpoints.get(p.publicKey), y);
        if (peer.endpoint) initiate.push(peer);
        if (y.due()) await y.pause();
      }
      if (next.interface.mtu !== old.interface.mtu) this.pipeline.setMtu(next.interface.mtu);
      for (const failure of await this.routes.commit(prepared.routes, y)) this.log.warn({ route: failure }, 'could not remove route');
      for (const failure of await this.rules.commit(prepared.rules)) this.log.warn({ rule: failure }, 'could not remove rule');
      this.warnSrcValidMark();
      this.mark = plan.routing.mark;
      for (const a of plan.addressesToDelete) {
        await ip.delAddress(this.tun.name, a).catch((err: unknown) => this.log.warn({ address: a, err: (err as Error).message }, 'could not remove address'));
      }
      if (next.log.level !== old.log.level) this.log.level = next.log.level;
      this.config = next;
    } finally {
      this.committing = undefined;
    }
    wipeConfigSecrets(old);
    await this.syncMetrics(metricsBefore).catch((err: unknown) => this.log.error({ err: (err as Error).message }, 'metrics endpoint failed'));
    // New peers with a known endpoint get a handshake at once, as at start;
    // after the change is answered, in slices: an initiation costs about
    // 150 us, 3 s for 20,000 new peers.
    // (Collected as they were added: 20,000 table lookups here were about 5 ms in one go.)
    if (initiate.length > 0) setImmediate(() => void this.initiateInSlices(initiate));
    for (const w of next.warnings) this.log.warn({ warning: w }, 'config warning');
    if (diff.interfaceChanged.includes('hooks')) this.log.info({ field: 'interface.hooks' }, 'interface.hooks changed: the new hooks run at the next stop and start; postUp is not run again');
    return {
      added: diff.added.length,
      removed: diff.removed.length,
      changed: diff.changed.length,
      unchanged: diff.unchanged.length,
      recreated: diff.recreated.length,
      interfaceChanged: diff.interfaceChanged,
    };
  }

  /** Handshakes with new peers, a slice at a time; a peer removed meanwhile is skipped. */
  private async initiateInSlices(peers: readonly DaemonPeer[]): Promise<void> {
    const y = new Yielder();
    for (const peer of peers) {
      if (this.stopped) return;
      if (this.table.get(peer.config.publicKey) === peer) this.pipeline.initiate(peer);
      if (y.due()) await y.pause();
    }
  }

  /** Removes our routes and the interface, closes sockets. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // The effective config's hooks: a reload's changes apply here.
    const hooks = this.config.interface.hooks ?? NO_HOOKS;
    const ifname = this.tun.name;
    // wg-quick's PreDown: the interface still up; a failure does not stop the teardown.
    await runHookPhase({ phase: 'preDown', hooks: hooks.preDown, ifname, log: this.log, stopOnFailure: false });
    if (this.ticker) clearInterval(this.ticker);
    this.refresher?.stop();
    await this.control?.close();
    await this.metrics?.close();
    this.pipeline.stop();
    // Exactly the routes we added (one ip process), never the kernel's or an operator's.
    for (const failure of await this.routes.removeAll(new Yielder())) this.log.debug({ route: failure }, 'route already gone');
    for (const failure of await this.rules.removeAll()) this.log.warn({ rule: failure }, 'could not remove rule');
    await this.transport.close();
    // Closing the TUN fd deletes the (non-persistent) interface and with it
    // its addresses and any routes left.
    this.tun.close();
    for (const p of this.table.values()) this.device.removePeer(p.config.publicKeyBytes);
    wipeConfigSecrets(this.config);
    // wg-quick's PostDown: the interface is gone.
    await runHookPhase({ phase: 'postDown', hooks: hooks.postDown, ifname, log: this.log, stopOnFailure: false });
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
      routes: [...this.routes.owned],
      rules: this.rules.owned.map(describeRule),
      fwmark: this.mark,
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
  /** Owned routes: "prefix" (main table) or "prefix table N". */
  routes: string[];
  /** Owned policy rules (a full tunnel's), as `ip rule` arguments. */
  rules: string[];
  /** The mark the UDP sockets carry (0 = none). */
  fwmark: number;
}

/** dns.resolveInterval in ms (configs built in code may leave it out: the default). */
function resolveIntervalMs(config: TunvpnConfig): number {
  return (config.dns?.resolveInterval ?? DEFAULT_RESOLVE_INTERVAL_S) * 1000;
}

export function peerLabel(p: PeerConfig): string {
  return p.name ?? `${p.publicKey.slice(0, 8)}…`;
}

/** Orders prefixes as the peer table reports them: IPv4 first, then by address, then by length. */
function compareCidrText(a: { family: 4 | 6; bytes: Uint8Array; bits: number }, b: { family: 4 | 6; bytes: Uint8Array; bits: number }): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.bytes.length; i++) if (a.bytes[i] !== b.bytes[i]) return a.bytes[i] - b.bytes[i];
  return a.bits - b.bits;
}

/** The routes a config wants (planRoutes), in slices. */
async function planRoutesYielding(config: TunvpnConfig, y: Yielder): Promise<string[]> {
  const all: string[] = [];
  for (const p of config.peers) {
    // Per prefix: one peer can have 50,000.
    for (const c of p.allowedIPs) {
      all.push(c);
      if (y.due()) await y.pause();
    }
    if (y.due()) await y.pause();
  }
  return planRoutes(config.interface.addresses, all, y);
}

/** The config path of the first allowed IP that wants route `prefix` ("" when none does). */
function routeFieldPath(config: TunvpnConfig, prefix: string | undefined): string | undefined {
  if (prefix === undefined) return undefined;
  for (let i = 0; i < config.peers.length; i++) {
    const j = config.peers[i].allowedIPs.indexOf(prefix);
    if (j >= 0) return `peers[${i}].allowedIPs[${j}]`;
  }
  return undefined;
}

function routeField(config: TunvpnConfig, prefix: string | undefined): string {
  const f = routeFieldPath(config, prefix);
  return f === undefined ? '' : ` (${f})`;
}

/** A failed bind as the errno `wg` shows: EADDRINUSE for a port in use, EACCES for a privileged one. */
function portError(err: unknown, port: number): ApplyError {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  const code = e.code === 'PORT_IN_USE' ? 'EADDRINUSE' : (e.cause?.code ?? e.code);
  const message = `cannot bind UDP port ${port}: ${(err as Error).message}`;
  if (code === 'EADDRINUSE') return new ApplyError(UAPI_EADDRINUSE, message, 'interface.listenPort', { cause: err });
  if (code === 'EACCES' || code === 'EPERM') return new ApplyError(EACCES, message, 'interface.listenPort', { cause: err });
  return new ApplyError(UAPI_EINVAL, message, 'interface.listenPort', { cause: err });
}
