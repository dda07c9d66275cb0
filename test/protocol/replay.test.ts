import { describe, expect, it } from 'vitest';
import { REPLAY_WINDOW, ReplayWindow } from '../../src/protocol/replay.js';
import { SRC_A, SRC_B, expectKind, handshake, makePair, packet } from './helpers.js';

describe('ReplayWindow', () => {
  it("covers at least wireguard-go's 8128 counters", () => {
    expect(REPLAY_WINDOW).toBeGreaterThanOrEqual(8128);
  });

  it('accepts a counter 8100 behind the greatest once, and refuses those past the window', () => {
    const w = new ReplayWindow(2 ** 53);
    expect(w.accept(20_000)).toBe(true);
    expect(w.accept(20_000 - 8100)).toBe(true);
    expect(w.accept(20_000 - 8100)).toBe(false);
    expect(w.accept(20_000 - 8127)).toBe(true);
    expect(w.accept(20_000 - REPLAY_WINDOW + 1)).toBe(true);
    expect(w.check(20_000 - REPLAY_WINDOW)).toBe(false);
    expect(w.accept(20_000 - REPLAY_WINDOW)).toBe(false);
    expect(w.accept(20_000 - 9000)).toBe(false);
    // Sliding on by one word forgets the oldest word's counters only.
    expect(w.accept(20_000 + 32)).toBe(true);
    expect(w.accept(20_000 - 8100)).toBe(false);
    expect(w.accept(20_000 + 32 - 8100)).toBe(true);
  });

  it('keeps working near 2^53 (block numbers beyond 32 bits)', () => {
    const w = new ReplayWindow(2 ** 53);
    const top = 2 ** 53 - 1;
    expect(w.accept(top - 5000)).toBe(true);
    expect(w.accept(top)).toBe(true);
    expect(w.accept(top - 5000)).toBe(false);
    expect(w.accept(top - 8000)).toBe(true);
    expect(w.accept(top - 8000)).toBe(false);
    expect(w.accept(top - REPLAY_WINDOW)).toBe(false);
  });

  it('deep reordering: every permutation displaced by less than the window is accepted exactly once', () => {
    let seed = 99;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (const depth of [64, 1000, 4096, 8000, REPLAY_WINDOW]) {
      // Counters 0..N-1 sent in order; the network delays each one by up
      // to `depth` positions (a sort by counter + random lag).
      const N = 40_000;
      const order = Array.from({ length: N }, (_, c) => ({ c, key: c + rnd(depth) }));
      order.sort((x, y) => x.key - y.key || x.c - y.c);
      const w = new ReplayWindow(2 ** 53);
      let greatest = -1;
      let accepted = 0;
      let wrong: string | undefined;
      for (const { c } of order) {
        const inWindow = greatest - c < REPLAY_WINDOW;
        if (w.accept(c) !== inWindow) wrong ??= `depth ${depth} counter ${c} greatest ${greatest}`;
        if (inWindow) accepted++;
        greatest = Math.max(greatest, c);
      }
      expect(wrong).toBeUndefined();
      // With a lag below the window nothing is lost.
      expect(accepted, `depth ${depth}`).toBe(N);
      // And every one of them is now a replay (those still inside the window).
      for (let c = N - 1; c > N - REPLAY_WINDOW; c -= 7) expect(w.accept(c)).toBe(false);
    }
  });

  it('deep reordering beyond the window: a reference model decides every counter, duplicates included', () => {
    let seed = 4242;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const w = new ReplayWindow(2 ** 53);
    const seen = new Set<number>();
    let greatest = -1;
    for (let i = 0; i < 100_000; i++) {
      // Mostly forward, sometimes far back (up to 1.5 windows), sometimes a duplicate.
      const r = rnd(100);
      const c =
        r < 5 && seen.size > 0 ? Math.max(0, greatest - rnd(64)) : Math.max(0, greatest + rnd(600) - (r < 30 ? rnd(REPLAY_WINDOW + REPLAY_WINDOW / 2) : 200));
      const expected = !seen.has(c) && greatest - c < REPLAY_WINDOW;
      if (w.check(c) !== expected || w.accept(c) !== expected) {
        expect.fail(`step ${i}: counter ${c}, greatest ${greatest}: expected ${expected ? 'accepted' : 'refused'}`);
      }
      if (expected) {
        seen.add(c);
        greatest = Math.max(greatest, c);
      }
    }
  });

  it('accepts in-order counters once', () => {
    const w = new ReplayWindow(2 ** 53);
    for (let i = 0; i < 10_000; i++) expect(w.accept(i)).toBe(true);
    for (let i = 9_990; i < 10_000; i++) expect(w.accept(i)).toBe(false);
  });

  it('accepts reordering inside the window and refuses duplicates', () => {
    const w = new ReplayWindow(2 ** 53);
    const top = 20_000;
    expect(w.accept(top)).toBe(true);
    for (const c of [top - 1, top - 2000, top - 1000, top - REPLAY_WINDOW + 1, top - 500]) expect(w.accept(c), `counter ${c}`).toBe(true);
    expect(w.accept(top - 1000)).toBe(false);
    expect(w.accept(top)).toBe(false);
    // 2 is more than a window behind the top.
    expect(w.check(2)).toBe(false);
    expect(w.accept(2)).toBe(false);
    expect(w.accept(top - 2)).toBe(true);
  });

  it('refuses counters too old after a big jump, and forgets bits the window left behind', () => {
    const w = new ReplayWindow(2 ** 53);
    expect(w.accept(0)).toBe(true);
    expect(w.accept(1_000_000)).toBe(true);
    expect(w.accept(0)).toBe(false);
    expect(w.accept(1_000_000 - REPLAY_WINDOW)).toBe(false);
    expect(w.accept(1_000_000 - REPLAY_WINDOW + 1)).toBe(true);
    // Bits from the far past must not be mistaken for the new block's.
    const w2 = new ReplayWindow(2 ** 53);
    expect(w2.accept(33)).toBe(true);
    expect(w2.accept(33 + 4096)).toBe(true);
    expect(w2.accept(33 + 4096 - 32 * 3)).toBe(true);
  });

  it('refuses counters at and past the limit (Reject-After-Messages)', () => {
    const w = new ReplayWindow(100);
    expect(w.accept(99)).toBe(true);
    expect(w.accept(100)).toBe(false);
    expect(w.accept(Infinity)).toBe(false);
    expect(w.accept(2 ** 60)).toBe(false);
  });

  it('check() does not record', () => {
    const w = new ReplayWindow(1000);
    expect(w.check(7)).toBe(true);
    expect(w.check(7)).toBe(true);
    expect(w.accept(7)).toBe(true);
    expect(w.check(7)).toBe(false);
  });

  it('matches a reference set model on random sequences', () => {
    let seed = 12345;
    const rnd = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    const w = new ReplayWindow(2 ** 53);
    const seen = new Set<number>();
    let greatest = -1;
    for (let i = 0; i < 50_000; i++) {
      const c = Math.max(0, greatest + (rnd() % 6000) - 4500);
      const expected = !seen.has(c) && !(greatest - c >= REPLAY_WINDOW);
      expect(w.accept(c)).toBe(expected);
      if (expected) {
        seen.add(c);
        greatest = Math.max(greatest, c);
      }
    }
  });
});

