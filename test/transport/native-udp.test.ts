import { describe, expect, it } from 'vitest';
import { decodeEndpoint, decodeSource, encodeEndpoint, ENDPOINT_SIZE, NativeUdpError, NativeUdpSocket, sourceEquals } from '../../src/transport/native-udp.js';
import { closeAfterEach, closeDgram, dgramSocket } from './helpers.js';

const track = closeAfterEach();

interface Received {
  data: string;
  address: string;
  port: number;
  family: number;
  matchesSender: boolean;
}

/** Collects n datagrams from `sock`, each decoded and compared with `sender`. */
function collect(sock: NativeUdpSocket, n: number, sender: Uint8Array): Promise<{ got: Received[]; batches: number }> {
  return new Promise((resolve, reject) => {
    const got: Received[] = [];
    let batches = 0;
    const timer = setTimeout(() => reject(new Error(`timed out with ${got.length}/${n}`)), 5000);
    sock.onDatagrams((slots, lengths, sources, count) => {
      batches++;
      for (let i = 0; i < count; i++) {
        const src = decodeSource(sources, i);
        got.push({ data: slots[i].toString('latin1', 0, lengths[i]), ...src, matchesSender: sourceEquals(sources, i, sender) });
      }
      if (got.length >= n) {
        clearTimeout(timer);
        resolve({ got, batches });
      }
    });
  });
}

