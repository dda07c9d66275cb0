import { describe, expect, it } from 'vitest';
import { INITIATION_SIZE, RESPONSE_SIZE } from '../../src/protocol/messages.js';
import { BACKENDS, SRC_A, SRC_B, expectKind, handshake, makePair, packet } from './helpers.js';

describe.each(BACKENDS)('handshake and data (%s)', (backendName) => {
  for (const withPsk of [false, true]) {
    it(`completes a handshake and exchanges data both ways ${withPsk ? 'with' : 'without'} a preshared key`, async () => {
      const psk = withPsk ? new Uint8Array(32).fill(7) : undefined;
      const p = await makePair({ psk, backendName });
      const init = p.peerB.initiateHandshake();
      expect(init?.length).toBe(INITIATION_SIZE);
      const out = new Uint8Array(4096);
      const r1 = expectKind(p.b.decapsulate(init as Uint8Array, SRC_A, out), 'handshake');
      expect(r1.peer).toBe(p.peerA);
      expect(r1.reply?.length).toBe(RESPONSE_SIZE);
      // The responder may not send on the new session until confirmed.
      expect(p.peerA.hasSession).toBe(false);
      const r2 = expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'handshake');
      expect(r2.peer).toBe(p.peerB);
      expect(p.peerB.hasSession).toBe(true);
      // Nothing queued: the initiator confirms with a keepalive.
      expect(r2.flush.length).toBe(1);
      expect(r2.flush[0].length).toBe(32);
      const k = expectKind(p.b.decapsulate(r2.flush[0], SRC_A, out), 'data');
      expect(k.length).toBe(0);
      expect(p.peerA.hasSession).toBe(true);
      expect(p.peerA.stats.handshakesCompleted).toBe(1);
      expect(p.peerB.stats.handshakesCompleted).toBe(1);

      for (const len of [1, 15, 16, 17, 100, 1420]) {
        const pkt = packet(len, len);
        const dg = new Uint8Array(len + 32 + 15);
        const n = p.peerB.encapsulate(pkt, dg);
        expect(n).toBe(Math.ceil(len / 16) * 16 + 32);
        const r = expectKind(p.b.decapsulate(dg.subarray(0, n), SRC_A, out), 'data');
        expect(r.peer).toBe(p.peerA);
        expect(r.length).toBe(Math.ceil(len / 16) * 16);
        expect(Buffer.from(out.subarray(0, len)).equals(Buffer.from(pkt))).toBe(true);
        expect(out.subarray(len, r.length).every((x) => x === 0)).toBe(true);

        const back = packet(len, len + 1);
        const n2 = p.peerA.encapsulate(back, dg);
        expect(n2).toBeGreaterThan(0);
        const r3 = expectKind(p.a.decapsulate(dg.subarray(0, n2), SRC_B, out), 'data');
        expect(r3.peer).toBe(p.peerB);
        expect(Buffer.from(out.subarray(0, len)).equals(Buffer.from(back))).toBe(true);
      }
      expect(p.peerA.stats.rxBytes).toBeGreaterThan(0);
      expect(p.peerB.stats.txBytes).toBeGreaterThan(0);
    });
  }

  it('fails when the preshared keys differ', async () => {
    const p = await makePair({ backendName, psk: new Uint8Array(32).fill(1) });
    p.peerA.setPresharedKey(new Uint8Array(32).fill(2));
    const init = p.peerB.initiateHandshake() as Uint8Array;
    const out = new Uint8Array(256);
    const r1 = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    const r2 = expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'error');
    expect(r2.code).toBe('bad-auth');
    expect(p.peerB.hasSession).toBe(false);
  });
});

