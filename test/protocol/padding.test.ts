/**
 * Padding: plaintext is zero-padded to a multiple of 16 but never past the
 * tunnel MTU (the kernel's and wireguard-go's rule), so a full-size 1420-byte packet leaves
 * as 1452 bytes of UDP payload and fits the underlay `mtu + 60` / `mtu + 80`
 * was sized for. The MTU is the device's current one: a reload's change
 * applies from the next packet, to running sessions too.
 */
import { describe, expect, it } from 'vitest';
import { TRANSPORT_OVERHEAD } from '../../src/protocol/messages.js';
import { paddedLength } from '../../src/protocol/session.js';
import { SRC_A, expectKind, handshake, makePair, packet } from './helpers.js';

describe('paddedLength', () => {
  it('pads to 16 below the MTU, to the MTU near it, and not at all past it', () => {
    for (const mtu of [1420, 1280, 1500, 1419, 576]) {
      for (let len = 0; len <= mtu + 40; len++) {
        const p = paddedLength(len, mtu);
        expect(p).toBeGreaterThanOrEqual(len);
        if (len <= mtu) expect(p, `len ${len} mtu ${mtu}`).toBeLessThanOrEqual(mtu);
        else expect(p, `len ${len} mtu ${mtu}`).toBe(len);
        if (((len + 15) & ~15) <= mtu) expect(p).toBe((len + 15) & ~15);
        else if (len <= mtu) expect(p).toBe(mtu);
      }
    }
    expect(paddedLength(1420, 1420)).toBe(1420);
    expect(paddedLength(1400, 1420)).toBe(1408);
    expect(paddedLength(1410, 1420)).toBe(1420);
    expect(paddedLength(1417, 1420)).toBe(1420);
    expect(paddedLength(1419, 1419)).toBe(1419);
    // No MTU: the plain multiple of 16.
    expect(paddedLength(1420, 0)).toBe(1424);
    expect(paddedLength(0, 1420)).toBe(0);
  });
});

describe('transport datagrams under an MTU', () => {
  it('a 1420-byte packet under MTU 1420 is a 1452-byte datagram and decrypts to the packet', async () => {
    const p = await makePair();
    p.a.setMtu(1420);
    handshake(p);
    const buf = new Uint8Array(2048);
    const pkt = packet(1420, 3);
    const n = p.peerB.encapsulate(pkt, buf);
    expect(n).toBe(1420 + TRANSPORT_OVERHEAD);
    const out = new Uint8Array(2048);
    const r = expectKind(p.b.decapsulate(buf.subarray(0, n), SRC_A, out), 'data');
    expect(r.length).toBe(1420);
    expect(out.subarray(0, 1420)).toEqual(pkt);
  });

  it('uses the current MTU: a change applies to the running session from the next packet', async () => {
    const p = await makePair();
    p.a.setMtu(1420);
    handshake(p);
    const buf = new Uint8Array(2048);
    expect(p.peerB.encapsulate(packet(1279), buf)).toBe(1280 + TRANSPORT_OVERHEAD);
    p.a.setMtu(1280);
    expect(p.peerB.encapsulate(packet(1279), buf)).toBe(1280 + TRANSPORT_OVERHEAD);
    expect(p.peerB.encapsulate(packet(1275), buf)).toBe(1280 + TRANSPORT_OVERHEAD);
    expect(p.peerB.encapsulate(packet(1270), buf)).toBe(1280 + TRANSPORT_OVERHEAD);
    p.a.setMtu(1276);
    expect(p.peerB.encapsulate(packet(1270), buf)).toBe(1276 + TRANSPORT_OVERHEAD);
    expect(p.a.mtu).toBe(1276);
    expect(() => p.a.setMtu(-1)).toThrow(/MTU/);
    expect(() => p.a.setMtu(1.5)).toThrow(/MTU/);
  });

  it('packets staged before the session exist are padded by the MTU too', async () => {
    const p = await makePair();
    p.a.setMtu(1420);
    const buf = new Uint8Array(2048);
    expect(p.peerB.encapsulate(packet(1420, 9), buf)).toBe(0);
    const [init] = p.peerB.takeOutbound();
    const out = new Uint8Array(2048);
    const r1 = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    const r2 = expectKind(p.a.decapsulate(r1.reply as Uint8Array, SRC_A, out), 'handshake');
    expect(r2.flush.map((d) => d.length)).toEqual([1452]);
  });
});
