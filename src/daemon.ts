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
 * reconfigures and tears down, in order; the parts it orders have a file
 * each: src/daemon/network.ts (MTU, addresses, routes, rules),
 * src/daemon/views.ts (status, metrics, UAPI get), src/runtime-options.ts
 * (every environment switch, read once at start), src/constants.ts.
 */
import { isIP } from 'node:net';
import { loadConfigMemo, summarizeConfig, type ConfigMemo, type PeerConfig, type TunvpnConfig, type ConfigDiff } from './config/index.js';
import { diffConfigSliced } from './config/diff.js';
import { mergeUapiRequest, wipeConfigSecrets, wipeRequestSecrets } from './control/uapi-apply.js';
import { UapiServer } from './control/uapi-server.js';
import { UAPI_EADDRINUSE, UAPI_EINVAL, UAPI_ENODEV, UapiError, type UapiDevice, type UapiInterfaceState, type UapiSetRequest } from './control/uapi-types.js';
import type { MetricsServer, MetricsSnapshot } from './control/metrics.js';
import { loadCrypto } from './crypto/index.js';
import type { CryptoBackend } from './crypto/types.js';
import type { Logger } from './log.js';
import { PeerRegistry, type Peer } from './peers/registry.js';
import { Pipeline } from './pipeline/pipeline.js';
import { WireGuardDevice, type ProtocolConstants } from './protocol/device.js';
import { resolveConstants } from './protocol/constants.js';
import { DEFAULT_RESOLVE_INTERVAL_S, EndpointRefresher, MAX_CONCURRENT_LOOKUPS } from './peers/reresolve.js';
import { Yielder } from './cooperative.js';
import { resolveEndpoint, type Endpoint } from './transport/endpoint.js';
import { openTransport, type DatagramTransport, type TransportOptions } from './transport/datagram-transport.js';
import { TunDevice } from './tun/tun-device.js';
import { warmTransportPath } from './protocol/warmup.js';
import { warmPipeline } from './pipeline/warmup.js';
import { HookError, NO_HOOKS, runHookPhase } from './hooks.js';
import { LOGGED_PEERS, SOCKET_BUFFER_BYTES, TICK_MS, TRANSPORT_OVERHEAD } from './constants.js';
import { readRuntimeOptions, type RuntimeOptions } from './runtime-options.js';
import { ApplyError } from './daemon/apply-error.js';
import { NetworkSync, endpointLoopWarnings, planConfigRouting, type NetworkPlan, type PreparedNetwork } from './daemon/network.js';
import { daemonStatus, metricsSnapshot, snapshotBefore, uapiSnapshot, type DaemonStatus } from './daemon/views.js';

export { ApplyError } from './daemon/apply-error.js';
export type { DaemonStatus } from './daemon/views.js';

/** errno values (negative, as the control socket sends them) that uapi-types.ts does not name. */
const EACCES = -13;

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
  /** The memo loadConfigMemo gave with `config`, so that the first reload is incremental too. */
  configMemo?: ConfigMemo;
  logger: Logger;
  /** Timer tick period; the protocol's timers are coarse (seconds). Default TICK_MS. */
  tickMs?: number;
  /**
   * Where the daemon records the policy rules it adds (IFNAME.rules.json),
   * so a start after a crash removes exactly those. Default: the runtime
   * options' stateDir (TUNVPN_STATE_DIR or /run/tunvpn).
   */
  stateDir?: string;
  /** The environment switches (src/runtime-options.ts); default: read from process.env at start. */
  runtime?: RuntimeOptions;
}

const monotonicMs = (): number => performance.now();

/**
 * Socket buffers sized for bursts (SOCKET_BUFFER_BYTES); `dgram`
 * (TUNVPN_UDP=dgram) forces the portable node:dgram path (tests exercise
 * both; the native one is the default).
 */
function transportOptions(port: number, mtu: number, fwmark: number, runtime: RuntimeOptions): TransportOptions {
  return {
    port,
    maxDatagram: maxDatagramFor(mtu),
    recvBufferSize: SOCKET_BUFFER_BYTES,
    sendBufferSize: SOCKET_BUFFER_BYTES,
    dgram: runtime.udpDgram,
    gro: runtime.udpGro,
    fwmark,
  };
}