describe('handshake rules', () => {
  it('queues packets until the handshake completes, then flushes them in order', async () => {
    const p = await makePair();
    const out = new Uint8Array(4096);
    const dg = new Uint8Array(4096);
    expect(p.peerB.encapsulate(packet(60, 1), dg)).toBe(0);
    expect(p.peerB.encapsulate(packet(61, 2), dg)).toBe(0);
    const ob = p.peerB.takeOutbound();
    expect(ob.length).toBe(1);
    expect(ob[0].length).toBe(INITIATION_SIZE);
    const r1 = expectKind(p.b.decapsulate(ob[0], SRC_A, out), 'handshake');
    const r2 = expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_B, out), 'handshake');
    expect(r2.flush.length).toBe(2);
    const d1 = expectKind(p.b.decapsulate(r2.flush[0], SRC_A, out), 'data');
    expect(out[1]).toBe(packet(60, 1)[1]);
    expect(d1.length).toBe(64);
    const d2 = expectKind(p.b.decapsulate(r2.flush[1], SRC_A, out), 'data');
    expect(d2.length).toBe(64);
    expect(out[1]).toBe(packet(61, 2)[1]);
  });

  it('bounds the queue, dropping the oldest', async () => {
    const p = await makePair();
    const dg = new Uint8Array(4096);
    for (let i = 0; i < 200; i++) p.peerB.encapsulate(packet(40, i), dg);
    expect(p.peerB.queuedPackets).toBe(128);
  });

  it('rejects a replayed initiation (stale timestamp) and initiations from unknown keys', async () => {
    const p = await makePair();
    const out = new Uint8Array(256);
    const init = p.peerB.initiateHandshake() as Uint8Array;
    expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    p.clock.advance(1000);
    const again = expectKind(p.b.decapsulate(init, SRC_A, out), 'error');
    expect(again.code).toBe('stale-timestamp');
    // An initiation from a device b does not know.
    const q = await makePair({ seed: 99 });
    q.b.removePeer(q.a.publicKey);
    const stranger = q.peerB.initiateHandshake() as Uint8Array;
    const r = expectKind(q.b.decapsulate(stranger, SRC_A, out), 'error');
    expect(r.code).toBe('unknown-peer');
  });

  it('rejects an initiation whose timestamp is older than the last accepted', async () => {
    const p = await makePair();
    const out = new Uint8Array(256);
    const older = p.peerB.initiateHandshake() as Uint8Array;
    p.clock.advance(6000);
    const newer = p.peerB.initiateHandshake() as Uint8Array;
    expectKind(p.b.decapsulate(newer, SRC_A, out), 'handshake');
    expect(expectKind(p.b.decapsulate(older, SRC_A, out), 'error').code).toBe('stale-timestamp');
  });

  it('rejects a bad mac1 and a response to no pending initiation', async () => {
    const p = await makePair();
    const out = new Uint8Array(256);
    const init = p.peerB.initiateHandshake() as Uint8Array;
    const bad = Uint8Array.from(init);
    bad[120] ^= 1;
    expect(expectKind(p.b.decapsulate(bad, SRC_A, out), 'error').code).toBe('bad-mac');
    const r1 = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    const resp = r1.reply as Uint8Array;
    expectKind(p.a.decapsulate(resp, SRC_B, out), 'handshake');
    // The same response again: its receiver index now names a session.
    expect(expectKind(p.a.decapsulate(resp, SRC_B, out), 'error').code).toBe('unknown-index');
  });

  it('refuses initiations from one peer faster than the handshake initiation rate', async () => {
    // Stretch the rate so that the initiator's own Rekey-Timeout spacing is too fast.
    const p = await makePair({ constants: { handshakeInitiationRate: 10_000 } });
    const out = new Uint8Array(256);
    expectKind(p.b.decapsulate(p.peerB.initiateHandshake() as Uint8Array, SRC_A, out), 'handshake');
    p.clock.advance(6000);
    const second = p.peerB.initiateHandshake();
    expect(second).toBeDefined();
    expect(expectKind(p.b.decapsulate(second as Uint8Array, SRC_A, out), 'error').code).toBe('handshake-flood');
  });

  it('works when both sides initiate at the same time: both responses are accepted, no retry needed', async () => {
    const p = await makePair();
    const out = new Uint8Array(4096);
    const ia = p.peerB.initiateHandshake() as Uint8Array;
    const ib = p.peerA.initiateHandshake() as Uint8Array;
    const ra = expectKind(p.b.decapsulate(ia, SRC_A, out), 'handshake');
    const rb = expectKind(p.a.decapsulate(ib, SRC_B, out), 'handshake');
    // Each answered the other's initiation and kept its own pending one.
    const x = expectKind(p.a.decapsulate(ra.reply as Uint8Array, SRC_B, out), 'handshake');
    const y = expectKind(p.b.decapsulate(rb.reply as Uint8Array, SRC_A, out), 'handshake');
    expect(p.peerB.hasSession).toBe(true);
    expect(p.peerA.hasSession).toBe(true);
    // The confirming keepalives decrypt on the other side.
    for (const d of x.flush) expect(expectKind(p.b.decapsulate(d, SRC_A, out), 'data').length).toBe(0);
    for (const d of y.flush) expect(expectKind(p.a.decapsulate(d, SRC_B, out), 'data').length).toBe(0);
    const dg = new Uint8Array(256);
    for (let i = 0; i < 3; i++) {
      const n = p.peerA.encapsulate(packet(50, i), dg);
      expect(n).toBeGreaterThan(0);
      expect(expectKind(p.a.decapsulate(dg.subarray(0, n), SRC_B, out), 'data').length).toBe(64);
      const m = p.peerB.encapsulate(packet(50, i), dg);
      expect(m).toBeGreaterThan(0);
      expect(expectKind(p.b.decapsulate(dg.subarray(0, m), SRC_A, out), 'data').length).toBe(64);
    }
    expect(p.peerB.hasOutbound || p.peerA.hasOutbound).toBe(false);
  });

  it('drops sessions when the private key changes and re-handshakes', async () => {
    const p = await makePair();
    handshake(p);
    expect(p.peerB.hasSession).toBe(true);
    const before = p.a.indicesInUse;
    expect(before).toBeGreaterThan(0);
    const newKey = new Uint8Array(32).fill(9);
    p.a.setPrivateKey(newKey);
    expect(p.peerB.hasSession).toBe(false);
    expect(p.a.indicesInUse).toBe(0);
    p.clock.advance(6000);
    // b still knows the old public key: an initiation from a fails.
    const init = p.peerB.initiateHandshake() as Uint8Array;
    expect(p.b.decapsulate(init, SRC_A, new Uint8Array(256)).kind).toBe('error');
  });

  it('removePeer frees indices and rejects traffic', async () => {
    const p = await makePair();
    handshake(p);
    const dg = new Uint8Array(256);
    const n = p.peerB.encapsulate(packet(40), dg);
    p.b.removePeer(p.a.publicKey);
    expect(p.b.indicesInUse).toBe(0);
    expect(p.b.getPeer(p.peerA.publicKeyB64)).toBeUndefined();
    expect(expectKind(p.b.decapsulate(dg.subarray(0, n), SRC_A, new Uint8Array(256)), 'error').code).toBe('unknown-index');
    expect(() => p.a.addPeer({ publicKey: p.b.publicKey })).toThrow(/already exists/);
  });
});
