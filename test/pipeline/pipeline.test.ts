/**
 * The data path in-process: two real WireGuardDevices behind two real
 * Pipelines, joined by the fakes of test/pipeline/fakes.ts (bed.ts). What
 * the namespace tests can only see from outside (a ping gets through),
 * asserted here call by call: how batches become sends and writes, what
 * is staged, where replies go, which drop counter moves.
 */
import { describe, expect, it } from 'vitest';
import { MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT } from '../../src/protocol/messages.js';
import { DROP_REASONS } from '../../src/pipeline/counters.js';
import { decodeEndpoint, encodeEndpoint } from '../../src/transport/endpoint-codec.js';
import { connect, ipv4, ipv6, makeBed } from './bed.js';

const WARN = 40;
const INFO = 30;

function nonZeroDrops(d: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(d).filter(([, n]) => n !== 0));
}

describe('pipeline: handshake and staged packets', () => {
  it('stages packets read before a session exists, sends one initiation, and delivers them in order once the handshake completes', async () => {
    const bed = await makeBed();
    const pkts = [1, 2, 3].map((i) => ipv4('10.0.0.1', '10.0.0.2', 100 + i, i));
    bed.a.tun.read(pkts);
    // Nothing sealed yet: one initiation, sent on its own, no data batch.
    expect(bed.a.transport.sendBatchCalls).toEqual([]);
    expect(bed.a.transport.sent.map((d) => d.data[0])).toEqual([MESSAGE_INITIATION]);
    expect(bed.a.peer.proto.queuedPackets).toBe(3);

    bed.net.deliverOnce(); // initiation → B; B answers to its source
    expect(bed.b.transport.sent.map((d) => d.data[0])).toEqual([MESSAGE_RESPONSE]);
    expect(decodeEndpoint(bed.b.transport.sent[0].to)).toEqual({ address: '192.0.2.1', port: 51820, family: 4 });
    // B did not know A's endpoint: the authenticated initiation taught it.
    expect(bed.b.peer.endpoint).toEqual({ address: '192.0.2.1', port: 51820, family: 4 });

    bed.net.deliverOnce(); // response → A: the staged packets leave
    expect(bed.a.peer.proto.queuedPackets).toBe(0);
    expect(bed.a.transport.sent.slice(1).map((d) => d.data[0])).toEqual([MESSAGE_TRANSPORT, MESSAGE_TRANSPORT, MESSAGE_TRANSPORT]);
    bed.net.pump();
    expect(bed.b.tun.written).toEqual(pkts);
    // Packets counted where they reached the TUN; staged ones were not sealed by the read, so not counted as sent.
    expect(bed.b.peer.stats.rxPackets).toBe(3);
    expect(bed.a.peer.stats.txPackets).toBe(0);
    expect(bed.a.peer.stats.handshakesCompleted).toBe(1);
    expect(bed.b.peer.stats.rxBytes).toBe(bed.a.transport.sent.slice(1).reduce((n, d) => n + d.data.length, 0));
    expect(nonZeroDrops(bed.a.pipeline.drops)).toEqual({});
    expect(nonZeroDrops(bed.b.pipeline.drops)).toEqual({});
  });

  it('the responder stages what it reads before the initiator confirms, and sends it when the first data arrives (no handshake of its own)', async () => {
    const bed = await makeBed();
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2', 60, 1)]);
    bed.net.deliverOnce(); // initiation → B; B's response is in flight
    const fromB = ipv4('10.0.0.2', '10.0.0.1', 70, 2);
    bed.b.tun.read([fromB]);
    // B's session is not confirmed: the packet waits, nothing new is sent.
    expect(bed.b.peer.proto.queuedPackets).toBe(1);
    expect(bed.b.transport.sent.map((d) => d.data[0])).toEqual([MESSAGE_RESPONSE]);
    bed.net.deliverOnce(); // response → A: A's staged packet leaves
    bed.net.deliverOnce(); // A's data → B: confirmed, B's staged packet leaves
    expect(bed.b.peer.proto.queuedPackets).toBe(0);
    expect(bed.b.transport.sent.map((d) => d.data[0])).toEqual([MESSAGE_RESPONSE, MESSAGE_TRANSPORT]);
    bed.net.pump();
    expect(bed.a.tun.written).toEqual([fromB]);
    expect(bed.b.tun.written).toEqual([ipv4('10.0.0.1', '10.0.0.2', 60, 1)]);
  });

  it('carries IPv4 and IPv6 both ways once connected, and counts keepalives apart', async () => {
    const bed = await makeBed();
    connect(bed);
    const b0 = bed.b.tun.written.length;
    const toB = [ipv4('10.0.0.1', '10.0.0.2', 1420), ipv6(1, 2, 500)];
    const toA = [ipv4('10.0.0.2', '10.0.0.1', 28), ipv6(2, 1, 0)];
    bed.a.tun.read(toB);
    bed.b.tun.read(toA);
    bed.net.pump();
    expect(bed.b.tun.written.slice(b0)).toEqual(toB);
    expect(bed.a.tun.written).toEqual(toA);
    expect(bed.a.peer.stats.txPackets).toBe(2);
    expect(bed.b.peer.stats.txPackets).toBe(2);
    // A keepalive: decrypted, counted, never written to the TUN.
    const keepalives = (): number => bed.a.pipeline.counters.keepalivesRx + bed.b.pipeline.counters.keepalivesRx;
    const keepalivesBefore = keepalives();
    const writtenA = bed.a.tun.written.length;
    const writtenB = bed.b.tun.written.length;
    bed.clock.advance(10_500); // Keepalive-Timeout: each received data and sent none since
    bed.tick();
    bed.net.pump();
    expect(keepalives()).toBeGreaterThan(keepalivesBefore);
    expect([bed.a.tun.written.length, bed.b.tun.written.length]).toEqual([writtenA, writtenB]);
    expect(bed.a.tun.written).toEqual(toA);
  });
});

