/**
 * Endpoints that follow DNS: a peer configured with a host name is looked
 * up again while it has no handshake younger than 135 s, as wireguard-tools'
 * contrib/reresolve-dns script does from cron (every 30 s: `wg set ...
 * endpoint NAME` for each peer whose latest handshake is older than that).
 *
 * Sans-I/O: the resolver and the (monotonic) clock are injected, and the
 * daemon drives it with tick() from its protocol timer. Rules:
 *
 * - Only peers whose *configured* endpoint host is a name are tracked
 *   (sync() after start and after every reload or control-socket change).
 *   A `wg set ... endpoint IP` puts an IP literal in the effective config,
 *   so the name is no longer looked up, until a reload brings it back.
 * - A peer is looked up when it is due and its latest handshake is at
 *   least `freshHandshakeMs` old (or it never had one). While it has a
 *   younger one, the session is alive and its endpoint, whether the
 *   resolved one or one learned by roaming from an authenticated packet,
 *   is left alone; the peer is checked again when that handshake turns
 *   stale.
 * - Lookups of one peer are at least `intervalMs` apart (plus up to a
 *   quarter of random jitter, so peers started together spread out), and
 *   never more than `maxConcurrent` run at once: dns.lookup is getaddrinfo
 *   on libuv's thread pool (4 threads by default, shared with fs), a slow
 *   resolver holds a thread for seconds and cannot be cancelled, so a
 *   slot is only freed when the lookup really returns.
 * - A result is used only if, when it arrives, the peer is still the same
 *   tracked peer (same host and port) and still has no fresh handshake (a
 *   handshake that completed meanwhile wins). A new address is logged
 *   (peer label, host, old and new address) and handed to `apply` at once.
 * - A failure is logged (one line per failed attempt, so at most once per
 *   interval per peer), never thrown; the endpoint stays as it was.
 */
import { isIP } from 'node:net';
import type { Endpoint } from '../transport/endpoint.js';
import { formatEndpoint } from '../transport/endpoint.js';

/** Looks up a host name (never an IP literal here) for `port`. Rejects when it cannot. */
export type EndpointResolver = (host: string, port: number) => Promise<Endpoint>;

/** What the refresher needs to know about a live peer. */
export interface RefreshPeerView {
  /** Monotonic ms (the refresher's clock) of the latest completed handshake, -Infinity if none. */
  readonly lastHandshakeAt: number;
  /** Where datagrams to the peer go now (configured, resolved or roamed), if anywhere. */
  readonly endpoint: Endpoint | undefined;
  /**
   * The endpoint its config names now. A change being committed can reach
   * the peer before sync() does: a result for another host is then stale.
   */
  readonly configured: { readonly host: string; readonly port: number } | undefined;
}

/** The part of a peer's config the refresher reads. */
export interface RefreshPeerConfig {
  readonly publicKey: string;
  readonly name?: string;
  readonly endpoint?: { readonly host: string; readonly port: number };
}

export interface RefreshLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface EndpointRefresherOptions {
  resolve: EndpointResolver;
  /** Monotonic milliseconds. */
  now: () => number;
  /** [0, 1), for the jitter; Math.random by default. */
  random?: () => number;
  /** Minimum time between two lookups of one peer; 0 turns re-resolution off. */
  intervalMs: number;
  /** A handshake younger than this means the session is alive: no lookup (135 s). */
  freshHandshakeMs: number;
  /** Lookups in flight at most (all peers together). */
  maxConcurrent: number;
  log: RefreshLogger;
  /** The live peer with this public key, or undefined when there is none. */
  peer: (publicKey: string) => RefreshPeerView | undefined;
  /** Sends to `endpoint` from now on (and may start a handshake there). */
  apply: (publicKey: string, endpoint: Endpoint) => void;
  /** How a peer is named in logs (never a key). */
  label: (peer: RefreshPeerConfig) => string;
}

/** Defaults: wireguard-tools' script runs every 30 s and skips peers with a handshake younger than 135 s. */
export const DEFAULT_RESOLVE_INTERVAL_S = 30;
export const FRESH_HANDSHAKE_MS = 135_000;
/** Half of libuv's default thread pool: the other half stays free for fs (config reloads, key files). */
export const MAX_CONCURRENT_LOOKUPS = 2;
/** Jitter: each wait is interval × [1, 1 + JITTER). */
const JITTER = 0.25;

interface Target {
  readonly publicKey: string;
  readonly label: string;
  readonly host: string;
  readonly port: number;
  /** Monotonic ms from which this peer may be looked up (or checked) again. */
  dueAt: number;
  inFlight: boolean;
  /** The latest attempt failed: the next success says so. */
  failing: boolean;
}

/** Whether `host` is an IP literal (an IPv6 one may carry a zone: anything with a colon is not a name). */
function isLiteral(host: string): boolean {
  return isIP(host) !== 0 || host.includes(':');
}

export class EndpointRefresher {
  private readonly opts: EndpointRefresherOptions;
  private readonly random: () => number;
  private readonly targets = new Map<string, Target>();
  private intervalMs: number;
  private inFlightCount = 0;
  /** tick() does nothing before this (the earliest due time seen by the last scan). */
  private scanAt = 0;
  private stopped = false;
  /** Lookups started, for tests and status. */
  lookups = 0;

  constructor(opts: EndpointRefresherOptions) {
    this.opts = opts;
    this.random = opts.random ?? Math.random;
    this.intervalMs = opts.intervalMs;
  }

