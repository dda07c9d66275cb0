/**
 * UDP GRO on receive (src/transport/native/udp.c): real sockets on loopback.
 * A UDP GSO send on loopback reaches a UDP_GRO socket as ONE coalesced
 * buffer (the kernel only splits it for sockets without UDP_GRO), so the
 * addon's own GSO sendBatch produces exactly the reads GRO must cut back
 * into datagrams: every datagram must come out whole, in order, with its
 * own length and source, in batches no larger than the slots, and the GRO
 * counters must show that coalesced reads happened.
 */
import { describe, expect, it } from 'vitest';
import { encodeEndpoint, NativeUdpSocket, sourceEquals } from '../../src/transport/native-udp.js';
import { closeAfterEach, closeDgram, dgramSocket } from './helpers.js';

const track = closeAfterEach();

interface Got {
  from: number;
  data: string;
}

/**
 * Collects n datagrams; `senders` are the encoded endpoints datagrams may
 * come from (Got.from is the index, -1 for none). Fails on a batch larger
 * than the socket's slots.
 */
function collect(sock: NativeUdpSocket, n: number, senders: Uint8Array[]): Promise<{ got: Got[]; batches: number; largest: number }> {
  return new Promise((resolve, reject) => {
    const got: Got[] = [];
    let batches = 0;
    let largest = 0;
    const timer = setTimeout(() => reject(new Error(`timed out with ${got.length}/${n} datagrams`)), 5000);
    sock.onDatagrams((slots, lengths, sources, count) => {
      batches++;
      largest = Math.max(largest, count);
      if (count > slots.length || count > sock.batchSize) reject(new Error(`batch of ${count} for ${slots.length} slots`));
      for (let i = 0; i < count; i++) {
        got.push({ from: senders.findIndex((s) => sourceEquals(sources, i, s)), data: slots[i].toString('latin1', 0, lengths[i]) });
      }
      if (got.length >= n) {
        clearTimeout(timer);
        resolve({ got, batches, largest });
      }
    });
  });
}

/** A datagram's bytes: its index, then a letter that varies by index, to `len`. */
function payload(tag: string, i: number, len: number): string {
  return `${tag}${i};`.padEnd(len, String.fromCharCode(97 + (i % 26))).slice(0, len);
}

function gsoSender(family: 4 | 6, lo: string): NativeUdpSocket {
  return track(NativeUdpSocket.open({ family, port: 0, address: lo, gso: true, sendBufferSize: 4 << 20 }));
}

/** Sends plan[i] = length of datagram i from `from` to `to` in one sendBatch; returns the payloads. */
function sendPlan(from: NativeUdpSocket, to: Uint8Array, tag: string, plan: number[]): string[] {
  const data = plan.map((len, i) => payload(tag, i, len));
  const bufs = data.map((d) => Buffer.from(d, 'latin1'));
  expect(
    from.sendBatch(
      bufs,
      Uint32Array.from(plan),
      bufs.map(() => to),
      plan.length,
    ),
  ).toBe(plan.length);
  return data;
}

