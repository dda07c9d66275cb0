/**
 * In-memory fakes of the pipeline's two seams, in the spirit of
 * wireguard-go's tun/tuntest and conn/bindtest: a packet device whose
 * reads the test injects and whose writes it inspects, and datagram
 * transports joined by a network the test pumps by hand. Both record every
 * batch call, so a test can assert how many sendBatch / writeBatch calls a
 * batch became, not only what arrived. Endpoints are real encoded
 * endpoints (src/transport/endpoint-codec.ts).
 */
import type { DatagramBatchHandler, DatagramTransport } from '../../src/transport/datagram-transport.js';
import { ENDPOINT_SIZE, encodeEndpoint, type EncodedEndpoint } from '../../src/transport/endpoint-codec.js';
import type { PacketBatchHandler, PacketDevice } from '../../src/tun/packet-device.js';

/** A failed write, as TunError reports one: how many packets went before it. */
export class FakeWriteError extends Error {
  constructor(readonly written: number) {
    super('fake TUN write failed');
  }
}

export class FakeTun implements PacketDevice {
  private handler: PacketBatchHandler | undefined;
  private errorHandler: ((err: Error) => void) | undefined;
  /** Every writeBatch call: the packets it wrote (copies), in order. */
  readonly writeCalls: Uint8Array[][] = [];
  /** Next writeBatch: write only this many, then drop the rest (queue full) or throw. */
  failNext: { written: number; mode: 'drop' | 'throw' } | undefined;

  onPackets(handler: PacketBatchHandler): void {
    this.handler = handler;
  }

  onError(handler: (err: Error) => void): void {
    this.errorHandler = handler;
  }

  /** What the kernel would hand the daemon: one read batch. The slots are reused, as the real device's are. */
  read(packets: readonly Uint8Array[]): void {
    const slots = packets.map((p) => {
      const slot = new Uint8Array(Math.max(p.length, 1) + 64);
      slot.fill(0xee); // stale bytes past the length must not matter
      slot.set(p);
      return slot;
    });
    const lengths = Uint32Array.from(packets.map((p) => p.length));
    if (this.handler === undefined) throw new Error('FakeTun: nobody reads');
    this.handler(slots, lengths, packets.length);
    // Reused by the next read: anything the pipeline kept must have been copied.
    for (const s of slots) s.fill(0xdd);
  }

  fail(err: Error): void {
    this.errorHandler?.(err);
  }

  writeBatch(packets: readonly Uint8Array[], count: number, lengths: Uint32Array): number {
    const fail = this.failNext;
    this.failNext = undefined;
    const n = fail === undefined ? count : Math.min(fail.written, count);
    const call: Uint8Array[] = [];
    for (let i = 0; i < n; i++) call.push(copyOf(packets[i], lengths[i]));
    this.writeCalls.push(call);
    if (fail?.mode === 'throw') throw new FakeWriteError(n);
    return n;
  }

  /** Every packet written so far, across calls. */
  get written(): Uint8Array[] {
    return this.writeCalls.flat();
  }
}

interface InFlight {
  data: Uint8Array;
  from: EncodedEndpoint;
  to: string;
}

/** A copy that owns its bytes (Buffer's slice() is a view: the pipeline reuses its buffers). */
function copyOf(b: Uint8Array, length: number): Uint8Array {
  const c = new Uint8Array(length);
  c.set(b.subarray(0, length));
  return c;
}

function keyOf(e: Uint8Array): string {
  return Buffer.from(e.subarray(0, ENDPOINT_SIZE)).toString('hex');
}

/** Joins FakeTransports: datagrams wait here until the test pumps them. */
export class FakeNetwork {
  private readonly hosts = new Map<string, FakeTransport>();
  queue: InFlight[] = [];

  transport(address: string, port: number, opts: { batchSize?: number } = {}): FakeTransport {
    const t = new FakeTransport(this, address, port, opts.batchSize ?? 128);
    this.hosts.set(keyOf(t.address), t);
    return t;
  }

  /** @internal */ attach(t: FakeTransport, old: EncodedEndpoint): void {
    this.hosts.delete(keyOf(old));
    this.hosts.set(keyOf(t.address), t);
  }

  /** @internal */ enqueue(data: Uint8Array, from: EncodedEndpoint, to: Uint8Array): void {
    this.queue.push({ data, from, to: keyOf(to) });
  }

