import { describe, expect, it } from 'vitest';
import { DEFAULT_CONSTANTS } from '../../src/protocol/constants.js';
import type { OutboundDatagram } from '../../src/protocol/device.js';
import { INITIATION_SIZE, MESSAGE_INITIATION } from '../../src/protocol/messages.js';
import { SRC_A, SRC_B, expectKind, handshake, makePair, packet } from './helpers.js';
import type { Pair } from './helpers.js';

const C = DEFAULT_CONSTANTS;

/** Advances the clock in steps, ticking both devices; returns a's and b's outputs. */
function run(p: Pair, ms: number, step = 100): { a: OutboundDatagram[]; b: OutboundDatagram[] } {
  const a: OutboundDatagram[] = [];
  const b: OutboundDatagram[] = [];
  for (let t = 0; t < ms; t += step) {
    p.clock.advance(step);
    a.push(...p.a.tick());
    b.push(...p.b.tick());
  }
  return { a, b };
}

function send(p: Pair, from: 'a' | 'b', len = 60): Uint8Array {
  const peer = from === 'a' ? p.peerB : p.peerA;
  const buf = new Uint8Array(len + 64);
  const n = peer.encapsulate(packet(len), buf);
  return buf.subarray(0, n);
}

const initiations = (xs: OutboundDatagram[]): OutboundDatagram[] => xs.filter((x) => x.data[0] === MESSAGE_INITIATION);
const keepalives = (xs: OutboundDatagram[]): OutboundDatagram[] => xs.filter((x) => x.data[0] === 4 && x.data.length === 32);