describe('endpoint encoding', () => {
  it('round-trips IPv4, IPv6 and scoped IPv6 and maps IPv4-mapped to IPv4', () => {
    expect(encodeEndpoint('192.0.2.7', 51820)).toHaveLength(ENDPOINT_SIZE);
    expect(decodeEndpoint(encodeEndpoint('192.0.2.7', 51820))).toEqual({ address: '192.0.2.7', port: 51820, family: 4 });
    expect(decodeEndpoint(encodeEndpoint('2001:db8::1', 1))).toEqual({ address: '2001:db8::1', port: 1, family: 6 });
    expect(decodeEndpoint(encodeEndpoint('::ffff:10.1.2.3', 65535))).toEqual({ address: '10.1.2.3', port: 65535, family: 4 });
    expect(decodeEndpoint(encodeEndpoint('fe80::1%lo', 7))).toEqual({ address: 'fe80::1%lo', port: 7, family: 6 });
  });

  it('is deterministic, so equal endpoints compare equal bytewise', () => {
    const a = encodeEndpoint('10.0.0.1', 1000);
    expect(sourceEquals(a, 0, encodeEndpoint('10.0.0.1', 1000))).toBe(true);
    expect(sourceEquals(a, 0, encodeEndpoint('10.0.0.1', 1001))).toBe(false);
    expect(sourceEquals(a, 0, encodeEndpoint('10.0.0.2', 1000))).toBe(false);
    expect(sourceEquals(a, 0, encodeEndpoint('::ffff:10.0.0.1', 1000))).toBe(true);
  });

  it('rejects names and garbage with EINVAL', () => {
    expect(() => encodeEndpoint('example.com', 1)).toThrow(NativeUdpError);
    expect(() => encodeEndpoint('300.1.1.1', 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('NativeUdpSocket on loopback', () => {
  for (const family of [4, 6] as const) {
    const lo = family === 4 ? '127.0.0.1' : '::1';
    const type = family === 4 ? 'udp4' : 'udp6';

    it(`IPv${family}: receives a burst from node:dgram in batches with bytes, lengths and sources`, async () => {
      const sock = track(NativeUdpSocket.open({ family, port: 0, address: lo, batchSize: 16, recvBufferSize: 4 << 20 }));
      const sender = await dgramSocket(type, lo);
      track(closeDgram(sender));
      const senderEp = encodeEndpoint(lo, sender.address().port);
      const n = 200;
      const done = collect(sock, n, senderEp);
      // Varying lengths, including empty and slot-sized-ish datagrams.
      const payload = (i: number): string => `${i}:`.padEnd(i % 7 === 0 ? 0 : (i * 13) % 1400, 'x');
      for (let i = 0; i < n; i++) sender.send(Buffer.from(payload(i), 'latin1'), sock.port, lo);
      const { got, batches } = await done;
      expect(got).toHaveLength(n);
      expect(got.map((g) => g.data)).toEqual(Array.from({ length: n }, (_, i) => payload(i)));
      for (const g of got) {
        expect(g).toMatchObject({ address: lo, port: sender.address().port, family, matchesSender: true });
      }
      expect(batches).toBeLessThanOrEqual(n);
      expect(sock.stats.received).toBe(n);
    });

    it(`IPv${family}: sendBatch delivers every datagram with the right bytes`, async () => {
      const sock = track(NativeUdpSocket.open({ family, port: 0, address: lo, sendBufferSize: 1 << 20 }));
      const receiver = await dgramSocket(type, lo);
      track(closeDgram(receiver));
      const dest = encodeEndpoint(lo, receiver.address().port);
      const n = 100;
      const arrived: string[] = [];
      const all = new Promise<void>((resolve) =>
        receiver.on('message', (m, rinfo) => {
          expect(rinfo.port).toBe(sock.port);
          arrived.push(m.toString('latin1'));
          if (arrived.length === n) resolve();
        }),
      );
      // Buffers longer than the datagrams: only lengths[i] bytes go out.
      const bufs = Array.from({ length: n }, (_, i) => Buffer.from(`datagram ${i} `.padEnd(100 + i, '.') + 'TAIL-NOT-SENT', 'latin1'));
      const lengths = Uint32Array.from({ length: n }, (_, i) => 100 + i);
      const dests = Array.from({ length: n }, () => dest);
      expect(sock.sendBatch(bufs, lengths, dests, n)).toBe(n);
      await all;
      expect(arrived.sort()).toEqual(bufs.map((b, i) => b.toString('latin1', 0, lengths[i])).sort());
      expect(sock.stats).toMatchObject({ sent: n, sendErrors: 0, sendDrops: 0, lastSendErrno: undefined });
      expect(sock.send(Buffer.from('one'), 3, dest)).toBe(true);
    });
  }

  for (const family of [4, 6] as const) {
    it(`IPv${family}: sendBatch with GSO groups runs per destination and length, and every datagram arrives intact`, async () => {
      const lo = family === 4 ? '127.0.0.1' : '::1';
      const sock = track(NativeUdpSocket.open({ family, port: 0, address: lo, gso: true, sendBufferSize: 4 << 20 }));
      const a = await dgramSocket(family === 4 ? 'udp4' : 'udp6', lo);
      const b = await dgramSocket(family === 4 ? 'udp4' : 'udp6', lo);
      track(closeDgram(a));
      track(closeDgram(b));
      a.setRecvBufferSize(4 << 20);
      b.setRecvBufferSize(4 << 20);
      const toA = encodeEndpoint(lo, a.address().port);
      const toB = encodeEndpoint(lo, b.address().port);
      // A run longer than one GSO send (60 x 1200 > 65000 bytes), a short
      // datagram closing a run, a run to another endpoint, a full-size
      // datagram after a short one, and varying sizes.
      const plan: [Uint8Array, number][] = [];
      for (let i = 0; i < 60; i++) plan.push([toA, 1200]);
      plan.push([toA, 500], [toA, 1200], [toA, 1200]);
      for (let i = 0; i < 20; i++) plan.push([toB, 1200]);
      for (let i = 0; i < 19; i++) plan.push([i % 3 ? toA : toB, 100 + i * 37]);
      plan.push([toB, 1]);
      const n = plan.length;
      const bufs = plan.map(([, len], i) => Buffer.from(`#${i};`.padEnd(len, String.fromCharCode(97 + (i % 26))), 'latin1'));
      const lengths = Uint32Array.from(plan, ([, len]) => len);
      const dests = plan.map(([d]) => d);
      const want = { a: [] as string[], b: [] as string[] };
      plan.forEach(([d], i) => {
        (d === toA ? want.a : want.b).push(bufs[i].toString('latin1', 0, lengths[i]));
      });
      const got = { a: [] as string[], b: [] as string[] };
      const all = new Promise<void>((resolve) => {
        const check = (): void => {
          if (got.a.length + got.b.length === n) resolve();
        };
        a.on('message', (m) => {
          got.a.push(m.toString('latin1'));
          check();
        });
        b.on('message', (m) => {
          got.b.push(m.toString('latin1'));
          check();
        });
      });
      expect(sock.sendBatch(bufs, lengths, dests, n)).toBe(n);
      await all;
      expect(got.a).toEqual(want.a);
      expect(got.b).toEqual(want.b);
      expect(sock.stats).toMatchObject({ sent: n, sendErrors: 0, sendDrops: 0 });
    });
  }

  it('talks to itself across families only through the socket of the right family', () => {
    const v4 = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1' }));
    // A v6 destination through the v4 socket: counted, not thrown.
    expect(v4.send(Buffer.from('x'), 1, encodeEndpoint('::1', 9))).toBe(false);
    expect(v4.sendBatch([Buffer.from('x')], Uint32Array.of(1), [encodeEndpoint('::1', 9)], 1)).toBe(0);
    expect(v4.stats).toMatchObject({ sent: 0, sendErrors: 2, lastSendErrno: 'EAFNOSUPPORT' });
  });

  it('binds IPv4 and IPv6-only sockets on the same port, like WireGuard', () => {
    const v4 = track(NativeUdpSocket.open({ family: 4, port: 0 }));
    const v6 = track(NativeUdpSocket.open({ family: 6, port: v4.port }));
    expect(v6.port).toBe(v4.port);
  });

  it('reports a busy port as EADDRINUSE, and SO_REUSEPORT sockets may share one', () => {
    const a = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1' }));
    let err: unknown;
    try {
      NativeUdpSocket.open({ family: 4, port: a.port, address: '127.0.0.1' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NativeUdpError);
    expect(err).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
    const r1 = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1', reusePort: true }));
    const r2 = track(NativeUdpSocket.open({ family: 4, port: r1.port, address: '127.0.0.1', reusePort: true }));
    expect(r2.port).toBe(r1.port);
  });

  it('rejects bad options before touching the kernel', () => {
    expect(() => NativeUdpSocket.open({ family: 4, port: 70000 })).toThrow(/port/);
    expect(() => NativeUdpSocket.open({ family: 4, port: 0, batchSize: 0 })).toThrow(/batchSize/);
    expect(() => NativeUdpSocket.open({ family: 4, port: 0, address: 'nope' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('applies buffer sizes (root may exceed rmem_max)', () => {
    const s = track(NativeUdpSocket.open({ family: 4, port: 0, recvBufferSize: 1 << 20, sendBufferSize: 1 << 20 }));
    // The kernel reports twice the size set.
    expect(s.recvBufferSize).toBeGreaterThanOrEqual(1 << 20);
    expect(s.sendBufferSize).toBeGreaterThanOrEqual(1 << 20);
  });

  it('drops and counts datagrams larger than a slot instead of truncating them', async () => {
    const sock = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1', slotSize: 128 }));
    const sender = await dgramSocket('udp4', '127.0.0.1');
    track(closeDgram(sender));
    const done = collect(sock, 2, encodeEndpoint('127.0.0.1', sender.address().port));
    sender.send(Buffer.alloc(100, 1), sock.port, '127.0.0.1');
    sender.send(Buffer.alloc(500, 2), sock.port, '127.0.0.1');
    sender.send(Buffer.alloc(128, 3), sock.port, '127.0.0.1');
    const { got } = await done;
    expect(got.map((g) => g.data.length)).toEqual([100, 128]);
    expect(sock.stats.truncated).toBe(1);
  });

  it('rejects malformed sendBatch arguments with a TypeError-like error, not a crash', () => {
    const s = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1' }));
    const dest = encodeEndpoint('127.0.0.1', 9);
    expect(() => s.sendBatch([Buffer.alloc(4)], Uint32Array.of(5), [dest], 1)).toThrow(/exceeds/);
    expect(() => s.sendBatch([Buffer.alloc(4)], Uint32Array.of(4), [dest], 2)).toThrow(/count/);
    expect(() => s.sendBatch([Buffer.alloc(4)], Uint32Array.of(4), [Buffer.alloc(3)], 1)).toThrow(/endpoint/);
  });

  it('close is idempotent, stops delivery and makes later sends throw EBADF', () => {
    const s = NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1' });
    s.onDatagrams(() => undefined);
    s.close();
    s.close();
    expect(s.isClosed).toBe(true);
    expect(() => s.send(Buffer.alloc(1), 1, encodeEndpoint('127.0.0.1', 9))).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => s.onDatagrams(() => undefined)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