  /**
   * Delivers what is in flight now, each receiver's share in batches of
   * its batch size, from the sender's address at send time. Returns how
   * many were delivered (to nobody: lost, as on a real network).
   */
  deliverOnce(): number {
    const q = this.queue;
    this.queue = [];
    const byHost = new Map<FakeTransport, InFlight[]>();
    for (const d of q) {
      const host = this.hosts.get(d.to);
      if (host === undefined) continue;
      let list = byHost.get(host);
      if (list === undefined) {
        list = [];
        byHost.set(host, list);
      }
      list.push(d);
    }
    for (const [host, list] of byHost) host.receive(list.map((d) => ({ data: d.data, from: d.from })));
    return q.length;
  }

  /** Delivers until nothing is in flight (bounded: a loop would be a bug). */
  pump(maxRounds = 50): void {
    for (let i = 0; i < maxRounds; i++) if (this.deliverOnce() === 0) return;
    throw new Error('FakeNetwork: still busy after many rounds');
  }

  /** Takes what is in flight without delivering it (to replay, drop or reorder). */
  take(): InFlight[] {
    const q = this.queue;
    this.queue = [];
    return q;
  }
}

export class FakeTransport implements DatagramTransport {
  readonly kind = 'memory';
  readonly maxDatagram = 0;
  address: EncodedEndpoint;
  private handler: DatagramBatchHandler | undefined;
  /** Every sendBatch call: how many datagrams it carried. */
  readonly sendBatchCalls: number[] = [];
  /** Datagrams sent with send() (handshakes, staged data), one per call. */
  singleSends = 0;
  /** Every datagram sent, with its destination (copies). */
  readonly sent: { data: Uint8Array; to: EncodedEndpoint }[] = [];
  oversized = 0;
  failures = { count: 0, last: undefined as string | undefined };

  constructor(
    private readonly net: FakeNetwork,
    address: string,
    readonly port: number,
    private readonly batchSize: number,
  ) {
    this.address = encodeEndpoint(address, port);
  }

  /** NAT rebinding, or the host moved: its datagrams come from here from now on. */
  moveTo(address: string, port: number): void {
    const old = this.address;
    this.address = encodeEndpoint(address, port);
    this.net.attach(this, old);
  }

  onBatch(handler: DatagramBatchHandler): void {
    this.handler = handler;
  }

  onError(): void {}

  sendBatch(bufs: readonly Uint8Array[], lengths: Uint32Array, dests: readonly EncodedEndpoint[], count: number): void {
    this.sendBatchCalls.push(count);
    for (let i = 0; i < count; i++) this.out(bufs[i], lengths[i], dests[i]);
  }

  send(buf: Uint8Array, length: number, dest: EncodedEndpoint): void {
    this.singleSends++;
    this.out(buf, length, dest);
  }

  private out(buf: Uint8Array, length: number, dest: EncodedEndpoint): void {
    // The real transports copy during the call: the caller reuses buf at once.
    const data = copyOf(buf, length);
    const to = copyOf(dest, ENDPOINT_SIZE);
    this.sent.push({ data, to });
    this.net.enqueue(data, this.address, to);
  }

  /** Hands datagrams to the pipeline as the real transports do: slots, lengths and sources reused per batch. */
  receive(datagrams: readonly { data: Uint8Array; from: EncodedEndpoint }[]): void {
    if (this.handler === undefined) return;
    for (let start = 0; start < datagrams.length; start += this.batchSize) {
      const part = datagrams.slice(start, start + this.batchSize);
      const slots = part.map((d) => {
        const s = new Uint8Array(Math.max(d.data.length, 1) + 32);
        s.set(d.data);
        return s;
      });
      const lengths = Uint32Array.from(part.map((d) => d.data.length));
      const sources = new Uint8Array(part.length * ENDPOINT_SIZE);
      for (const [i, d] of part.entries()) sources.set(d.from.subarray(0, ENDPOINT_SIZE), i * ENDPOINT_SIZE);
      this.handler(slots, lengths, sources, part.length);
      for (const s of slots) s.fill(0xdd);
      sources.fill(0xdd);
    }
  }

  sendFailures(): { count: number; last: string | undefined } {
    return { ...this.failures };
  }

  oversizedReceived(): number {
    return this.oversized;
  }

  groStats(): { gro: boolean; reads: number; datagrams: number } {
    return { gro: false, reads: 0, datagrams: 0 };
  }

  setMark(): void {}

  async close(): Promise<void> {}
}