describe('timers (simulated clock)', () => {
  it('retries the handshake every Rekey-Timeout plus jitter, then gives up and drops the queue', async () => {
    const p = await makePair();
    expect(send(p, 'a').length).toBe(0);
    expect(p.peerB.takeOutbound().length).toBe(1);
    const times: number[] = [];
    const start = p.clock.mono;
    for (let t = 0; t < 120_000; t += 10) {
      p.clock.advance(10);
      for (const o of p.a.tick()) if (o.data[0] === MESSAGE_INITIATION) times.push(p.clock.mono - start);
    }
    const gaps = times.map((t, i) => t - (i === 0 ? 0 : times[i - 1]));
    for (const g of gaps) {
      expect(g).toBeGreaterThanOrEqual(C.rekeyTimeout);
      expect(g).toBeLessThanOrEqual(C.rekeyTimeout + C.rekeyTimeoutJitterMax + 10);
    }
    expect(new Set(gaps).size).toBeGreaterThan(1); // jitter
    expect(times.length).toBe(Math.floor(C.rekeyAttemptTime / C.rekeyTimeout));
    expect(times[times.length - 1]).toBeLessThanOrEqual(C.rekeyAttemptTime + 18 * C.rekeyTimeoutJitterMax);
    expect(p.peerB.queuedPackets).toBe(0);
    expect(p.peerB.stats.handshakesStarted).toBe(times.length + 1);
  });

  it('sends a keepalive after Keepalive-Timeout of receiving without sending', async () => {
    const p = await makePair();
    handshake(p);
    const out = new Uint8Array(256);
    expectKind(p.b.decapsulate(send(p, 'a'), SRC_A, out), 'data');
    const r1 = run(p, C.keepaliveTimeout - 200);
    expect(keepalives(r1.b)).toEqual([]);
    const r2 = run(p, 400);
    expect(keepalives(r2.b).length).toBe(1);
    expect(expectKind(p.a.decapsulate(keepalives(r2.b)[0].data, SRC_B, out), 'data').length).toBe(0);
    // No further keepalives without further data.
    expect(keepalives(run(p, 30_000).b)).toEqual([]);
  });

  it('starts a new handshake when it sent data but heard nothing for Keepalive + Rekey-Timeout', async () => {
    const p = await makePair();
    handshake(p);
    p.clock.advance(6000);
    send(p, 'a');
    const r = run(p, C.keepaliveTimeout + C.rekeyTimeout - 100);
    expect(initiations(r.a)).toEqual([]);
    const r2 = run(p, C.rekeyTimeoutJitterMax + 200);
    expect(initiations(r2.a).length).toBe(1);
  });

  it('sends persistent keepalives on the configured interval', async () => {
    const p = await makePair();
    handshake(p);
    p.peerB.setPersistentKeepalive(25);
    // One right away (the interface is up), then every 25 s of silence.
    const k: Array<{ at: number; data: Uint8Array }> = [];
    const start = p.clock.mono;
    for (let t = 0; t < 60_000; t += 250) {
      p.clock.advance(250);
      for (const o of keepalives(p.a.tick())) k.push({ at: p.clock.mono - start, data: o.data });
    }
    expect(k.map((x) => x.at)).toEqual([250, 25_250, 50_250]);
    const out = new Uint8Array(64);
    for (const x of k) expect(expectKind(p.b.decapsulate(x.data, SRC_A, out), 'data').length).toBe(0);
  });

  it('rekeys after Rekey-After-Time (initiator), rejects after Reject-After-Time, zeroes after 3x', async () => {
    const p = await makePair();
    handshake(p);
    const out = new Uint8Array(256);
    // Just before Rekey-After-Time: plain data, no initiation.
    p.clock.advance(C.rekeyAfterTime - 1000);
    expectKind(p.b.decapsulate(send(p, 'a'), SRC_A, out), 'data');
    expect(p.peerB.hasOutbound).toBe(false);
    p.clock.advance(1000);
    const late = send(p, 'a');
    expect(late.length).toBeGreaterThan(0);
    const ob = p.peerB.takeOutbound();
    expect(ob.length).toBe(1);
    expect(ob[0].length).toBe(INITIATION_SIZE);
    // The responder never rekeys on time alone.
    expectKind(p.a.decapsulate(send(p, 'b'), SRC_B, out), 'data');
    expect(p.peerA.hasOutbound).toBe(false);

    // Reject-After-Time: the old session neither sends nor receives.
    p.clock.advance(C.rejectAfterTime - C.rekeyAfterTime);
    expect(expectKind(p.b.decapsulate(late, SRC_A, out), 'error').code).toBe('expired');
    expect(send(p, 'a').length).toBe(0);
    expect(p.peerB.hasSession).toBe(false);

    // Nobody answers: after 3 x Reject-After-Time from the handshake everything is wiped.
    run(p, 2 * C.rejectAfterTime + 1000, 1000);
    expect(p.a.indicesInUse).toBe(0);
    expect(p.b.indicesInUse).toBe(0);
  });

  it('rotates keys under continuous traffic without losing in-flight packets', async () => {
    const p = await makePair();
    handshake(p);
    const out = new Uint8Array(512);
    let delivered = 0;
    let lost = 0;
    let inFlight: Uint8Array | undefined;
    const startHandshakes = p.peerB.stats.handshakesCompleted;
    for (let t = 0; t < 400_000; t += 1000) {
      p.clock.advance(1000);
      // Datagrams from timers and rekeys are delivered to the other side.
      const deliver = (from: 'a' | 'b', grams: Uint8Array[]): void => {
        for (const g of grams) {
          const dev = from === 'a' ? p.b : p.a;
          const r = dev.decapsulate(g, from === 'a' ? SRC_A : SRC_B, out);
          if (r.kind === 'handshake') {
            if (r.reply) deliver(from === 'a' ? 'b' : 'a', [r.reply]);
            deliver(from, r.flush);
          }
        }
      };
      const g = send(p, 'a');
      if (g.length > 0) {
        // Deliver the previous packet after this one: reordering across a key change.
        if (inFlight) {
          const r = p.b.decapsulate(inFlight, SRC_A, out);
          if (r.kind === 'data') delivered++;
          else lost++;
        }
        inFlight = Uint8Array.from(g);
      }
      deliver('a', p.peerB.takeOutbound());
      deliver('b', p.peerA.takeOutbound());
      for (const o of p.a.tick()) deliver('a', [o.data]);
      for (const o of p.b.tick()) deliver('b', [o.data]);
    }
    expect(p.peerB.stats.handshakesCompleted - startHandshakes).toBeGreaterThanOrEqual(3);
    expect(lost).toBe(0);
    expect(delivered).toBeGreaterThan(390);
    // Only the live sessions hold indices (previous, current, next at most, per side).
    expect(p.a.indicesInUse).toBeLessThanOrEqual(3);
  });

  it('soak-style override: a short Rekey-After-Time rekeys often', async () => {
    const p = await makePair({ constants: { rekeyAfterTime: 10_000, rekeyTimeout: 1000 } });
    handshake(p);
    p.clock.advance(10_000);
    expect(send(p, 'a').length).toBeGreaterThan(0);
    expect(p.peerB.takeOutbound().map((d) => d.length)).toEqual([INITIATION_SIZE]);
  });
});
