/**
 * First contact and crossing initiations, on the simulated clock: data
 * must never wait Rekey-Timeout behind an initiation nobody answered (the
 * start-up one, a lost response), the extra initiations stay bounded, and
 * two sides that initiate at the same instant settle without a retry.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONSTANTS } from '../../src/protocol/constants.js';
import type { WireGuardDevice } from '../../src/protocol/device.js';
import { MESSAGE_INITIATION, MESSAGE_RESPONSE } from '../../src/protocol/messages.js';
import { SRC_A, SRC_B, expectKind, makePair, packet } from './helpers.js';
import type { Pair } from './helpers.js';

const C = DEFAULT_CONSTANTS;
const isInit = (d: Uint8Array): boolean => d[0] === MESSAGE_INITIATION && d.length === 148;

/** Stages one data packet from a (to b); returns the initiations it caused at once. */
function sendData(p: Pair, len = 60): Uint8Array[] {
  const buf = new Uint8Array(2048);
  expect(p.peerB.encapsulate(packet(len), buf)).toBe(0);
  return p.peerB.takeOutbound().filter(isInit);
}

/** Advances the clock in steps, ticking a; returns a's initiations with their times. */
function tickA(p: Pair, ms: number, step = 10): number[] {
  const times: number[] = [];
  for (let t = 0; t < ms; t += step) {
    p.clock.advance(step);
    for (const o of p.a.tick()) if (isInit(o.data)) times.push(p.clock.mono);
  }
  return times;
}

describe('first contact', () => {
  it('data after an unanswered start-up initiation sends a fresh one at once, which completes', async () => {
    const p = await makePair();
    // Start-up: the initiation goes out while b is down and is lost.
    expect(p.peerB.initiateHandshake()).toBeDefined();
    p.clock.advance(500);
    const [init, ...more] = sendData(p);
    expect(init).toBeDefined();
    expect(more).toEqual([]);
    const out = new Uint8Array(2048);
    const r1 = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    const r2 = expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'handshake');
    // The staged packet leaves with the response's arrival.
    expect(r2.flush.length).toBe(1);
    expect(expectKind(p.b.decapsulate(r2.flush[0], SRC_A, out), 'data').length).toBe(64);
  });

  it('data right after the start-up initiation waits firstContactDelay, then the timer initiates', async () => {
    const p = await makePair();
    p.peerB.initiateHandshake();
    p.clock.advance(20);
    expect(sendData(p)).toEqual([]);
    const start = p.clock.mono - 20;
    const times = tickA(p, 300);
    expect(times.length).toBe(1);
    expect(times[0] - start).toBeGreaterThanOrEqual(C.firstContactDelay);
    expect(times[0] - start).toBeLessThanOrEqual(C.firstContactDelay + 10);
  });

  it('a lost response of ours does not hold data for Rekey-Timeout', async () => {
    const p = await makePair();
    const out = new Uint8Array(2048);
    // b initiates; a answers, but the answer is lost.
    const ib = p.peerA.initiateHandshake() as Uint8Array;
    expectKind(p.a.decapsulate(ib, SRC_B, out), 'handshake');
    p.clock.advance(30);
    expect(sendData(p)).toEqual([]);
    const times = tickA(p, 200);
    expect(times.length).toBe(1);
    expect(times[0] - (p.clock.mono - 230)).toBeLessThanOrEqual(C.firstContactDelay + 10);
  });

  it('behind its own unanswered initiations data re-initiates at 1 s, 2 s, 4 s, then every Rekey-Timeout: bounded', async () => {
    const p = await makePair();
    p.peerB.initiateHandshake(); // start-up, lost
    const start = p.clock.mono;
    const times: number[] = [];
    // b is down for good; a packet every 10 ms for 60 s.
    for (let t = 0; t < 60_000; t += 10) {
      p.clock.advance(10);
      const buf = new Uint8Array(256);
      p.peerB.encapsulate(packet(40, t), buf);
      for (const d of p.peerB.takeOutbound()) if (isInit(d)) times.push(p.clock.mono - start);
      for (const o of p.a.tick()) if (isInit(o.data)) times.push(p.clock.mono - start);
    }
    const gaps = times.map((t, i) => t - (i === 0 ? 0 : times[i - 1]));
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(C.firstContactDelay);
    expect(gaps[0]).toBe(C.firstContactDelay);
    expect(gaps.slice(1, 4)).toEqual([1000, 2000, 4000]);
    for (const g of gaps.slice(4)) {
      expect(g).toBeGreaterThanOrEqual(C.rekeyTimeout);
      expect(g).toBeLessThanOrEqual(C.rekeyTimeout + C.rekeyTimeoutJitterMax + 10);
    }
    // WireGuard's rule alone: one per Rekey-Timeout (12 in 60 s); ours: 3 more.
    expect(times.length).toBeLessThanOrEqual(Math.ceil(60_000 / C.rekeyTimeout) + 4);
  });

  it('a round trip longer than the first retry still completes while data keeps coming', async () => {
    const p = await makePair();
    const rtt = 1_500;
    const inFlight: { at: number; to: WireGuardDevice; data: Uint8Array }[] = [];
    const out = new Uint8Array(2048);
    let done = -1;
    const start = p.clock.mono;
    for (let t = 0; t < 20_000 && done < 0; t += 10) {
      p.clock.advance(10);
      const buf = new Uint8Array(256);
      const n = p.peerB.encapsulate(packet(40, t), buf);
      const fromA = p.peerB.takeOutbound();
      if (n > 0) fromA.push(buf.slice(0, n));
      for (const o of p.a.tick()) fromA.push(o.data);
      for (const d of fromA) inFlight.push({ at: p.clock.mono + rtt / 2, to: p.b, data: d });
      for (const o of p.b.tick()) inFlight.push({ at: p.clock.mono + rtt / 2, to: p.a, data: o.data });
      for (let i = 0; i < inFlight.length; ) {
        const m = inFlight[i];
        if (m.at > p.clock.mono) {
          i++;
          continue;
        }
        inFlight.splice(i, 1);
        const r = m.to.decapsulate(m.data, m.to === p.b ? SRC_A : SRC_B, out);
        if (r.kind === 'handshake' && r.reply) inFlight.push({ at: p.clock.mono + rtt / 2, to: p.a, data: r.reply });
        if (r.kind === 'handshake') for (const d of r.flush) inFlight.push({ at: p.clock.mono + rtt / 2, to: p.b, data: d });
        if (m.to === p.b && r.kind === 'data' && r.length > 0) done = p.clock.mono - start;
      }
    }
    expect(done).toBeGreaterThan(0);
    // Superseded once (at 1 s), answered at the 2 s spacing: data by ~1 s + 1.5 s RTT + one way.
    expect(done).toBeLessThan(C.rekeyTimeout);
  });
});