/** The largest transport datagram an MTU makes: header 16 + padding up to 15 + tag 16. */
function maxDatagramFor(mtu: number): number {
  return mtu + TRANSPORT_OVERHEAD;
}

/** Everything a change needs, checked and computed before anything is touched. */
interface ApplyPlan extends NetworkPlan {
  next: TunvpnConfig;
  diff: ConfigDiff;
  rebind: boolean;
  /** Resolved endpoints of added and changed peers, by public key (absent: none, or not resolvable). */
  endpoints: Map<string, Endpoint>;
  yielder: Yielder;
}

interface Prepared extends PreparedNetwork {
  transport: DatagramTransport | undefined;
}

export class Daemon implements UapiDevice {
  private config: TunvpnConfig;
  private readonly log: Logger;
  private readonly configPath: string;
  private readonly crypto: CryptoBackend;
  private readonly device: WireGuardDevice<Peer>;
  /** Every peer, protocol state and allowed IPs as one (src/peers/registry.ts). */
  private readonly peers: PeerRegistry;
  private readonly tun: TunDevice;
  private transport: DatagramTransport;
  private readonly pipeline: Pipeline;
  /** MTU, addresses, routes and policy rules (src/daemon/network.ts). */
  private readonly net: NetworkSync;
  /** The environment switches, read once at start. */
  private readonly runtime: RuntimeOptions;
  /** The mark the sockets carry: interface.fwmark, or a full tunnel's own (51820). */
  private mark: number;
  /** While a commit runs: the configuration and peers before it, which `get` reports (never a half-applied state). */
  private committing: { config: TunvpnConfig; peers: { get(publicKey: string): Peer | undefined } } | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private control: UapiServer | undefined;
  private metrics: MetricsServer | undefined;
  private changeQueue: Promise<void> = Promise.resolve();
  /** Looks endpoint host names up again while their peers have no live session (src/peers/reresolve.ts). */
  private refresher: EndpointRefresher | undefined;
  private stopped = false;
  /** The memo of the last reloaded (or started) config file's load: the next reload checks only the peers that changed. */
  private configMemo: ConfigMemo | undefined;

