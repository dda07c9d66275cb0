import { describe, expect, it } from 'vitest';
import { CookieChecker, CookieGenerator, RateLimiter } from '../../src/protocol/cookie.js';
import { COOKIE_REPLY_SIZE, INIT_MAC2, INITIATION_SIZE, RESPONSE_SIZE } from '../../src/protocol/messages.js';
import { SRC_A, SRC_B, backend, expectKind, makePair, packet, seededRandom } from './helpers.js';

describe('cookie path under load', () => {
  it('answers with a cookie reply, then accepts the retry carrying mac2', async () => {
    const p = await makePair();
    p.b.setUnderLoad(true);
    const out = new Uint8Array(4096);
    const dg = new Uint8Array(4096);
    expect(p.peerB.encapsulate(packet(80), dg)).toBe(0);
    const [init] = p.peerB.takeOutbound();
    expect(init.subarray(INIT_MAC2).every((x) => x === 0)).toBe(true);
    const r1 = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    expect(r1.peer).toBeUndefined();
    expect(r1.reply?.length).toBe(COOKIE_REPLY_SIZE);
    expect(p.peerA.stats.handshakesCompleted).toBe(0);
    const c = expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'cookie');
    expect(c.peer).toBe(p.peerB);
    // The same reply again is refused: it was for one message only.
    expect(expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'error').code).toBe('bad-cookie');

    // The retry timer resends with mac2.
    p.clock.advance(5400);
    const retries = p.a.tick();
    expect(retries.length).toBe(1);
    const retry = retries[0].data;
    expect(retry.length).toBe(INITIATION_SIZE);
    expect(retry.subarray(INIT_MAC2).some((x) => x !== 0)).toBe(true);
    const r2 = expectKind(p.b.decapsulate(retry, SRC_A, out), 'handshake');
    expect(r2.peer).toBe(p.peerA);
    expect(r2.reply?.length).toBe(RESPONSE_SIZE);
    const r3 = expectKind(p.a.decapsulate(r2.reply as Uint8Array, SRC_B, out), 'handshake');
    expect(r3.flush.length).toBe(1);
    const d = expectKind(p.b.decapsulate(r3.flush[0], SRC_A, out), 'data');
    expect(d.length).toBe(80);
  });

  it('a cookie is bound to the source address', async () => {
    const p = await makePair();
    p.b.setUnderLoad(true);
    const out = new Uint8Array(256);
    const init = p.peerB.initiateHandshake() as Uint8Array;
    const r1 = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'cookie');
    p.clock.advance(5400);
    const [retry] = p.a.tick();
    // From another address the mac2 is worthless: another cookie reply.
    const other = expectKind(p.b.decapsulate(retry.data, { address: '10.0.0.9', port: 1 }, out), 'handshake');
    expect(other.peer).toBeUndefined();
    expect(other.reply?.length).toBe(COOKIE_REPLY_SIZE);
  });

  it('rate-limits initiations per source under load', async () => {
    const p = await makePair();
    p.b.setUnderLoad(true);
    const out = new Uint8Array(256);
    const init = p.peerB.initiateHandshake() as Uint8Array;
    const r1 = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'cookie');
    p.clock.advance(5400);
    const [retry] = p.a.tick();
    const codes: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = p.b.decapsulate(retry.data, SRC_A, out);
      codes.push(r.kind === 'error' ? r.code : r.kind);
    }
    // Burst of 5 passes the limiter (the first completes, replays are stale), then it limits.
    expect(codes.slice(0, 5)).toEqual(['handshake', 'stale-timestamp', 'stale-timestamp', 'stale-timestamp', 'stale-timestamp']);
    expect(codes.slice(5)).toEqual(['rate-limited', 'rate-limited', 'rate-limited']);
    // Another source is not limited by this one.
    const other = p.b.decapsulate(retry.data, SRC_B, out);
    expect(other.kind === 'error' ? other.code : other.kind).not.toBe('rate-limited');
  });
});

describe('cookie primitives', () => {
  it('the responder secret rotates: a cookie stops validating after Cookie-Refresh-Time', async () => {
    const crypto = await backend();
    const random = seededRandom(5);
    const responder = crypto.publicKey(new Uint8Array(32).fill(3));
    const checker = new CookieChecker(crypto, random, 120_000, responder);
    const gen = new CookieGenerator(crypto, 120_000, responder);
    const msg = new Uint8Array(INITIATION_SIZE).fill(1);
    gen.addMacs(msg, 0);
    expect(checker.checkMac1(msg)).toBe(true);
    expect(checker.checkMac2(msg, SRC_A, 0)).toBe(false);
    const reply = checker.createReply(msg, 42, SRC_A, 0);
    expect(gen.consumeReply(reply, 10)).toBe(true);
    expect(gen.hasCookie(10)).toBe(true);
    gen.addMacs(msg, 20);
    expect(checker.checkMac2(msg, SRC_A, 20)).toBe(true);
    expect(checker.checkMac2(msg, SRC_A, 120_001)).toBe(false);
    // A reply is bound to the mac1 it answers: one for another message is refused.
    const otherMsg = new Uint8Array(INITIATION_SIZE).fill(2);
    new CookieGenerator(crypto, 120_000, responder).addMacs(otherMsg, 0);
    expect(gen.consumeReply(checker.createReply(otherMsg, 42, SRC_A, 120_001), 120_002)).toBe(false);
    // The new secret's cookie works again.
    gen.addMacs(msg, 120_003);
    expect(gen.consumeReply(checker.createReply(msg, 42, SRC_A, 120_003), 120_004)).toBe(true);
    gen.addMacs(msg, 120_005);
    expect(checker.checkMac2(msg, SRC_A, 120_005)).toBe(true);
    expect(gen.hasCookie(120_004 + 120_000)).toBe(false);
  });

  it('RateLimiter refills at its rate and forgets idle sources', () => {
    const rl = new RateLimiter(20, 5);
    let ok = 0;
    for (let i = 0; i < 10; i++) if (rl.allow('a', 0)) ok++;
    expect(ok).toBe(5);
    expect(rl.allow('a', 49)).toBe(false);
    expect(rl.allow('a', 51)).toBe(true);
    rl.collect(5000);
    expect(rl.size).toBe(0);
  });
});