describe('crossing initiations (both sides initiate at once)', () => {
  /**
   * A tiny network: datagrams in flight, delivered in an order a seeded
   * generator picks, until nothing is left. Returns what arrived where.
   */
  function settle(p: Pair, seed: number, first: { toA: Uint8Array[]; toB: Uint8Array[] }): { initiations: number; dataA: number; dataB: number } {
    let s = seed;
    const rnd = (n: number): number => {
      s = (s * 1103515245 + 12345) & 0x7fffffff;
      return s % n;
    };
    const q: { to: 'a' | 'b'; data: Uint8Array }[] = [
      ...first.toA.map((data) => ({ to: 'a' as const, data })),
      ...first.toB.map((data) => ({ to: 'b' as const, data })),
    ];
    const out = new Uint8Array(2048);
    let initiations = 0;
    let dataA = 0;
    let dataB = 0;
    while (q.length > 0) {
      const [m] = q.splice(rnd(q.length), 1);
      const dev = m.to === 'a' ? p.a : p.b;
      const r = dev.decapsulate(m.data, m.to === 'a' ? SRC_B : SRC_A, out);
      const back = m.to === 'a' ? 'b' : 'a';
      if (r.kind === 'handshake') {
        if (r.reply) q.push({ to: back, data: r.reply });
        for (const d of r.flush) q.push({ to: back, data: d });
      }
      if (r.kind === 'data' && r.length > 0) {
        if (m.to === 'a') dataA++;
        else dataB++;
      }
      for (const peer of [p.peerB, p.peerA]) {
        for (const d of peer.takeOutbound()) {
          if (isInit(d)) initiations++;
          q.push({ to: peer === p.peerB ? 'b' : 'a', data: d });
        }
      }
    }
    return { initiations, dataA, dataB };
  }

  it('settles in every delivery order without a retry, and data flows both ways', async () => {
    for (let seed = 1; seed <= 40; seed++) {
      const p = await makePair({ seed });
      const ia = p.peerB.initiateHandshake() as Uint8Array;
      const ib = p.peerA.initiateHandshake() as Uint8Array;
      const r = settle(p, seed, { toA: [ib], toB: [ia] });
      expect(r.initiations, `seed ${seed}`).toBe(0);
      expect(p.peerB.hasSession, `seed ${seed}`).toBe(true);
      expect(p.peerA.hasSession, `seed ${seed}`).toBe(true);
      // Data both ways, then nothing else to send (no handshake pending).
      const ab = new Uint8Array(256);
      const n = p.peerB.encapsulate(packet(80, seed), ab);
      const m = p.peerA.encapsulate(packet(81, seed), new Uint8Array(256));
      expect(n, `seed ${seed}`).toBeGreaterThan(0);
      expect(m, `seed ${seed}`).toBeGreaterThan(0);
      const out = new Uint8Array(256);
      expect(expectKind(p.b.decapsulate(ab.subarray(0, n), SRC_A, out), 'data').length).toBe(80);
      // No timer-driven handshake for a while: the retransmit timers are off.
      p.clock.advance(C.rekeyTimeout + C.rekeyTimeoutJitterMax + 100);
      expect(p.a.tick().filter((o) => isInit(o.data))).toEqual([]);
      expect(p.b.tick().filter((o) => isInit(o.data))).toEqual([]);
    }
  });

  it('a response to an initiation we already replaced is refused (only the one in flight is answered)', async () => {
    const p = await makePair();
    const out = new Uint8Array(2048);
    const i1 = p.peerB.initiateHandshake() as Uint8Array;
    const r1 = expectKind(p.b.decapsulate(i1, SRC_A, out), 'handshake').reply as Uint8Array;
    p.clock.advance(C.rekeyTimeout + 1);
    const i2 = p.peerB.initiateHandshake() as Uint8Array;
    expect(expectKind(p.a.decapsulate(r1, SRC_B, out), 'error').code).toBe('unknown-index');
    const r2 = expectKind(p.b.decapsulate(i2, SRC_A, out), 'handshake').reply as Uint8Array;
    expectKind(p.a.decapsulate(r2, SRC_B, out), 'handshake');
    expect(p.peerB.hasSession).toBe(true);
  });

  it('a response arriving before the crossing initiation is handled like any other', async () => {
    const p = await makePair();
    const out = new Uint8Array(2048);
    const ia = p.peerB.initiateHandshake() as Uint8Array;
    const ib = p.peerA.initiateHandshake() as Uint8Array;
    const ra = expectKind(p.b.decapsulate(ia, SRC_A, out), 'handshake');
    expect(ra.reply?.[0]).toBe(MESSAGE_RESPONSE);
    // a completes first, then consumes b's initiation (b still had it pending).
    const x = expectKind(p.a.decapsulate(ra.reply as Uint8Array, SRC_B, out), 'handshake');
    const rb = expectKind(p.a.decapsulate(ib, SRC_B, out), 'handshake');
    for (const d of x.flush) p.b.decapsulate(d, SRC_A, out);
    const y = expectKind(p.b.decapsulate(rb.reply as Uint8Array, SRC_A, out), 'handshake');
    for (const d of y.flush) expect(expectKind(p.a.decapsulate(d, SRC_B, out), 'data').length).toBe(0);
    const buf = new Uint8Array(256);
    const n = p.peerA.encapsulate(packet(30), buf);
    expect(expectKind(p.a.decapsulate(buf.subarray(0, n), SRC_B, out), 'data').length).toBe(32);
    const m = p.peerB.encapsulate(packet(30), buf);
    expect(expectKind(p.b.decapsulate(buf.subarray(0, m), SRC_A, out), 'data').length).toBe(32);
  });
});