  /** Peers tracked (configured with a host name). */
  get tracked(): number {
    return this.targets.size;
  }

  /** Lookups running now. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  /**
   * Takes the effective configuration (after start, reload or a control
   * socket change). A peer whose host and port did not change keeps its
   * schedule; a new or changed one was just resolved by the caller, so it
   * is due one interval from now. A lookup still running for a peer that
   * changed or went is ignored when it returns.
   */
  sync(peers: Iterable<RefreshPeerConfig>, intervalMs: number = this.intervalMs): void {
    const now = this.opts.now();
    const intervalChanged = intervalMs !== this.intervalMs;
    this.intervalMs = intervalMs;
    const seen = new Set<string>();
    for (const p of peers) {
      const e = p.endpoint;
      if (e === undefined || isLiteral(e.host)) continue;
      seen.add(p.publicKey);
      const old = this.targets.get(p.publicKey);
      if (old !== undefined && old.host === e.host && old.port === e.port) {
        if (intervalChanged && !old.inFlight) old.dueAt = now + this.wait();
        continue;
      }
      this.targets.set(p.publicKey, {
        publicKey: p.publicKey,
        label: this.opts.label(p),
        host: e.host,
        port: e.port,
        dueAt: now + this.wait(),
        inFlight: false,
        failing: false,
      });
    }
    for (const key of this.targets.keys()) if (!seen.has(key)) this.targets.delete(key);
    this.scanAt = 0;
  }

  /** Starts the lookups that are due, up to the concurrency bound. Cheap when nothing is due. */
  tick(): void {
    if (this.stopped || this.intervalMs <= 0) return;
    const now = this.opts.now();
    if (now < this.scanAt) return;
    let next = Infinity;
    for (const t of this.targets.values()) {
      if (t.inFlight) continue;
      if (now < t.dueAt) {
        if (t.dueAt < next) next = t.dueAt;
        continue;
      }
      const view = this.opts.peer(t.publicKey);
      if (view === undefined) continue;
      const staleAt = view.lastHandshakeAt + this.opts.freshHandshakeMs;
      if (now < staleAt) {
        // The session is alive: look again when its handshake turns stale.
        t.dueAt = staleAt;
        if (staleAt < next) next = staleAt;
        continue;
      }
      if (this.inFlightCount >= this.opts.maxConcurrent) {
        // Due but no slot: the next completion scans again.
        next = now;
        break;
      }
      this.start(t, now);
    }
    this.scanAt = next;
  }

  /** Ignores every later result and starts nothing more. */
  stop(): void {
    this.stopped = true;
  }

  private wait(): number {
    return this.intervalMs * (1 + JITTER * this.random());
  }

  private start(t: Target, now: number): void {
    t.inFlight = true;
    this.inFlightCount++;
    this.lookups++;
    let lookup: Promise<Endpoint>;
    try {
      lookup = this.opts.resolve(t.host, t.port);
    } catch (err) {
      lookup = Promise.reject(err);
    }
    lookup
      .then(
        (e) => this.settle(t, now, e, undefined),
        (err: unknown) => this.settle(t, now, undefined, err),
      )
      // Never fatal: a bug in applying a result is logged, not thrown into the loop.
      .catch((e: unknown) => this.opts.log.warn({ peer: t.label, err: e instanceof Error ? e.message : String(e) }, 'endpoint refresh failed'));
  }

  private settle(t: Target, startedAt: number, resolved: Endpoint | undefined, err: unknown): void {
    this.inFlightCount--;
    t.inFlight = false;
    const now = this.opts.now();
    t.dueAt = now + this.wait();
    if (this.stopped) return;
    // A slot is free: due peers waiting for one go now.
    this.scanAt = 0;
    if (this.targets.get(t.publicKey) !== t || this.intervalMs <= 0) return;
    const retryInS = Math.round((t.dueAt - now) / 1000);
    if (resolved === undefined) {
      t.failing = true;
      this.opts.log.warn(
        { peer: t.label, host: t.host, err: err instanceof Error ? err.message : String(err), retryInS },
        'endpoint not resolved: keeping the current one',
      );
      this.tick();
      return;
    }
    const view = this.opts.peer(t.publicKey);
    if (view !== undefined) this.use(t, view, resolved, startedAt, now);
    this.tick();
  }

  private use(t: Target, view: RefreshPeerView, resolved: Endpoint, startedAt: number, now: number): void {
    if (view.configured?.host !== t.host || view.configured.port !== t.port) return;
    if (t.failing) {
      t.failing = false;
      this.opts.log.info({ peer: t.label, host: t.host, address: formatEndpoint(resolved) }, 'endpoint resolved again');
    }
    if (view.lastHandshakeAt > startedAt || now - view.lastHandshakeAt < this.opts.freshHandshakeMs) {
      // A handshake completed while we looked: that session's endpoint wins.
      this.opts.log.debug({ peer: t.label, host: t.host }, 'endpoint lookup ignored: the session is alive');
      return;
    }
    const cur = view.endpoint;
    if (cur !== undefined && cur.address === resolved.address && cur.port === resolved.port) return;
    this.opts.log.info(
      { peer: t.label, host: t.host, from: cur === undefined ? null : formatEndpoint(cur), to: formatEndpoint(resolved) },
      'endpoint address changed',
    );
    this.opts.apply(t.publicKey, resolved);
  }
}
