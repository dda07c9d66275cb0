import { describe, expect, it } from 'vitest';
import {
  COOKIE_REPLY_SIZE,
  INITIATION_SIZE,
  MessageError,
  RESPONSE_SIZE,
  TRANSPORT_MIN_SIZE,
  decodeMessage,
  messageType,
  readCounterLE,
  writeCounterLE,
} from '../../src/protocol/messages.js';
import { transportSize } from '../../src/protocol/session.js';
import { tai64n, tai64nAfter } from '../../src/protocol/tai64n.js';
import { SRC_A, expectKind, handshake, makePair, packet } from './helpers.js';

describe('messages', () => {
  it('has the wire sizes of the paper', () => {
    expect([INITIATION_SIZE, RESPONSE_SIZE, COOKIE_REPLY_SIZE, TRANSPORT_MIN_SIZE]).toEqual([148, 92, 64, 32]);
    expect(transportSize(0)).toBe(32);
    expect(transportSize(1)).toBe(48);
    // Without an MTU (0): a plain multiple of 16.
    expect(transportSize(1420)).toBe(1456);
    // Under the default MTU 1420 a full-size packet is not padded past it.
    expect(transportSize(1420, 1420)).toBe(1452);
  });

  it('accepts exact sizes only, and zero reserved bytes', () => {
    const mk = (type: number, len: number): Uint8Array => {
      const d = new Uint8Array(len);
      d[0] = type;
      return d;
    };
    expect(messageType(mk(1, 148))).toBe(1);
    expect(messageType(mk(1, 147))).toBe(0);
    expect(messageType(mk(1, 149))).toBe(0);
    expect(messageType(mk(2, 92))).toBe(2);
    expect(messageType(mk(2, 93))).toBe(0);
    expect(messageType(mk(3, 64))).toBe(3);
    expect(messageType(mk(3, 63))).toBe(0);
    expect(messageType(mk(4, 32))).toBe(4);
    expect(messageType(mk(4, 31))).toBe(0);
    expect(messageType(mk(4, 1500))).toBe(4);
    expect(messageType(mk(5, 64))).toBe(0);
    expect(messageType(new Uint8Array(0))).toBe(0);
    const r = mk(1, 148);
    r[2] = 1;
    expect(messageType(r)).toBe(0);
  });

  it('decodeMessage returns typed errors, never throws', () => {
    const e1 = decodeMessage(new Uint8Array(2));
    expect(e1).toBeInstanceOf(MessageError);
    expect((e1 as MessageError).code).toBe('PROTOCOL_MALFORMED_MESSAGE');
    const e2 = decodeMessage(Uint8Array.of(2, 0, 0, 0, 1));
    expect((e2 as MessageError).message).toMatch(/type 2 must be 92 bytes, got 5/);
    expect((decodeMessage(Uint8Array.of(9, 0, 0, 0)) as MessageError).message).toMatch(/unknown message type 9/);
  });

  it('decodes real messages into their fields', async () => {
    const p = await makePair();
    const init = p.peerB.initiateHandshake() as Uint8Array;
    const m = decodeMessage(init);
    if (m instanceof MessageError || m.type !== 1) throw new Error('not an initiation');
    expect(m.ephemeral.length).toBe(32);
    expect(m.encryptedStatic.length).toBe(48);
    expect(m.encryptedTimestamp.length).toBe(28);
    expect(m.mac1.length).toBe(16);
    const out = new Uint8Array(256);
    const r = expectKind(p.b.decapsulate(init, SRC_A, out), 'handshake');
    const resp = decodeMessage(r.reply as Uint8Array);
    if (resp instanceof MessageError || resp.type !== 2) throw new Error('not a response');
    expect(resp.receiver).toBe(m.sender);
    const q = await makePair();
    handshake(q);
    const buf = new Uint8Array(128);
    const n = q.peerB.encapsulate(packet(10), buf);
    const t = decodeMessage(buf.subarray(0, n));
    if (t instanceof MessageError || t.type !== 4) throw new Error('not transport');
    expect(t.counter).toBe(1);
    expect(t.ciphertext.length).toBe(32);
  });

  it('reads and writes 64-bit counters, refusing those beyond 2^53', () => {
    const b = new Uint8Array(8);
    for (const v of [0, 1, 0xffffffff, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER]) {
      writeCounterLE(b, 0, v);
      expect(readCounterLE(b, 0)).toBe(v);
    }
    b.fill(0xff);
    expect(readCounterLE(b, 0)).toBe(Infinity);
  });
});

describe('TAI64N', () => {
  it('encodes seconds with the TAI64 label and orders timestamps', () => {
    const t = tai64n(1_700_000_000_123);
    expect(Buffer.from(t.subarray(0, 8)).readBigUInt64BE()).toBe(0x400000000000000an + 1_700_000_000n);
    const later = tai64n(1_700_000_000_200);
    expect(tai64nAfter(later, t)).toBe(true);
    expect(tai64nAfter(t, later)).toBe(false);
    expect(tai64nAfter(t, t)).toBe(false);
    expect(tai64nAfter(tai64n(1_700_000_001_000), later)).toBe(true);
  });
});
