/**
 * The pipeline holds the protocol's clock for each batch it hands the
 * device (WireGuardDevice.holdClock): one clock read per TUN batch and per
 * datagram batch instead of one per packet, and the clock is live again
 * after the batch, also when the batch threw.
 */
import { describe, expect, it } from 'vitest';
import { MESSAGE_INITIATION, MESSAGE_TRANSPORT } from '../../src/protocol/messages.js';
import { connect, ipv4, makeBed } from './bed.js';

const burst = (n: number): Uint8Array[] => Array.from({ length: n }, (_, i) => ipv4('10.0.0.1', '10.0.0.2', 1420, i));

describe('pipeline: one protocol clock read per batch', () => {
  it('a TUN batch of 40 packets and the 40 datagrams it becomes each read the clock once', async () => {
    const bed = await makeBed();
    connect(bed);
    const before = bed.clock.reads;
    const pkts = burst(40);
    bed.a.tun.read(pkts);
    expect(bed.a.transport.sendBatchCalls.at(-1)).toBe(40);
    expect(bed.clock.reads - before).toBe(1);
    const b0 = bed.b.tun.written.length;
    bed.net.deliverOnce();
    expect(bed.clock.reads - before).toBe(2);
    expect(bed.b.tun.written.slice(b0)).toEqual(pkts);
  });

  it('a batch that throws still releases the clock: time moves on for the next packet', async () => {
    const bed = await makeBed();
    connect(bed);
    const send = bed.a.transport.sendBatch.bind(bed.a.transport);
    bed.a.transport.sendBatch = () => {
      throw new Error('socket gone');
    };
    expect(() => bed.a.tun.read(burst(3))).toThrow('socket gone');
    bed.a.transport.sendBatch = send;
    bed.clock.advance(181_000); // past Reject-After-Time: a held clock would still seal with the old session
    const sent = bed.a.transport.sent.length;
    bed.a.tun.read(burst(1));
    expect(bed.a.peer.proto.queuedPackets).toBe(1);
    const fresh = bed.a.transport.sent.slice(sent).map((d) => d.data[0]);
    expect(fresh).toEqual([MESSAGE_INITIATION]);
    expect(fresh).not.toContain(MESSAGE_TRANSPORT);
  });
});
