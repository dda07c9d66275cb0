/**
 * EndpointRefresher with an injected clock and resolver: when a host name
 * is looked up again, how often, how many at once, and when a result is
 * used or ignored.
 */
import { describe, expect, it } from 'vitest';
import { EndpointRefresher, type RefreshPeerConfig } from '../../src/peers/reresolve.js';
import type { Endpoint } from '../../src/transport/endpoint.js';

const FRESH = 135_000;
const INTERVAL = 30_000;
const KEY_A = 'A'.repeat(43) + '=';
const KEY_B = 'B'.repeat(43) + '=';

interface Pending {
  host: string;
  port: number;
  resolve: (e: Endpoint) => void;
  reject: (err: Error) => void;
}

interface LivePeer {
  lastHandshakeAt: number;
  endpoint: Endpoint | undefined;
  configured: { host: string; port: number } | undefined;
}

/** A refresher over fake peers, a settable clock and a resolver whose answers the test gives. */
function harness(opts: { intervalMs?: number; maxConcurrent?: number; random?: () => number } = {}) {
  let now = 1_000_000;
  const pending: Pending[] = [];
  const peers = new Map<string, LivePeer>();
  const applied: { key: string; endpoint: Endpoint }[] = [];
  const logs: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const log = (level: string) => (obj: object, msg: string) => void logs.push({ level, obj: obj as Record<string, unknown>, msg });
  const r = new EndpointRefresher({
    resolve: (host, port) => new Promise<Endpoint>((resolve, reject) => void pending.push({ host, port, resolve, reject })),
    now: () => now,
    random: opts.random ?? (() => 0),
    intervalMs: opts.intervalMs ?? INTERVAL,
    freshHandshakeMs: FRESH,
    maxConcurrent: opts.maxConcurrent ?? 2,
    log: { info: log('info'), warn: log('warn'), debug: log('debug') },
    label: (p) => p.name ?? 'unnamed',
    peer: (key) => peers.get(key),
    apply: (key, endpoint) => {
      applied.push({ key, endpoint });
      const p = peers.get(key);
      if (p) p.endpoint = endpoint;
    },
  });
  const config: RefreshPeerConfig[] = [];
  return {
    r,
    pending,
    peers,
    applied,
    logs,
    config,
    get now() {
      return now;
    },
    /** Advances the clock in daemon-ticker steps, ticking each time. */
    advance(ms: number, step = 100) {
      for (let t = 0; t < ms; t += step) {
        now += Math.min(step, ms - t);
        r.tick();
      }
    },
    addPeer(key: string, name: string, host: string, port = 51820, endpoint?: Endpoint) {
      peers.set(key, { lastHandshakeAt: -Infinity, endpoint, configured: { host, port } });
      config.push({ publicKey: key, name, endpoint: { host, port } });
      r.sync(config);
    },
    setHandshake(key: string, at: number) {
      const p = peers.get(key);
      if (p) p.lastHandshakeAt = at;
    },
  };
}

const ep = (address: string, port = 51820): Endpoint => ({ address, port, family: address.includes(':') ? 6 : 4 });