describe('replay through the device', () => {
  it('drops duplicates and too-old packets, accepts reordered ones', async () => {
    const p = await makePair();
    handshake(p);
    const grams: Uint8Array[] = [];
    for (let i = 0; i < 3000; i++) {
      const buf = new Uint8Array(128);
      const n = p.peerB.encapsulate(packet(60, i), buf);
      grams.push(buf.subarray(0, n));
    }
    const out = new Uint8Array(256);
    // Deliver newest first, then the rest in reverse: all within the window.
    for (let i = grams.length - 1; i >= 0; i--) expectKind(p.b.decapsulate(grams[i], SRC_A, out), 'data');
    expect(expectKind(p.b.decapsulate(grams[1500], SRC_A, out), 'error').code).toBe('replay');
    // Jump far ahead, then an old one is outside the window.
    const fresh: Uint8Array[] = [];
    for (let i = 0; i < REPLAY_WINDOW + 10; i++) {
      const buf = new Uint8Array(128);
      fresh.push(buf.subarray(0, p.peerB.encapsulate(packet(60, i), buf)));
    }
    expectKind(p.b.decapsulate(fresh[fresh.length - 1], SRC_A, out), 'data');
    expect(expectKind(p.b.decapsulate(fresh[0], SRC_A, out), 'error').code).toBe('replay');
    expectKind(p.b.decapsulate(fresh[fresh.length - 2], SRC_A, out), 'data');
  });

  it('refuses to send or accept counters at Reject-After-Messages and rekeys before', async () => {
    const p = await makePair({ constants: { rekeyAfterMessages: 10, rejectAfterMessages: 20 } });
    handshake(p); // the confirming keepalive used counter 0
    p.clock.advance(6000); // past Rekey-Timeout, so a rekey initiation may go out
    const buf = new Uint8Array(256);
    const out = new Uint8Array(256);
    let sent = 0;
    let rekeyed = false;
    for (let i = 0; i < 25; i++) {
      const n = p.peerB.encapsulate(packet(40, i), buf);
      if (n === 0) break;
      sent++;
      expectKind(p.b.decapsulate(buf.subarray(0, n), SRC_A, out), 'data');
      if (p.peerB.hasOutbound) {
        const ob = p.peerB.takeOutbound();
        if (ob.some((d) => d[0] === 1)) rekeyed = true;
      }
    }
    expect(rekeyed).toBe(true);
    expect(sent).toBe(19); // counters 1..19
    expect(p.peerB.hasSession).toBe(false);
    // A forged far-future counter is refused as expired without decrypting.
    const n = p.peerA.encapsulate(packet(40), buf);
    expect(n).toBeGreaterThan(0);
    const forged = Uint8Array.from(buf.subarray(0, n));
    forged[8] = 25;
    expect(expectKind(p.a.decapsulate(forged, SRC_B, out), 'error').code).toBe('expired');
  });
});