describe('pipeline: batches', () => {
  it('one TUN batch is one sendBatch, and one datagram batch is one writeBatch', async () => {
    const bed = await makeBed();
    connect(bed);
    const sends = bed.a.transport.sendBatchCalls.length;
    const writes = bed.b.tun.writeCalls.length;
    const pkts = Array.from({ length: 40 }, (_, i) => ipv4('10.0.0.1', '10.0.0.2', 64 + i, i));
    bed.a.tun.read(pkts);
    expect(bed.a.transport.sendBatchCalls.slice(sends)).toEqual([40]);
    bed.net.deliverOnce();
    expect(bed.b.tun.writeCalls.slice(writes).map((c) => c.length)).toEqual([40]);
    expect(bed.b.tun.written.slice(-40)).toEqual(pkts);
  });

  it('splits at 1024: a read of 1500 packets is two sends, a received batch of 1500 two writes', async () => {
    const bed = await makeBed({ bBatch: 2048 });
    connect(bed);
    const sends = bed.a.transport.sendBatchCalls.length;
    const writes = bed.b.tun.writeCalls.length;
    const pkts = Array.from({ length: 1500 }, (_, i) => ipv4('10.0.0.1', '10.0.0.2', 40, i));
    bed.a.tun.read(pkts);
    expect(bed.a.transport.sendBatchCalls.slice(sends)).toEqual([1024, 476]);
    bed.net.deliverOnce();
    expect(bed.b.tun.writeCalls.slice(writes).map((c) => c.length)).toEqual([1024, 476]);
    expect(bed.b.tun.written.slice(-1500)).toEqual(pkts);
    expect(bed.b.pipeline.counters.tunTx).toBeGreaterThanOrEqual(1500);
  });

  it('a batch whose packets all drop sends nothing and writes nothing', async () => {
    const bed = await makeBed();
    connect(bed);
    const sends = bed.a.transport.sendBatchCalls.length;
    bed.a.tun.read([ipv4('10.0.0.1', '10.9.9.9'), ipv4('10.0.0.1', '10.9.9.8')]);
    expect(bed.a.transport.sendBatchCalls.length).toBe(sends);
    expect(bed.a.pipeline.drops['no-peer']).toBe(2);
  });
});