/** Lets promise callbacks run. */
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('EndpointRefresher', () => {
  it('looks a name up one interval after start, and uses and logs a new address', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    h.advance(INTERVAL - 200);
    expect(h.pending).toHaveLength(0);
    h.advance(300);
    expect(h.pending.map((p) => [p.host, p.port])).toEqual([['b.example.test', 51820]]);
    h.pending[0].resolve(ep('192.0.2.2'));
    await flush();
    expect(h.applied).toEqual([{ key: KEY_A, endpoint: ep('192.0.2.2') }]);
    const line = h.logs.find((l) => l.msg === 'endpoint address changed');
    expect(line?.obj).toEqual({ peer: 'site-b', host: 'b.example.test', from: '192.0.2.1:51820', to: '192.0.2.2:51820' });
    // Never a key in any line.
    expect(JSON.stringify(h.logs)).not.toContain(KEY_A.slice(0, 20));
  });

  it('an unchanged address is neither applied nor logged', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    h.advance(INTERVAL + 100);
    h.pending[0].resolve(ep('192.0.2.1'));
    await flush();
    expect(h.applied).toEqual([]);
    expect(h.logs.filter((l) => l.level !== 'debug')).toEqual([]);
  });

  it('a peer without any endpoint (name unresolvable at start) gets one', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test');
    h.advance(INTERVAL + 100);
    h.pending[0].resolve(ep('fd00::7'));
    await flush();
    expect(h.applied).toEqual([{ key: KEY_A, endpoint: ep('fd00::7') }]);
    expect(h.logs.find((l) => l.msg === 'endpoint address changed')?.obj.from).toBeNull();
  });

  it('no lookup while the latest handshake is younger than 135 s; one as soon as it is older', () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    const handshake = h.now + 20_000;
    h.advance(20_000);
    h.setHandshake(KEY_A, handshake);
    // Due at 30 s, but the session is alive until handshake + 135 s.
    h.advance(handshake + FRESH - h.now - 100);
    expect(h.pending).toHaveLength(0);
    h.advance(200);
    expect(h.pending).toHaveLength(1);
  });

  it('at most one lookup per interval per peer, jitter included, over ten minutes of ticks', async () => {
    let seed = 1;
    const random = () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    };
    const h = harness({ random });
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    const starts: number[] = [];
    for (let t = 0; t < 600_000; t += 1_000) {
      h.advance(1_000);
      while (h.pending.length > 0) {
        starts.push(h.now);
        h.pending.shift()?.reject(new Error('getaddrinfo EAI_AGAIN b.example.test'));
        await flush();
      }
    }
    const gaps = starts.slice(1).map((s, i) => s - starts[i]);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(INTERVAL);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(INTERVAL * 1.25 + 1_000);
    // Jittered: not all the same gap.
    expect(new Set(gaps).size).toBeGreaterThan(1);
    // Each failure is one warning: once per interval.
    const warnings = h.logs.filter((l) => l.level === 'warn');
    expect(warnings).toHaveLength(starts.length);
    expect(warnings[0].obj).toMatchObject({ peer: 'site-b', host: 'b.example.test', err: 'getaddrinfo EAI_AGAIN b.example.test' });
    expect(h.applied).toEqual([]);
  });

  it('never more than maxConcurrent lookups at once; a finished one frees its slot at once', async () => {
    const h = harness({ maxConcurrent: 2 });
    for (let i = 0; i < 10; i++) h.addPeer(`${String(i).padStart(43, 'K')}=`, `p${i}`, `p${i}.example.test`);
    h.advance(INTERVAL + 100);
    h.advance(10_000);
    expect(h.pending).toHaveLength(2);
    expect(h.r.inFlight).toBe(2);
    expect(h.r.lookups).toBe(2);
    h.pending.shift()?.resolve(ep('192.0.2.9'));
    await flush();
    // The next due peer started in the completion, not a tick later.
    expect(h.pending).toHaveLength(2);
    expect(h.r.lookups).toBe(3);
    expect(h.r.inFlight).toBe(2);
  });

  it('a handshake completed while the lookup ran wins (roaming is not overridden)', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    h.advance(INTERVAL + 100);
    expect(h.pending).toHaveLength(1);
    // The peer's authenticated packets came from a new address, and a handshake completed.
    const p = h.peers.get(KEY_A);
    if (p) p.endpoint = ep('198.51.100.5', 40000);
    h.setHandshake(KEY_A, h.now);
    h.pending[0].resolve(ep('192.0.2.1'));
    await flush();
    expect(h.applied).toEqual([]);
    expect(h.peers.get(KEY_A)?.endpoint).toEqual(ep('198.51.100.5', 40000));
  });

  it('a roamed endpoint is replaced once its session is dead (no handshake for 135 s)', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('198.51.100.5', 40000));
    h.setHandshake(KEY_A, h.now);
    h.advance(FRESH + 100);
    expect(h.pending).toHaveLength(1);
    h.pending[0].resolve(ep('192.0.2.1'));
    await flush();
    expect(h.applied).toEqual([{ key: KEY_A, endpoint: ep('192.0.2.1') }]);
  });

  it('a failure is logged, never thrown, and a later success says so', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    h.advance(INTERVAL + 100);
    h.pending.shift()?.reject(new Error('getaddrinfo ENOTFOUND b.example.test'));
    await flush();
    expect(h.logs.map((l) => l.msg)).toEqual(['endpoint not resolved: keeping the current one']);
    expect(h.logs[0].obj.retryInS).toBe(30);
    h.advance(INTERVAL + 100);
    h.pending.shift()?.resolve(ep('192.0.2.3'));
    await flush();
    expect(h.logs.map((l) => l.msg)).toEqual(['endpoint not resolved: keeping the current one', 'endpoint resolved again', 'endpoint address changed']);
  });

  it('a resolver that throws synchronously counts as a failure', async () => {
    const logs: string[] = [];
    let clock = 0;
    const r = new EndpointRefresher({
      resolve: () => {
        throw new Error('boom');
      },
      now: () => clock,
      intervalMs: INTERVAL,
      freshHandshakeMs: FRESH,
      maxConcurrent: 2,
      log: { info: () => undefined, warn: (_o, m) => void logs.push(m), debug: () => undefined },
      label: () => 'x',
      peer: () => ({ lastHandshakeAt: -Infinity, endpoint: undefined, configured: { host: 'x.test', port: 1 } }),
      apply: () => undefined,
    });
    r.sync([{ publicKey: KEY_A, endpoint: { host: 'x.test', port: 1 } }]);
    clock = 40_000;
    r.tick();
    await flush();
    expect(logs).toEqual(['endpoint not resolved: keeping the current one']);
    expect(r.inFlight).toBe(0);
  });

  it('IP literals are not tracked; a peer changed to one, or removed, drops its running lookup', async () => {
    const h = harness();
    h.r.sync([
      { publicKey: KEY_A, endpoint: { host: '192.0.2.1', port: 1 } },
      { publicKey: KEY_B, endpoint: { host: 'fe80::1%eth0', port: 1 } },
    ]);
    expect(h.r.tracked).toBe(0);
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    h.advance(INTERVAL + 100);
    expect(h.pending).toHaveLength(1);
    // `wg set ... endpoint 203.0.113.9:51820`: the effective config now names an IP.
    const p = h.peers.get(KEY_A);
    if (p) p.configured = { host: '203.0.113.9', port: 51820 };
    h.r.sync([{ publicKey: KEY_A, name: 'site-b', endpoint: { host: '203.0.113.9', port: 51820 } }]);
    expect(h.r.tracked).toBe(0);
    h.pending[0].resolve(ep('192.0.2.77'));
    await flush();
    expect(h.applied).toEqual([]);
    h.advance(10 * INTERVAL);
    expect(h.pending).toHaveLength(1);
  });

  it('a result for a host the peer no longer has (a change being committed) is ignored', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    h.advance(INTERVAL + 100);
    const p = h.peers.get(KEY_A);
    if (p) p.configured = { host: 'c.example.test', port: 51820 };
    h.pending[0].resolve(ep('192.0.2.77'));
    await flush();
    expect(h.applied).toEqual([]);
  });

  it('a reload with the same name keeps the schedule; a new name restarts it; interval 0 stops lookups', () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test');
    h.advance(INTERVAL - 1_000);
    h.r.sync(h.config);
    h.advance(2_000);
    expect(h.pending).toHaveLength(1);
    const h2 = harness();
    h2.addPeer(KEY_A, 'site-b', 'b.example.test');
    h2.advance(INTERVAL + 100);
    h2.pending.length = 0;
    h2.r.sync(h2.config, 0);
    h2.advance(10 * INTERVAL);
    expect(h2.pending).toHaveLength(0);
  });

  it('stop() ignores results still running', async () => {
    const h = harness();
    h.addPeer(KEY_A, 'site-b', 'b.example.test', 51820, ep('192.0.2.1'));
    h.advance(INTERVAL + 100);
    h.r.stop();
    h.pending[0].resolve(ep('192.0.2.2'));
    await flush();
    expect(h.applied).toEqual([]);
    expect(h.logs).toEqual([]);
  });
});