  private constructor(parts: {
    config: TunvpnConfig;
    log: Logger;
    configPath: string;
    crypto: CryptoBackend;
    peers: PeerRegistry;
    tun: TunDevice;
    transport: DatagramTransport;
    pipeline: Pipeline;
    stateDir: string;
    mark: number;
    runtime: RuntimeOptions;
  }) {
    this.config = parts.config;
    this.log = parts.log;
    this.configPath = parts.configPath;
    this.crypto = parts.crypto;
    this.device = parts.peers.device;
    this.peers = parts.peers;
    this.tun = parts.tun;
    this.transport = parts.transport;
    this.pipeline = parts.pipeline;
    this.net = new NetworkSync(parts.tun.name, parts.stateDir, parts.log);
    this.mark = parts.mark;
    this.runtime = parts.runtime;
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
    // Every environment switch, read once here (src/runtime-options.ts).
    const runtime = opts.runtime ?? readRuntimeOptions();
    const crypto = await loadCrypto(config.crypto.backend);
    log.info({ backend: crypto.name }, 'crypto backend loaded');

    // Before any real device, peer or pipeline exists: objects made after the
    // warm-up get the field types it settled, not maps it then deprecates.
    if (runtime.warmup) {
      const w = warmTransportPath(crypto, monotonicMs, Date.now);
      log.info({ packets: w.packets, ms: Math.round(w.ms) }, 'packet path warmed up');
    }
    if (runtime.warmupPipeline) {
      const w = await warmPipeline({ crypto, log, mtu: config.interface.mtu, now: monotonicMs, wallClock: Date.now });
      log.info({ packets: w.packets, ms: Math.round(w.ms) }, 'pipeline warmed up');
    }

    const constants = runtime.testTimers;
    if (constants) log.warn({ constants }, 'test timers in use (NODE_ENV=test): never in production');
    const device = new WireGuardDevice<Peer>({
      crypto,
      privateKey: config.interface.privateKey,
      now: monotonicMs,
      wallClock: Date.now,
      constants,
    });
    const peers = new PeerRegistry(device);

    let tun: TunDevice | undefined;
    let transport: DatagramTransport | undefined;
    let daemon: Daemon | undefined;
    // Read once for this start; a reload's hooks apply at the next stop and start.
    const hooks = config.interface.hooks ?? NO_HOOKS;
    try {
      // wg-quick's PreUp: before the interface exists.
      await runHookPhase({ phase: 'preUp', hooks: hooks.preUp, ifname: config.interface.name, log, stopOnFailure: true });
      tun = TunDevice.open({ name: config.interface.name, mtu: config.interface.mtu, offload: runtime.tunOffload });
      const routing = await planConfigRouting(config, new Yielder());
      transport = await openTransport(transportOptions(config.interface.listenPort, config.interface.mtu, routing.mark, runtime));
      log.info({ transport: transport.kind, tunOffload: tun.offload, udpGro: transport.groStats().gro }, 'UDP transport open');
      const pipeline = new Pipeline({ peers, tun, transport, log, mtu: config.interface.mtu });
      const stateDir = opts.stateDir ?? runtime.stateDir;
      daemon = new Daemon({ config, log, configPath: opts.configPath, crypto, peers, tun, transport, pipeline, stateDir, mark: routing.mark, runtime });
      daemon.configMemo = opts.configMemo;
      const y = new Yielder();
      const endpoints = await daemon.resolveEndpoints(config.peers, y);
      for (const peer of config.peers) await peers.add(peer, endpoints.get(peer.publicKey), y);
      await daemon.net.configureInterface(daemon.config, new Yielder());
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
      daemon.refresher = daemon.makeRefresher(constants);
      pipeline.start();
      const refresher = daemon.refresher;
      daemon.ticker = setInterval(() => {
        pipeline.tick();
        refresher.tick();
      }, opts.tickMs ?? TICK_MS);
      // Every peer with a known endpoint gets a handshake at once (wg waits
      // for the first packet): after a restart the other side's stale
      // session is replaced within one round trip instead of after
      // Keepalive-Timeout + Rekey-Timeout, and NAT mappings open early.
      for (const p of peers.values()) {
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
      if (err instanceof HookError)
        log.error({ hook: `interface.hooks.${err.phase}[${err.index}]` }, 'start abandoned: no further hooks run, the interface is removed');
      await daemon?.control?.close();
      await daemon?.metrics?.close();
      // Rules outlive the interface: delete the ones this start added.
      if (daemon) await daemon.net.removeRules();
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
    return metricsSnapshot(this.peers.values(), this.pipeline, this.tun.stats);
  }

  /** UAPI `get`: the running state, as `wg show` reports it; mid-commit, the state before the change (views.ts snapshotBefore). */
  snapshot(): UapiInterfaceState {
    if (this.committing !== undefined) return snapshotBefore(this.committing.config, this.committing.peers, this.transport.port);
    return uapiSnapshot(this.config, this.transport.port, this.peers.values(), (key) => this.peers.allowedIPsOf(key));
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
        const p = this.peers.get(key);
        return p === undefined ? undefined : { lastHandshakeAt: p.proto.lastHandshakeAt, endpoint: p.endpoint, configured: p.config.endpoint };
      },
      apply: (key, endpoint) => {
        const p = this.peers.get(key);
        if (p === undefined) return;
        p.setEndpoint(endpoint);
        this.pipeline.initiate(p);
      },
    });
    refresher.sync(this.config.peers);
    return refresher;
  }

  /**
   * Re-reads the config (SIGHUP). An invalid config, or one that cannot be
   * applied, is logged (`reload rejected`) and nothing that runs changes.
   * Returns whether the new config was applied. Never rejects.
   */
  reload(): Promise<boolean> {
    return this.serialised(async () => {
      let next: TunvpnConfig;
      let memo: ConfigMemo | undefined;
      try {
        ({ config: next, memo } = await loadConfigMemo(this.configPath, { memo: this.configMemo }));
      } catch (err) {
        const issues = (err as { issues?: unknown }).issues;
        this.log.error({ err: (err as Error).message, issues }, 'reload rejected: the running configuration is kept');
        return false;
      }
      try {
        await this.applyConfig(next, { recreated: new Set(), yielder: new Yielder(), what: 'configuration reloaded' });
        // A refused change keeps the memo it had (spent if the load used it: the next load is then a full one).
        this.configMemo = memo;
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

  /** Routes through our interface that the daemon added (and will delete). */
  get ownedRoutes(): string[] {
    return this.net.ownedRoutes;
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
    const intervalBefore = resolveIntervalMs(this.config);
    const summary = await this.commit(plan, prepared, opts.yielder);
    // The refresher tracks the peers whose endpoint is a host name: when
    // the change touched none of them and the interval stays, a sync
    // (a pass over every peer) would change nothing.
    const interval = resolveIntervalMs(this.config);
    if (interval !== intervalBefore || touchesHostNames(plan.diff)) this.refresher?.sync(this.config.peers, interval);
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
        // 'delta': the routes were planned from the diff; 'full': every prefix again (docs/apply.md section 4).
        routePlan: plan.routes.kind,
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
    const mtuLimit = Math.min(this.tun.slotSize, this.transport.maxDatagram === 0 ? Infinity : this.transport.maxDatagram - TRANSPORT_OVERHEAD);
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
    const routing = await this.net.planRoutes(this.config, next, diff, y);
    if (routing.mark !== 0 && this.transport.kind === 'dgram') {
      const why = nxt.fwmark !== 0 ? `fwmark ${nxt.fwmark}` : `a full tunnel (its sockets need fwmark ${routing.mark})`;
      throw new ApplyError(UAPI_EINVAL, `${why} needs the native UDP binding: node:dgram cannot set SO_MARK`, 'interface.fwmark');
    }
    const addressesToAdd = diff.interfaceChanged.includes('addresses') ? nxt.addresses.filter((a) => !cur.addresses.includes(a)) : [];
    const addressesToDelete = diff.interfaceChanged.includes('addresses') ? cur.addresses.filter((a) => !nxt.addresses.includes(a)) : [];
    const needEndpoint: PeerConfig[] = [...diff.added];
    for (const c of diff.changed) if (c.fields.includes('endpoint')) needEndpoint.push(c.after);
    const endpoints = await this.resolveEndpoints(needEndpoint, y);
    return { next, diff, rebind, ...routing, addressesToAdd, addressesToDelete, endpoints, yielder: y };
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
    const nxt = plan.next.interface;
    const undo: (() => Promise<unknown>)[] = [];
    try {
      let transport: DatagramTransport | undefined;
      if (plan.rebind) {
        try {
          transport = await openTransport(transportOptions(nxt.listenPort, nxt.mtu, plan.mark, this.runtime));
        } catch (err) {
          throw portError(err, nxt.listenPort);
        }
        const t = transport;
        undo.push(() => t.close());
      }
      const markBefore = this.mark;
      if (!plan.rebind && plan.mark !== this.mark) {
        // SO_MARK on the running sockets: no rebind, sessions and port stay.
        try {
          this.transport.setMark(plan.mark);
        } catch (err) {
          throw new ApplyError(UAPI_EINVAL, `cannot set fwmark ${plan.mark}: ${(err as Error).message}`, 'interface.fwmark', { cause: err });
        }
        undo.push(async () => this.transport.setMark(markBefore));
      }
      // MTU, addresses, routes, rules: undone by NetworkSync itself if one fails, then ours above.
      const network = await this.net.prepare(this.config, plan.next, plan, plan.yielder);
      return { transport, ...network };
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
    // A get during the commit answers the state before it. Every peer of
    // the old config that stays (changed or unchanged) is the same Peer
    // object throughout, updated in place; only the removed ones (a
    // recreated one among them: its key gets a new Peer) leave the
    // registry, so they are kept aside here, and the rest is looked up
    // live if a get comes: no map of every peer per change (10,000 Map
    // inserts for a reload that moves one prefix).
    const leaving = new Map<string, Peer>();
    for (const p of diff.removed) {
      const peer = this.peers.get(p.publicKey);
      if (peer !== undefined) leaving.set(p.publicKey, peer);
      if (y.due()) await y.pause();
    }
    const peersBefore = { get: (key: string): Peer | undefined => leaving.get(key) ?? this.peers.get(key) };
    this.committing = { config: old, peers: peersBefore };
    const metricsBefore = old.metrics.listen;
    /** New peers with a known endpoint: they get a handshake once the change is answered. */
    const initiate: Peer[] = [];
    try {
      if (prepared.transport) {
        const previous = this.transport;
        this.transport = prepared.transport;
        this.pipeline.setTransport(prepared.transport);
        await previous.close().catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'closing the old UDP socket failed'));
      }
      if (diff.interfaceChanged.includes('privateKey')) this.peers.setPrivateKey(next.interface.privateKey);
      for (const p of diff.removed) {
        await this.peers.remove(p.publicKey, y);
        if (y.due()) await y.pause();
      }
      for (const c of diff.changed) {
        await this.peers.update(c.after, c.fields, plan.endpoints.get(c.after.publicKey), y);
        if (y.due()) await y.pause();
      }
      // The old config's buffers are wiped below: every peer that stays
      // must point at its new config. A PeerConfig the new config shares
      // with the old one at the same index (an incremental load's reused
      // peer) is already what its Peer points at, so only the others are
      // looked up: a reload that moves one prefix of 10,000 peers looks up
      // one, not 10,000 (about 5 ms).
      const was = old.peers;
      for (let i = 0; i < next.peers.length; i++) {
        const p = next.peers[i];
        if (i < was.length && was[i] === p) continue;
        const peer = this.peers.get(p.publicKey);
        if (peer !== undefined && peer.config !== p) peer.config = p;
        if (y.due()) await y.pause();
      }
      for (const p of diff.added) {
        const peer = await this.peers.add(p, plan.endpoints.get(p.publicKey), y);
        if (peer.endpoint) initiate.push(peer);
        if (y.due()) await y.pause();
      }
      if (next.interface.mtu !== old.interface.mtu) this.pipeline.setMtu(next.interface.mtu);
      await this.net.commitRouting(prepared, y);
      this.mark = plan.mark;
      await this.net.deleteAddresses(plan.addressesToDelete);
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
    if (diff.interfaceChanged.includes('hooks'))
      this.log.info({ field: 'interface.hooks' }, 'interface.hooks changed: the new hooks run at the next stop and start; postUp is not run again');
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
  private async initiateInSlices(peers: readonly Peer[]): Promise<void> {
    const y = new Yielder();
    for (const peer of peers) {
      if (this.stopped) return;
      if (this.peers.get(peer.config.publicKey) === peer) this.pipeline.initiate(peer);
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
    // Exactly the routes we added (one ip process), never the kernel's or an operator's; our rules.
    await this.net.removeAll(new Yielder());
    await this.transport.close();
    // Closing the TUN fd deletes the (non-persistent) interface and with it
    // its addresses and any routes left.
    this.tun.close();
    this.peers.wipeAll();
    wipeConfigSecrets(this.config);
    // wg-quick's PostDown: the interface is gone.
    await runHookPhase({ phase: 'postDown', hooks: hooks.postDown, ifname, log: this.log, stopOnFailure: false });
    this.log.info({ interface: this.tun.name }, 'tunvpn stopped');
  }

  /** A snapshot for status output and tests. */
  status(): DaemonStatus {
    return daemonStatus(
      {
        interface: this.tun.name,
        listenPort: this.transport.port,
        publicKey: this.device.publicKey,
        tunOffload: this.tun.offload,
        tunStats: this.tun.stats,
        transportKind: this.transport.kind,
        gro: this.transport.groStats(),
        routes: this.net.ownedRoutes,
        rules: this.net.ownedRules,
        fwmark: this.mark,
      },
      this.peers.values(),
      this.pipeline,
    );
  }
}

/**
 * Whether a change adds, removes or changes a peer whose endpoint (before
 * or after) is a host name: the peers the refresher tracks. (It takes a
 * host with a colon as a literal; counting one here only costs a sync.)
 */
function touchesHostNames(diff: ConfigDiff): boolean {
  const named = (p: PeerConfig): boolean => p.endpoint !== undefined && isIP(p.endpoint.host) === 0;
  return diff.added.some(named) || diff.removed.some(named) || diff.changed.some((c) => named(c.before) || named(c.after));
}

/** dns.resolveInterval in ms (configs built in code may leave it out: the default). */
function resolveIntervalMs(config: TunvpnConfig): number {
  return (config.dns?.resolveInterval ?? DEFAULT_RESOLVE_INTERVAL_S) * 1000;
}

export function peerLabel(p: PeerConfig): string {
  return p.name ?? `${p.publicKey.slice(0, 8)}…`;
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