describe('UDP GRO on receive', () => {
  for (const family of [4, 6] as const) {
    const lo = family === 4 ? '127.0.0.1' : '::1';

    it(`IPv${family}: coalesced GSO runs from two senders come out whole, in order, with their sources, in batches within the slots`, async () => {
      // 16 slots: a coalesced read of 51 datagrams cannot fit one batch,
      // so the remainder must be kept and delivered first next time.
      const rx = track(NativeUdpSocket.open({ family, port: 0, address: lo, batchSize: 16, recvBufferSize: 8 << 20 }));
      expect(rx.stats).toMatchObject({ gro: true, groError: undefined, groReads: 0, groDatagrams: 0 });
      const a = gsoSender(family, lo);
      const b = gsoSender(family, lo);
      const plain = await dgramSocket(family === 4 ? 'udp4' : 'udp6', lo);
      track(closeDgram(plain));
      const to = encodeEndpoint(lo, rx.port);
      const senders = [a, b].map((s) => encodeEndpoint(lo, s.port));
      senders.push(encodeEndpoint(lo, plain.address().port));
      // A: a run of 50 equal datagrams closed by a shorter one (one GSO send
      // of 51 segments, the last short); B: another size, a 3-byte tail;
      // then mixed sizes (no runs: one datagram per read); then A again.
      const planA1 = [...Array.from({ length: 50 }, () => 1200), 700];
      const planB = [...Array.from({ length: 30 }, () => 1000), 3];
      const planA2 = Array.from({ length: 20 }, (_, i) => 40 + i * 61);
      const planA3 = Array.from({ length: 40 }, () => 1452);
      const n = planA1.length + planB.length + planA2.length + planA3.length + 1;
      const done = collect(rx, n, senders);
      const wantA = sendPlan(a, to, 'a', planA1);
      const wantB = sendPlan(b, to, 'b', planB);
      wantA.push(...sendPlan(a, to, 'A', planA2));
      await new Promise<void>((resolve, reject) => plain.send(Buffer.from('plain'), rx.port, lo, (err) => (err ? reject(err) : resolve())));
      wantA.push(...sendPlan(a, to, 'Z', planA3));
      const { got, largest } = await done;
      expect(got).toHaveLength(n);
      expect(got.filter((g) => g.from === 0).map((g) => g.data)).toEqual(wantA);
      expect(got.filter((g) => g.from === 1).map((g) => g.data)).toEqual(wantB);
      expect(got.filter((g) => g.from === 2).map((g) => g.data)).toEqual(['plain']);
      expect(got.filter((g) => g.from === -1)).toEqual([]);
      expect(largest).toBeLessThanOrEqual(16);
      const st = rx.stats;
      expect(st.received).toBe(n);
      expect(st.truncated).toBe(0);
      // At least the three GSO runs arrived coalesced, and the datagrams
      // counted out of coalesced reads are at most those runs.
      expect(st.groReads).toBeGreaterThanOrEqual(3);
      expect(st.groDatagrams).toBeGreaterThanOrEqual(planA1.length + planB.length + planA3.length);
      expect(st.groDatagrams).toBeLessThanOrEqual(n - 1);
    });
  }

  it('delivers a coalesced read larger than many batches without further traffic to wake it', async () => {
    // 4 slots, one read of 60 datagrams, then silence: the leftovers are
    // only in our buffers (the socket is empty), so they must all be
    // delivered in the same wakeup.
    const rx = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1', batchSize: 4 }));
    const tx = gsoSender(4, '127.0.0.1');
    const done = collect(rx, 60, [encodeEndpoint('127.0.0.1', tx.port)]);
    const want = sendPlan(
      tx,
      encodeEndpoint('127.0.0.1', rx.port),
      'x',
      Array.from({ length: 60 }, () => 1000),
    );
    const { got, batches, largest } = await done;
    expect(got.map((g) => g.data)).toEqual(want);
    expect(got.every((g) => g.from === 0)).toBe(true);
    expect(largest).toBeLessThanOrEqual(4);
    expect(batches).toBeGreaterThanOrEqual(15);
    expect(rx.stats).toMatchObject({ groReads: 1, groDatagrams: 60, received: 60 });
  });

  it('drops and counts each coalesced datagram larger than a slot, and keeps the ones that fit', async () => {
    const rx = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1', slotSize: 512 }));
    const tx = gsoSender(4, '127.0.0.1');
    const done = collect(rx, 1, [encodeEndpoint('127.0.0.1', tx.port)]);
    const want = sendPlan(tx, encodeEndpoint('127.0.0.1', rx.port), 't', [...Array.from({ length: 10 }, () => 1000), 300]);
    const { got } = await done;
    expect(got.map((g) => g.data)).toEqual([want[10]]);
    expect(rx.stats).toMatchObject({ truncated: 10, groReads: 1, groDatagrams: 1, received: 1 });
  });

  it('gro: false reads the same GSO runs one datagram per read, and counts no GRO', async () => {
    const rx = track(NativeUdpSocket.open({ family: 4, port: 0, address: '127.0.0.1', batchSize: 16, gro: false, recvBufferSize: 8 << 20 }));
    expect(rx.stats).toMatchObject({ gro: false, groError: undefined });
    const tx = gsoSender(4, '127.0.0.1');
    const plan = [...Array.from({ length: 50 }, () => 1200), 700];
    const done = collect(rx, plan.length, [encodeEndpoint('127.0.0.1', tx.port)]);
    const want = sendPlan(tx, encodeEndpoint('127.0.0.1', rx.port), 'o', plan);
    const { got } = await done;
    expect(got.map((g) => g.data)).toEqual(want);
    expect(tx.stats.gsoDatagrams).toBe(plan.length);
    expect(rx.stats).toMatchObject({ gro: false, groReads: 0, groDatagrams: 0, received: plan.length });
  });
});
