/**
 * Read-only views of a running daemon: the status record (tests, status
 * output), the metrics snapshot (control/metrics.ts) and the UAPI `get`
 * answer (`wg show`), including the one for a `get` that arrives while a
 * change is being committed. Plain functions over the data they read, so
 * the Daemon's methods are one-line delegations and nothing here can
 * change what runs.
 */
import type { TunvpnConfig } from '../config/index.js';
import type { UapiInterfaceState, UapiPeerState } from '../control/uapi-types.js';
import type { MetricsSnapshot } from '../control/metrics.js';
import type { Peer } from '../peers/registry.js';
import { parseCidr, formatCidr } from '../peers/cidr.js';
import { formatEndpoint } from '../transport/endpoint.js';
import type { TunStats } from '../tun/tun-device.js';

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
  /** The UDP transport: which one, and UDP GRO on receive (whether on; coalesced reads and the datagrams cut from them). */
  udp: { transport: string; gro: boolean; groReads: number; groDatagrams: number };
  /** Owned routes: "prefix" (main table) or "prefix table N". */
  routes: string[];
  /** Owned policy rules (a full tunnel's), as `ip rule` arguments. */
  rules: string[];
  /** The mark the UDP sockets carry (0 = none). */
  fwmark: number;
}

/** The pipeline's counters the views report (the Pipeline has them). */
export interface PipelineCounters {
  readonly drops: Readonly<Record<string, number>>;
  readonly counters: DaemonStatus['packets'];
  readonly cookieRepliesSent: number;
}

/** What status() reports besides the peers and counters. */
export interface StatusParts {
  interface: string;
  listenPort: number;
  publicKey: Uint8Array;
  tunOffload: boolean;
  tunStats: Readonly<TunStats>;
  transportKind: string;
  gro: { gro: boolean; reads: number; datagrams: number };
  routes: string[];
  rules: string[];
  fwmark: number;
}

/** A snapshot for status output and tests. */
export function daemonStatus(parts: StatusParts, peers: readonly Peer[], pipeline: PipelineCounters): DaemonStatus {
  return {
    interface: parts.interface,
    listenPort: parts.listenPort,
    publicKey: Buffer.from(parts.publicKey).toString('base64'),
    peers: peers.map((p) => ({
      name: p.config.name,
      publicKey: p.config.publicKey,
      endpoint: p.endpoint ? formatEndpoint(p.endpoint) : undefined,
      allowedIPs: p.config.allowedIPs,
      rxBytes: p.stats.rxBytes,
      txBytes: p.stats.txBytes,
      lastHandshakeWallMs: p.stats.lastHandshakeWallMs,
      persistentKeepalive: p.config.persistentKeepalive,
    })),
    drops: { ...pipeline.drops },
    packets: { ...pipeline.counters },
    cookieRepliesSent: pipeline.cookieRepliesSent,
    tun: { offload: parts.tunOffload, ...parts.tunStats },
    udp: { transport: parts.transportKind, gro: parts.gro.gro, groReads: parts.gro.reads, groDatagrams: parts.gro.datagrams },
    routes: parts.routes,
    rules: parts.rules,
    fwmark: parts.fwmark,
  };
}

/** What the metrics endpoint reads at each scrape. */
export function metricsSnapshot(peers: readonly Peer[], pipeline: PipelineCounters, tunStats: Readonly<TunStats>): MetricsSnapshot {
  let handshakesStarted = 0;
  let handshakesCompleted = 0;
  const out = peers.map((p) => {
    handshakesStarted += p.stats.handshakesStarted;
    handshakesCompleted += p.stats.handshakesCompleted;
    return {
      name: p.config.name,
      publicKey: p.config.publicKey,
      rxBytes: p.stats.rxBytes,
      txBytes: p.stats.txBytes,
      rxPackets: p.stats.rxPackets,
      txPackets: p.stats.txPackets,
      lastHandshakeWallMs: p.stats.lastHandshakeWallMs,
    };
  });
  return { peers: out, drops: pipeline.drops, handshakesStarted, handshakesCompleted, cookieRepliesSent: pipeline.cookieRepliesSent, tun: tunStats };
}

/** UAPI `get`: the running state, as `wg show` reports it. */
export function uapiSnapshot(
  config: TunvpnConfig,
  listenPort: number,
  peers: readonly Peer[],
  allowedIPsOf: (publicKey: string) => string[],
): UapiInterfaceState {
  return {
    privateKey: config.interface.privateKey,
    listenPort,
    // The configured mark, as wireguard-go reports what was set; a full
    // tunnel's own 51820 (with no fwmark set) is in status() and the log.
    fwmark: config.interface.fwmark,
    peers: peers.map((p) => ({
      publicKey: p.config.publicKeyBytes,
      presharedKey: p.config.presharedKey,
      endpoint: p.endpoint,
      persistentKeepalive: p.config.persistentKeepalive,
      lastHandshakeWallMs: p.stats.lastHandshakeWallMs,
      rxBytes: p.stats.rxBytes,
      txBytes: p.stats.txBytes,
      allowedIPs: allowedIPsOf(p.config.publicKey),
    })),
  };
}

/**
 * `get` while a large change is being committed (it yields to the event
 * loop, so a `get` can arrive half-way): the state as it was before the
 * change, as if the `get` had come first. wireguard-go makes such a `get`
 * wait; answering the previous state is the same linearisation.
 */
export function snapshotBefore(config: TunvpnConfig, peers: { get(publicKey: string): Peer | undefined }, listenPort: number): UapiInterfaceState {
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
      lastHandshakeWallMs: live?.stats.lastHandshakeWallMs ?? 0,
      rxBytes: live?.stats.rxBytes ?? 0,
      txBytes: live?.stats.txBytes ?? 0,
      allowedIPs: cidrs.map(formatCidr),
    });
  }
  return { privateKey: config.interface.privateKey, listenPort, fwmark: config.interface.fwmark, peers: out };
}

/** Orders prefixes as the peer table reports them: IPv4 first, then by address, then by length. */
export function compareCidrText(a: { family: 4 | 6; bytes: Uint8Array; bits: number }, b: { family: 4 | 6; bytes: Uint8Array; bits: number }): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.bytes.length; i++) if (a.bytes[i] !== b.bytes[i]) return a.bytes[i] - b.bytes[i];
  return a.bits - b.bits;
}
