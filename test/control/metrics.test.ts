import { afterEach, describe, expect, it } from 'vitest';
import { createMetrics, startMetricsServer, type MetricsServer, type MetricsSnapshot } from '../../src/control/metrics.js';

const PUB = 'Adu8nWvmqIS4u4m0xUhoSXOTiVuKjUdunoBOc6PVXg8=';

type PeerRow = { name?: string; publicKey: string; rxBytes: number; txBytes: number; rxPackets: number; txPackets: number; lastHandshakeWallMs: number };

function state(): MetricsSnapshot & { peers: PeerRow[]; drops: Record<string, number> } {
  const s: MetricsSnapshot & { peers: PeerRow[]; drops: Record<string, number> } = {
    peers: [
      { name: 'site-b', publicKey: 'x', rxBytes: 100, txBytes: 200, rxPackets: 1, txPackets: 2, lastHandshakeWallMs: 1_700_000_000_500 },
      { publicKey: PUB, rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, lastHandshakeWallMs: 0 },
    ],
    drops: { replay: 0, 'bad-auth': 3, 'source-not-allowed': 0, 'no-session': 0, malformed: 1, 'queue-full': 0 },
    handshakesStarted: 4,
    handshakesCompleted: 2,
    tun: { tsoPackets: 5, tsoSegments: 220, groWrites: 7, groPackets: 300 },
  };
  return s;
}

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no series ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
}

describe('createMetrics', () => {
  it('reads every value from one snapshot per scrape, labelled by peer name or public key', async () => {
    const s = state();
    let calls = 0;
    const m = createMetrics(() => {
      calls++;
      return s;
    });
    const text = await m.scrape();
    expect(calls).toBe(1);
    expect(value(text, 'tunvpn_peer_receive_bytes_total{peer="site-b"}')).toBe(100);
    expect(value(text, 'tunvpn_peer_transmit_bytes_total{peer="site-b"}')).toBe(200);
    expect(value(text, 'tunvpn_peer_receive_packets_total{peer="site-b"}')).toBe(1);
    expect(value(text, 'tunvpn_peer_transmit_packets_total{peer="site-b"}')).toBe(2);
    expect(value(text, `tunvpn_peer_receive_bytes_total{peer="${PUB}"}`)).toBe(0);
    expect(value(text, 'tunvpn_peer_last_handshake_seconds{peer="site-b"}')).toBe(1_700_000_000.5);
    expect(value(text, `tunvpn_peer_last_handshake_seconds{peer="${PUB}"}`)).toBe(0);
    expect(value(text, 'tunvpn_dropped_packets_total{reason="bad-auth"}')).toBe(3);
    expect(value(text, 'tunvpn_dropped_packets_total{reason="replay"}')).toBe(0);
    expect(value(text, 'tunvpn_dropped_packets_total{reason="queue-full"}')).toBe(0);
    expect(value(text, 'tunvpn_handshakes_started_total')).toBe(4);
    expect(value(text, 'tunvpn_handshakes_completed_total')).toBe(2);
    expect(value(text, 'tunvpn_peers')).toBe(2);
    expect(value(text, 'tunvpn_tun_super_packets_total{direction="read"}')).toBe(5);
    expect(value(text, 'tunvpn_tun_super_packets_total{direction="write"}')).toBe(7);
    expect(value(text, 'tunvpn_tun_super_packet_segments_total{direction="read"}')).toBe(220);
    expect(value(text, 'tunvpn_tun_super_packet_segments_total{direction="write"}')).toBe(300);
    expect(text).toMatch(/^# TYPE tunvpn_peer_receive_bytes_total counter$/m);
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    expect(text).toMatch(/^nodejs_heap_size_used_bytes /m);
  });

  it('follows the provider between scrapes, dropping removed peers', async () => {
    const s = state();
    const m = createMetrics(() => s);
    await m.scrape();
    s.peers[0].rxBytes = 5000;
    s.peers.pop();
    const text = await m.scrape();
    expect(value(text, 'tunvpn_peer_receive_bytes_total{peer="site-b"}')).toBe(5000);
    expect(text).not.toContain(PUB);
  });

  it('uses its own registry, not the global one', async () => {
    const { register } = await import('prom-client');
    createMetrics(state);
    expect(register.getSingleMetric('tunvpn_peers')).toBeUndefined();
  });
});

describe('startMetricsServer', () => {
  let server: MetricsServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('serves /metrics with counters that move between scrapes, 404 elsewhere', async () => {
    const s = state();
    server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, () => s);
    const url = `http://127.0.0.1:${server.port}`;
    const first = await fetch(`${url}/metrics`);
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toMatch(/^text\/plain/);
    const before = value(await first.text(), 'tunvpn_peer_transmit_bytes_total{peer="site-b"}');
    s.peers[0].txBytes += 1420 * 10;
    s.drops['bad-auth'] += 1;
    const after = await (await fetch(`${url}/metrics`)).text();
    expect(value(after, 'tunvpn_peer_transmit_bytes_total{peer="site-b"}')).toBe(before + 14200);
    expect(value(after, 'tunvpn_dropped_packets_total{reason="bad-auth"}')).toBe(4);
    expect((await fetch(`${url}/`)).status).toBe(404);
    expect((await fetch(`${url}/metricsx`)).status).toBe(404);
    expect((await fetch(`${url}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('answers 500, not a crash, when the provider throws', async () => {
    server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, () => {
      throw new Error('no');
    });
    expect((await fetch(`http://127.0.0.1:${server.port}/metrics`)).status).toBe(500);
  });

  it('fails to start on a port in use', async () => {
    server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, state);
    await expect(startMetricsServer({ host: '127.0.0.1', port: server.port }, state)).rejects.toThrow(/EADDRINUSE/);
  });
});