describe('pipeline: roaming', () => {
  it('the endpoint follows the latest authenticated packet, and replies go there', async () => {
    const bed = await makeBed({ bKnowsA: true });
    connect(bed);
    expect(bed.b.peer.endpoint).toEqual({ address: '192.0.2.1', port: 51820, family: 4 });
    // A's NAT rebinds: its packets now come from elsewhere.
    bed.a.transport.moveTo('198.51.100.7', 40000);
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2')]);
    bed.net.pump();
    expect(bed.b.peer.endpoint).toEqual({ address: '198.51.100.7', port: 40000, family: 4 });
    expect(bed.b.peer.endpointKey).toEqual(encodeEndpoint('198.51.100.7', 40000));
    const sent = bed.b.transport.sent.length;
    bed.b.tun.read([ipv4('10.0.0.2', '10.0.0.1')]);
    expect(decodeEndpoint(bed.b.transport.sent[sent].to)).toEqual({ address: '198.51.100.7', port: 40000, family: 4 });
    bed.net.pump();
    expect(bed.a.tun.written.at(-1)).toEqual(ipv4('10.0.0.2', '10.0.0.1'));
  });

  it('a packet that does not authenticate (replayed, forged) never moves the endpoint', async () => {
    const bed = await makeBed({ bKnowsA: true });
    connect(bed);
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2')]);
    const captured = bed.net.take();
    expect(captured).toHaveLength(1);
    bed.b.transport.receive([{ data: captured[0].data, from: captured[0].from }]);
    // The same datagram again, from an attacker's address: a replay.
    const attacker = encodeEndpoint('203.0.113.66', 6666);
    bed.b.transport.receive([{ data: captured[0].data, from: attacker }]);
    // A forged one: right index, wrong tag.
    const forged = captured[0].data.slice();
    forged[forged.length - 1] ^= 1;
    forged[8] ^= 0x40; // a counter not seen yet
    bed.b.transport.receive([{ data: forged, from: attacker }]);
    expect(bed.b.pipeline.drops.replay).toBe(1);
    expect(bed.b.pipeline.drops['bad-auth']).toBe(1);
    expect(bed.b.peer.endpoint).toEqual({ address: '192.0.2.1', port: 51820, family: 4 });
  });
});

describe('pipeline: inner source check', () => {
  it("drops a packet whose inner source is not in the sending peer's allowed IPs (source-not-allowed)", async () => {
    const bed = await makeBed();
    connect(bed);
    const before = bed.b.tun.written.length;
    const rx = bed.b.peer.stats.rxPackets;
    // A routes it to B (destination 10.0.0.2), but B allows A only 10.0.0.1 and fd00::1.
    bed.a.tun.read([ipv4('10.0.0.99', '10.0.0.2'), ipv6(99, 2), ipv4('10.0.0.1', '10.0.0.2')]);
    bed.net.pump();
    expect(bed.b.pipeline.drops['source-not-allowed']).toBe(2);
    expect(bed.b.tun.written.slice(before)).toEqual([ipv4('10.0.0.1', '10.0.0.2')]);
    expect(bed.b.peer.stats.rxPackets).toBe(rx + 1);
  });
});

