/**
 * Two per-packet costs taken off the data path (docs/performance.md,
 * "Per-packet JavaScript costs"): the protocol's clock read once per batch
 * (WireGuardDevice.holdClock), and the AEAD's views of a reused slot kept
 * per slot (the `sealed` / `body` ViewCache arguments). Neither may change
 * what a peer sees.
 */
import { describe, expect, it } from 'vitest';
import { ViewCache } from '../../src/crypto/util.js';
import { TRANSPORT_OVERHEAD } from '../../src/protocol/messages.js';
import { SRC_A, expectKind, handshake, makePair, packet } from './helpers.js';

describe('WireGuardDevice.holdClock', () => {
  it('while held, packets read the clock no more; released, each reads it again', async () => {
    const p = await makePair();
    handshake(p);
    const out = new Uint8Array(2048);
    const r0 = p.clock.reads;
    for (let i = 0; i < 10; i++) expect(p.peerB.encapsulate(packet(100, i), out)).toBeGreaterThan(0);
    const perPacket = (p.clock.reads - r0) / 10;
    expect(perPacket).toBeGreaterThanOrEqual(1);

    const r1 = p.clock.reads;
    p.a.holdClock();
    for (let i = 0; i < 10; i++) expect(p.peerB.encapsulate(packet(100, i), out)).toBeGreaterThan(0);
    p.a.releaseClock();
    expect(p.clock.reads - r1).toBe(1); // the hold's own read

    const r2 = p.clock.reads;
    for (let i = 0; i < 10; i++) expect(p.peerB.encapsulate(packet(100, i), out)).toBeGreaterThan(0);
    expect(p.clock.reads - r2).toBe(10 * perPacket);
  });

  it('a held clock is the instant of the hold, and released it is live: a session past Reject-After-Time stops sealing', async () => {
    const p = await makePair();
    handshake(p);
    const out = new Uint8Array(2048);
    p.a.holdClock();
    p.clock.advance(181_000); // past Reject-After-Time (180 s)
    // Still the instant of the hold: the session may send.
    expect(p.peerB.encapsulate(packet(60), out)).toBeGreaterThan(0);
    p.a.releaseClock();
    // Live again: the expired session is not used; the packet waits for a new handshake.
    expect(p.peerB.encapsulate(packet(60), out)).toBe(0);
    expect(p.peerB.queuedPackets).toBe(1);
  });
});

describe('per-slot AEAD views', () => {
  it('one slot and one ViewCache each way, packet sizes changing, every datagram equal to the uncached one and opened intact', async () => {
    const cached = await makePair({ seed: 9 });
    const plain = await makePair({ seed: 9 });
    handshake(cached);
    handshake(plain);
    const slot = new Uint8Array(1500 + 64);
    const sealed = new ViewCache();
    const rxSlot = new Uint8Array(1500 + 64);
    const body = new ViewCache();
    const opened = new Uint8Array(1500 + 64);
    // The pipeline's own per-slot views (datagram and plaintext), so equal lengths give the same objects.
    const dgView = new ViewCache();
    const openedView = new ViewCache();
    const reference = new Uint8Array(1500 + 64);
    for (const [n, len] of [1420, 28, 1420, 0, 500, 500, 1419, 1, 1420].entries()) {
      const pkt = packet(len, n);
      const w = cached.peerB.encapsulate(pkt, slot, sealed);
      const wRef = plain.peerB.encapsulate(pkt, reference);
      // Same keys and counters (seeded pairs): byte-identical datagrams.
      expect(w).toBe(wRef);
      expect(slot.subarray(0, w)).toEqual(reference.subarray(0, wRef));
      // Received into one reused slot, at this datagram's length.
      rxSlot.set(slot.subarray(0, w));
      const datagram = dgView.of(rxSlot, 0, w);
      const res = expectKind(cached.b.decapsulate(datagram, SRC_A, openedView.of(opened, 0, w - TRANSPORT_OVERHEAD), body), 'data');
      expect(opened.subarray(0, len)).toEqual(pkt);
      expect(res.length).toBeGreaterThanOrEqual(len);
    }
  });
});
