/**
 * Prometheus metrics, off by default. The data path only bumps plain
 * numbers; everything here is read from a snapshot taken once per scrape,
 * so a scrape costs one provider() call and nothing happens between scrapes.
 * A registry of our own (never prom-client's global one) keeps two daemons
 * in one process, or tests, from mixing their numbers.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { TunStats } from '../tun/tun-device.js';

export interface PeerMetricsSnapshot {
  /** The configured name, used as the `peer` label when set. */
  name?: string;
  /** Base64; the `peer` label when there is no name. */
  publicKey: string;
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  /** Wall clock, ms since the epoch; 0 = never. */
  lastHandshakeWallMs: number;
}

export interface MetricsSnapshot {
  peers: readonly PeerMetricsSnapshot[];
  /** Dropped packets by reason (e.g. the pipeline's DropCounters); every reason, zeros included. */
  drops: Readonly<Record<string, number>>;
  handshakesStarted: number;
  handshakesCompleted: number;
  /** Cookie replies sent instead of handshake responses (under load); absent = 0. */
  cookieRepliesSent?: number;
  /** TUN offloads: super-packets read (TSO) and written (coalesced), and the packets they held. */
  tun: Pick<TunStats, 'tsoPackets' | 'tsoSegments' | 'groWrites' | 'groPackets'>;
}

export type MetricsProvider = () => MetricsSnapshot;

function peerLabel(p: PeerMetricsSnapshot): string {
  return p.name !== undefined && p.name !== '' ? p.name : p.publicKey;
}

export interface TunvpnMetrics {
  registry: Registry;
  /** The exposition text for one scrape. */
  scrape(): Promise<string>;
  contentType: string;
}

/** A registry with tunvpn's metrics (read from `provider` at scrape time) and the process metrics. */
export function createMetrics(provider: MetricsProvider): TunvpnMetrics {
  const registry = new Registry();
  let current: MetricsSnapshot | undefined;
  // Every collect() of one scrape runs within one registry.metrics() call; they share one snapshot.
  const snap = (): MetricsSnapshot => (current ??= provider());

  const perPeerCounter = (name: string, help: string, pick: (p: PeerMetricsSnapshot) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['peer'],
      registers: [registry],
      collect() {
        this.reset();
        for (const p of snap().peers) this.inc({ peer: peerLabel(p) }, Math.max(0, pick(p)));
      },
    });
  perPeerCounter('tunvpn_peer_receive_bytes_total', 'Bytes received from the peer (transport payload, after decryption).', (p) => p.rxBytes);
  perPeerCounter('tunvpn_peer_transmit_bytes_total', 'Bytes sent to the peer (transport payload, before encryption).', (p) => p.txBytes);
  perPeerCounter('tunvpn_peer_receive_packets_total', 'Packets received from the peer.', (p) => p.rxPackets);
  perPeerCounter('tunvpn_peer_transmit_packets_total', 'Packets sent to the peer.', (p) => p.txPackets);

  new Gauge({
    name: 'tunvpn_peer_last_handshake_seconds',
    help: 'Unix time of the latest completed handshake with the peer; 0 = never.',
    labelNames: ['peer'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of snap().peers) this.set({ peer: peerLabel(p) }, p.lastHandshakeWallMs / 1000);
    },
  });
  new Gauge({
    name: 'tunvpn_peers',
    help: 'Number of configured peers.',
    registers: [registry],
    collect() {
      this.set(snap().peers.length);
    },
  });
  new Counter({
    name: 'tunvpn_dropped_packets_total',
    help: 'Packets dropped, by reason.',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(snap().drops)) this.inc({ reason }, Math.max(0, n));
    },
  });
  new Counter({
    name: 'tunvpn_handshakes_started_total',
    help: 'Handshake initiations sent.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(Math.max(0, snap().handshakesStarted));
    },
  });
  new Counter({
    name: 'tunvpn_handshakes_completed_total',
    help: 'Handshakes completed (as initiator or responder).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(Math.max(0, snap().handshakesCompleted));
    },
  });
  new Counter({
    name: 'tunvpn_cookie_replies_sent_total',
    help: 'Cookie replies sent instead of handshake responses: the daemon was under load (a handshake flood).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(Math.max(0, snap().cookieRepliesSent ?? 0));
    },
  });
  const tunCounter = (name: string, help: string, read: (t: MetricsSnapshot['tun']) => number, written: (t: MetricsSnapshot['tun']) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['direction'],
      registers: [registry],
      collect() {
        this.reset();
        const t = snap().tun;
        this.inc({ direction: 'read' }, Math.max(0, read(t)));
        this.inc({ direction: 'write' }, Math.max(0, written(t)));
      },
    });
  tunCounter(
    'tunvpn_tun_super_packets_total',
    'TCP super-packets through the TUN device with offloads: read (cut into segments) and written (coalesced from segments).',
    (t) => t.tsoPackets,
    (t) => t.groWrites,
  );
  tunCounter(
    'tunvpn_tun_super_packet_segments_total',
    'Segments those super-packets held.',
    (t) => t.tsoSegments,
    (t) => t.groPackets,
  );
  collectDefaultMetrics({ register: registry });

  return {
    registry,
    contentType: registry.contentType,
    async scrape() {
      current = provider();
      try {
        return await registry.metrics();
      } finally {
        current = undefined;
      }
    },
  };
}

export interface MetricsServer {
  /** The port actually bound (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

/** Serves GET /metrics on host:port; anything else is 404 (405 for other methods on /metrics). */
export async function startMetricsServer(
  listen: { host: string; port: number },
  provider: MetricsProvider,
  opts: { logger?: Logger } = {},
): Promise<MetricsServer> {
  const metrics = createMetrics(provider);
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    metrics.scrape().then(
      (text) => {
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        opts.logger?.warn({ err: (err as Error).message }, 'metrics scrape failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n');
      },
    );
  });
  // A scraper is a well-behaved client; anything slow or many is not one.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.maxConnections = 32;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => opts.logger?.warn({ err: err.message }, 'metrics server error'));
  const port = (server.address() as AddressInfo).port;
  opts.logger?.info({ host: listen.host, port }, 'metrics listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
