/**
 * TUN offloads on real devices: two TUN devices with offload, each in its
 * own namespace, bridged by this process (what one reads, the other
 * writes, as a VPN does minus the crypto). A TCP transfer between the
 * namespaces then makes the sending kernel hand over TSO super-packets,
 * which the native side cuts into segments, and writeBatch merge them
 * again into GSO writes on the other device. The transfer's SHA-256 is
 * checked end to end.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TunDevice } from '../../src/tun/tun-device.js';
import { tcpTransfer } from '../helpers/daemon.js';
import { describeIntegration, Netns, run, uniqueSuffix } from '../helpers/netns.js';

function tunName(tag: string): string {
  return `o${tag}${uniqueSuffix()}`.slice(0, 15);
}

async function openIn(ns: Netns, addrs: string[], offload: boolean, batchSize?: number): Promise<TunDevice> {
  const dev = TunDevice.open({ name: tunName('b'), mtu: 1420, offload, batchSize });
  try {
    await run('ip', ['link', 'set', 'dev', dev.name, 'netns', ns.name]);
    for (const a of addrs) await dev.addAddress(a, { netns: ns.name });
    await dev.up({ netns: ns.name });
  } catch (err) {
    dev.close();
    throw err;
  }
  return dev;
}

/** Forwards every batch read from `from` to `to` in one writeBatch. */
function bridge(from: TunDevice, to: TunDevice, batches: number[]): void {
  from.onPackets((slots, lengths, count) => {
    batches.push(count);
    to.writeBatch(slots, count, lengths);
  });
  from.onError((err) => {
    throw err;
  });
}

describeIntegration('TUN offloads between two bridged devices', [], () => {
  let nsA: Netns;
  let nsB: Netns;

  beforeAll(async () => {
    nsA = await Netns.create('offa');
    nsB = await Netns.create('offb');
  });

  afterAll(async () => {
    await nsA?.destroy();
    await nsB?.destroy();
  });

  it('carries TCP over IPv4 and IPv6 intact as super-packets: TSO reads cut in C, coalesced GSO writes', async () => {
    const a = await openIn(nsA, ['10.204.0.1/24', 'fd00:204::1/64'], true);
    const b = await openIn(nsB, ['10.204.0.2/24', 'fd00:204::2/64'], true);
    try {
      expect(a.offload).toBe(true);
      expect(b.offload).toBe(true);
      const batchesAB: number[] = [];
      bridge(a, b, batchesAB);
      bridge(b, a, []);

      const v4 = await tcpTransfer(nsA, nsB, '10.204.0.2', 5201, 24 << 20, 60);
      expect(v4.received).toBe(24 << 20);
      expect(v4.remote).toBe(v4.local);
      const afterV4 = { ...a.stats, b: { ...b.stats } };
      // The sender's kernel handed over super-packets, cut into many segments...
      expect(afterV4.tsoPackets).toBeGreaterThan(0);
      expect(afterV4.tsoSegments).toBeGreaterThan(afterV4.tsoPackets * 2);
      // ...which the other device wrote coalesced, several segments per write.
      expect(afterV4.b.groWrites).toBeGreaterThan(0);
      expect(afterV4.b.groPackets).toBeGreaterThan(afterV4.b.groWrites * 2);
      expect(afterV4.readOffloadDrops + afterV4.b.readOffloadDrops).toBe(0);

      const v6 = await tcpTransfer(nsA, nsB, 'fd00:204::2', 5202, 16 << 20, 60);
      expect(v6.received).toBe(16 << 20);
      expect(v6.remote).toBe(v6.local);
      expect(a.stats.tsoPackets).toBeGreaterThan(afterV4.tsoPackets);
      expect(b.stats.groWrites).toBeGreaterThan(afterV4.b.groWrites);
      // Reads stayed bounded: a super-packet spans batches, never overflows one.
      expect(Math.max(...batchesAB)).toBeLessThanOrEqual(a.batchSize);
    } finally {
      a.close();
      b.close();
    }
  });

  it('a handler that closes the device in the middle of a cut super-packet gets no further batch', async () => {
    const a = await openIn(nsA, ['10.206.0.1/24'], true, 8);
    const b = await openIn(nsB, ['10.206.0.2/24'], true);
    try {
      let closedAt = 0;
      let callsAfterClose = 0;
      a.onPackets((slots, lengths, count) => {
        if (a.isClosed) {
          callsAfterClose++;
          return;
        }
        b.writeBatch(slots, count, lengths);
        // Close once the sender is pushing super-packets: with a small batch
        // this lands between two parts of one cut super-packet.
        if (a.stats.tsoPackets > 3) {
          closedAt = a.stats.readPackets;
          a.close();
        }
      });
      // The way back stops writing once A is closed.
      b.onPackets((slots, lengths, count) => {
        if (!a.isClosed) a.writeBatch(slots, count, lengths);
      });
      // The transfer cannot finish once A is gone; it only has to start.
      await tcpTransfer(nsA, nsB, '10.206.0.2', 5204, 8 << 20, 3).catch(() => undefined);
      expect(closedAt).toBeGreaterThan(0);
      expect(a.isClosed).toBe(true);
      expect(callsAfterClose).toBe(0);
    } finally {
      a.close();
      b.close();
    }
  });

  it('without offload the same bridge moves plain packets and counts no super-packets', async () => {
    const a = await openIn(nsA, ['10.205.0.1/24'], false);
    const b = await openIn(nsB, ['10.205.0.2/24'], false);
    try {
      expect(a.offload).toBe(false);
      bridge(a, b, []);
      bridge(b, a, []);
      const r = await tcpTransfer(nsA, nsB, '10.205.0.2', 5203, 4 << 20, 60);
      expect(r.remote).toBe(r.local);
      expect(a.stats.tsoPackets + b.stats.tsoPackets + a.stats.groWrites + b.stats.groWrites).toBe(0);
      expect(b.stats.writePackets).toBeGreaterThan(1000);
    } finally {
      a.close();
      b.close();
    }
  });
});