describe('pipeline: drops by reason', () => {
  it('TUN side: bad-ip-version, bad-ip-header, no-peer, no-endpoint, oversized; nothing sent for any', async () => {
    const bed = await makeBed();
    const v4short = ipv4('10.0.0.1', '10.0.0.2').subarray(0, 19);
    const v4lying = ipv4('10.0.0.1', '10.0.0.2', 60);
    v4lying[3] = 200; // claims 200 bytes, has 60
    const v6short = ipv6(1, 2, 0).subarray(0, 39);
    bed.a.tun.read([new Uint8Array(0), Uint8Array.of(0x00, 1, 2, 3), Uint8Array.of(0x50), v4short, v4lying, v6short]);
    expect(nonZeroDrops(bed.a.pipeline.drops)).toEqual({ 'bad-ip-version': 3, 'bad-ip-header': 3 });
    bed.a.tun.read([ipv4('10.0.0.1', '10.7.7.7'), ipv6(1, 77)]);
    expect(bed.a.pipeline.drops['no-peer']).toBe(2);
    // B was not told A's endpoint and has heard nothing from A.
    bed.b.tun.read([ipv4('10.0.0.2', '10.0.0.1')]);
    expect(bed.b.pipeline.drops['no-endpoint']).toBe(1);
    // Larger than a transmit slot (MTU 1420: max(1420, 1500) + 256): dropped, not thrown.
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2', 1756 - 47 + 1)]);
    expect(bed.a.pipeline.drops.oversized).toBe(1);
    expect(bed.a.transport.sent).toEqual([]);
    expect(bed.b.transport.sent).toEqual([]);
    expect(bed.a.pipeline.counters.tunRx).toBe(9);
  });

  it('UDP side: malformed, short, unknown-index, replay, bad-auth, bad-mac, unexpected-message; nothing reaches the TUN', async () => {
    const bed = await makeBed();
    connect(bed);
    const written = bed.b.tun.written.length;
    const from = bed.a.transport.address;
    const transport = new Uint8Array(64);
    transport[0] = MESSAGE_TRANSPORT;
    transport.set([0x78, 0x56, 0x34, 0x12], 4); // a receiver index nobody handed out
    const badMac = new Uint8Array(148);
    badMac[0] = MESSAGE_INITIATION;
    const response = new Uint8Array(92);
    response[0] = MESSAGE_RESPONSE;
    bed.b.transport.receive(
      [new Uint8Array(0), Uint8Array.of(4), Uint8Array.of(9, 0, 0, 0, 1, 2, 3), new Uint8Array(40).fill(4), transport, badMac].map((data) => ({ data, from })),
    );
    expect(nonZeroDrops(bed.b.pipeline.drops)).toEqual({ malformed: 4, 'unknown-index': 1, 'bad-mac': 1 });
    // A real data datagram, delivered twice, then with a flipped byte.
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2')]);
    const [d] = bed.net.take();
    bed.b.transport.receive([d, d]);
    const flipped = d.data.slice();
    flipped[20] ^= 0xff;
    flipped[8] += 1; // a fresh counter, so the tag is what fails
    bed.b.transport.receive([{ data: flipped, from }]);
    expect(bed.b.pipeline.drops.replay).toBe(1);
    expect(bed.b.pipeline.drops['bad-auth']).toBe(1);
    expect(bed.b.tun.written.length).toBe(written + 1);
    expect(bed.b.pipeline.counters.udpRx).toBeGreaterThanOrEqual(9);
  });

  it('UDP side: bad-inner-packet (the plaintext is no IP packet) and oversized (counted by the transport)', async () => {
    const bed = await makeBed();
    connect(bed);
    const out = new Uint8Array(2048);
    const notIp = new Uint8Array(40).fill(0x45);
    notIp[2] = 0xff; // total length 65k: larger than what arrived
    const n = bed.a.peer.proto.encapsulate(notIp, out);
    expect(n).toBeGreaterThan(0);
    bed.b.transport.receive([{ data: out.slice(0, n), from: bed.a.transport.address }]);
    expect(bed.b.pipeline.drops['bad-inner-packet']).toBe(1);
    bed.b.transport.oversized = 5;
    bed.b.pipeline.tick();
    bed.b.transport.oversized = 7;
    bed.b.pipeline.tick();
    bed.b.pipeline.tick();
    expect(bed.b.pipeline.drops.oversized).toBe(7);
  });

  it('tun-write-failed: a short write (queue full) and a failed one count what was not written', async () => {
    const bed = await makeBed();
    connect(bed);
    bed.b.tun.failNext = { written: 1, mode: 'drop' };
    bed.a.tun.read([1, 2, 3].map((i) => ipv4('10.0.0.1', '10.0.0.2', 50, i)));
    bed.net.deliverOnce();
    expect(bed.b.pipeline.drops['tun-write-failed']).toBe(2);
    bed.b.tun.failNext = { written: 2, mode: 'throw' };
    bed.a.tun.read([4, 5, 6, 7].map((i) => ipv4('10.0.0.1', '10.0.0.2', 50, i)));
    bed.net.deliverOnce();
    expect(bed.b.pipeline.drops['tun-write-failed']).toBe(4);
    // The next batch is written whole: a failure does not stick.
    const tunTx = bed.b.pipeline.counters.tunTx;
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2', 50, 8)]);
    bed.net.deliverOnce();
    expect(bed.b.pipeline.counters.tunTx).toBe(tunTx + 1);
  });

  it('every reason the pipeline counts is in the one list, and the counters start at zero', async () => {
    const bed = await makeBed();
    expect(Object.keys(bed.a.pipeline.drops)).toEqual([...DROP_REASONS]);
    expect(new Set(DROP_REASONS).size).toBe(DROP_REASONS.length);
    expect(Object.values(bed.a.pipeline.drops).every((n) => n === 0)).toBe(true);
  });
});

describe('pipeline: under load (injected clock)', () => {
  it('32 initiations in a window turn cookies on; a second after the flood they go off', async () => {
    const bed = await makeBed();
    bed.tick(); // opens the first window at the simulated time
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2')]);
    const [init] = bed.net.take();
    expect(init.data[0]).toBe(MESSAGE_INITIATION);
    const flood = Array.from({ length: 31 }, () => ({ data: init.data, from: encodeEndpoint('203.0.113.5', 5555) }));
    bed.b.transport.receive(flood);
    expect(bed.b.device.isUnderLoad).toBe(false);
    bed.b.transport.receive([{ data: init.data, from: init.from }]);
    expect(bed.b.device.isUnderLoad).toBe(true);
    expect(bed.b.logs.some((l) => l.level === WARN && /handshake flood/.test(l.msg))).toBe(true);
    // Under load an initiation without mac2 is answered with a cookie reply, not a response.
    const replies = bed.b.pipeline.cookieRepliesSent;
    bed.b.transport.sent.length = 0;
    bed.b.transport.receive([{ data: init.data, from: init.from }]);
    expect(bed.b.pipeline.cookieRepliesSent).toBe(replies + 1);
    expect(bed.b.transport.sent.map((d) => d.data[0])).toEqual([MESSAGE_COOKIE_REPLY]);
    // Still under load 500 ms later (Date.now would have been another clock: only the injected one moves).
    bed.clock.advance(500);
    bed.b.pipeline.tick();
    expect(bed.b.device.isUnderLoad).toBe(true);
    // That tick closed the flood's window: a second from then, not from the first initiation.
    bed.clock.advance(600);
    bed.b.pipeline.tick();
    expect(bed.b.device.isUnderLoad).toBe(true);
    bed.clock.advance(450);
    bed.b.pipeline.tick();
    expect(bed.b.device.isUnderLoad).toBe(false);
    expect(bed.b.logs.some((l) => l.level === INFO && /flood over/.test(l.msg))).toBe(true);
  });

  it('31 initiations per window, window after window, never turn it on', async () => {
    const bed = await makeBed();
    bed.tick();
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2')]);
    const [init] = bed.net.take();
    for (let w = 0; w < 5; w++) {
      bed.b.transport.receive(Array.from({ length: 31 }, () => ({ data: init.data, from: init.from })));
      bed.clock.advance(101);
      bed.b.pipeline.tick();
    }
    expect(bed.b.device.isUnderLoad).toBe(false);
    expect(bed.b.pipeline.cookieRepliesSent).toBe(0);
  });
});

describe('pipeline: timers and transport changes', () => {
  it("tick() sends the protocol's retries to the peer's endpoint, and a new transport takes over", async () => {
    const bed = await makeBed();
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2')]);
    bed.net.take(); // the initiation is lost
    bed.clock.advance(5_400); // Rekey-Timeout + jitter
    bed.a.pipeline.tick();
    const retry = bed.net.take();
    expect(retry.map((d) => d.data[0])).toEqual([MESSAGE_INITIATION]);
    expect(decodeEndpoint(encodeEndpoint('192.0.2.2', 51821))).toEqual(decodeEndpoint(bed.a.transport.sent.at(-1)?.to ?? new Uint8Array(24)));
    // A rebind: the new transport carries the traffic, the old one gets nothing more.
    const next = bed.net.transport('192.0.2.1', 51830);
    const old = bed.a.transport;
    bed.a.pipeline.setTransport(next);
    bed.b.transport.receive([{ data: retry[0].data, from: next.address }]);
    bed.net.pump();
    bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2', 80, 5)]);
    bed.net.pump();
    expect(next.sent.length).toBeGreaterThan(0);
    expect(old.sent.length).toBe(2);
    expect(bed.b.tun.written.at(-1)).toEqual(ipv4('10.0.0.1', '10.0.0.2', 80, 5));
  });

  it('send failures are summarised at most every 10 s of the injected clock', async () => {
    const bed = await makeBed();
    bed.clock.advance(20_000);
    bed.a.transport.failures = { count: 3, last: 'ENETUNREACH' };
    bed.a.pipeline.tick();
    bed.a.transport.failures = { count: 5, last: 'ENETUNREACH' };
    bed.clock.advance(5_000);
    bed.a.pipeline.tick();
    const warned = (): number => bed.a.logs.filter((l) => l.msg === 'UDP sends failing').length;
    expect(warned()).toBe(1);
    bed.clock.advance(5_001);
    bed.a.pipeline.tick();
    expect(warned()).toBe(2);
  });
});
