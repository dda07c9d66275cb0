/**
 * A Linux TUN device (layer 3, no packet-info header) read in batches.
 *
 * Reads: the native side wakes on readiness, reads up to `batchSize`
 * packets into slots of one slab allocated here once, writes their lengths
 * into a Uint32Array, and calls the handler once per wakeup. The handler
 * must finish with the slots before returning (copy what it keeps): they
 * are overwritten by the next batch.
 *
 * Slots are `slotSize` bytes, which is at least the `mtu` given to open()
 * (default 1500). Raising the interface MTU above it later makes larger
 * packets be dropped (counted in stats.readOversizeDrops), never truncated.
 *
 * Offload (`offload: true`): the device is opened with IFF_VNET_HDR and the
 * kernel's TCP segmentation and checksum offloads. The kernel may then hand
 * over TCP super-packets of up to 64 KiB, which the native side cuts into
 * MTU-sized segments with full checksums before JavaScript sees them; and
 * writeBatch() merges consecutive segments of a TCP flow into one
 * super-packet per write (GRO), which the kernel forwards or receives as
 * one packet. JavaScript sees plain IP packets either way.
 *
 * Event loop: a device holds the loop alive only while it is being read
 * (like a socket); `unref()` makes an active reader not hold it, and
 * close() always releases it, so a closed device never keeps the process
 * from exiting.
 */
import * as ip from './iproute.js';
import { loadNativeTun, type NativeHandle, type NativeTun } from './native-binding.js';
import { TunError } from './tun-error.js';
import type { PacketDevice } from './packet-device.js';

export interface TunOpenOptions {
  /** Interface name (at most 15 bytes; "tun%d" style templates allowed). Kernel-chosen when absent. */
  name?: string;
  /** Most packets handed over per wakeup (1..4096, default 128). */
  batchSize?: number;
  /** Sets the interface MTU at open and sizes the read slots (default: slots for 1500). */
  mtu?: number;
  /** IFF_MULTI_QUEUE: several opens of the same name each get their own queue. */
  multiQueue?: boolean;
  /** TCP segmentation/receive offloads (see above); default false. */
  offload?: boolean;
}

/** slots/lengths are reused after the handler returns. */
export type TunBatchHandler = (slots: readonly Buffer[], lengths: Uint32Array, count: number) => void;

export interface TunStats {
  readPackets: number;
  writePackets: number;
  /** Packets not written because the device queue was full (EAGAIN). */
  writeDrops: number;
  /** Packets read that were larger than a slot and so dropped. */
  readOversizeDrops: number;
  /** Offload-mode reads with a virtio header we could not use, dropped. */
  readOffloadDrops: number;
  /** TCP super-packets read, and the segments cut from them. */
  tsoPackets: number;
  tsoSegments: number;
  /** Coalesced writes, and the packets they carried. */
  groWrites: number;
  groPackets: number;
}

const DEFAULT_BATCH = 128;
const DEFAULT_SLOT_MTU = 1500;
// Slots start on cache-line boundaries.
const SLOT_ALIGN = 64;

function checkInt(what: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new TunError('EINVAL', `${what} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

export class TunDevice implements PacketDevice {
  readonly name: string;
  readonly batchSize: number;
  readonly slotSize: number;
  /** Whether the kernel accepted the offloads asked for with `offload: true`. */
  readonly offload: boolean;

  private readonly native: NativeTun;
  private readonly handle: NativeHandle;
  private readonly counters: TunStats = {
    readPackets: 0,
    writePackets: 0,
    writeDrops: 0,
    readOversizeDrops: 0,
    readOffloadDrops: 0,
    tsoPackets: 0,
    tsoSegments: 0,
    groWrites: 0,
    groPackets: 0,
  };
  private batchHandler: TunBatchHandler | undefined;
  private errorHandler: ((err: Error) => void) | undefined;
  private slots: Buffer[] = [];
  private lengths = new Uint32Array(0);
  private reading = false;
  private closed = false;

  private constructor(native: NativeTun, handle: NativeHandle, name: string, batchSize: number, slotSize: number, offload: boolean) {
    this.native = native;
    this.handle = handle;
    this.name = name;
    this.batchSize = batchSize;
    this.slotSize = slotSize;
    this.offload = offload;
  }

  /** Creates (or attaches to) the TUN interface; synchronous. Throws TunError (code = errno name). */
  static open(opts: TunOpenOptions = {}): TunDevice {
    const batchSize = checkInt('batchSize', opts.batchSize ?? DEFAULT_BATCH, 1, 4096);
    if (opts.mtu !== undefined) checkInt('mtu', opts.mtu, 68, 65535);
    const slotMtu = Math.max(opts.mtu ?? DEFAULT_SLOT_MTU, DEFAULT_SLOT_MTU);
    const slotSize = Math.ceil(slotMtu / SLOT_ALIGN) * SLOT_ALIGN;
    const native = loadNativeTun();
    let handle: NativeHandle;
    let name: string;
    let offload: boolean;
    try {
      [handle, name, offload] = native.open(opts.name ?? '', opts.multiQueue === true, opts.offload === true);
    } catch (err) {
      throw TunError.from(err);
    }
    if (opts.mtu !== undefined) {
      try {
        native.setMtu(name, opts.mtu);
      } catch (err) {
        native.close(handle);
        throw TunError.from(err);
      }
    }
    return new TunDevice(native, handle, name, batchSize, slotSize, offload);
  }

  /** Sets the batch handler and starts reading (a later call replaces the handler). */
  onPackets(handler: TunBatchHandler): void {
    this.batchHandler = handler;
    if (this.reading) return;
    if (this.closed) throw new TunError('EBADF', `TUN device ${this.name} is closed`);
    const slab = new ArrayBuffer(this.slotSize * this.batchSize);
    this.slots = [];
    for (let i = 0; i < this.batchSize; i++) this.slots.push(Buffer.from(slab, i * this.slotSize, this.slotSize));
    Object.freeze(this.slots);
    this.lengths = new Uint32Array(this.batchSize);
    try {
      this.native.startReading(this.handle, slab, this.slotSize, this.lengths, this.batchSize, this.deliver, this.fail);
    } catch (err) {
      throw TunError.from(err);
    }
    this.reading = true;
  }

  /**
   * Read-side failures after open (EBADFD or EIO once the interface is
   * deleted under us): reading stops and the handler gets one TunError.
   * Without a handler the error is thrown as an uncaught exception.
   */
  onError(handler: (err: Error) => void): void {
    this.errorHandler = handler;
  }

  /** Writes one IP packet. EAGAIN (queue full) drops it and counts; other failures throw TunError. */
  write(packet: Uint8Array): void {
    let ok: boolean;
    try {
      ok = this.native.write(this.handle, packet);
    } catch (err) {
      throw TunError.from(err);
    }
    if (ok) this.counters.writePackets++;
    else this.counters.writeDrops++;
  }

  /**
   * Writes packets[0..count) in one native call; returns how many were
   * written. `lengths[i]`, when given, is how much of packets[i] to write.
   * With offload, consecutive TCP segments of a flow go out as one
   * super-packet, and the first packet of each such run is rewritten in
   * place. Stops at EAGAIN (the rest count as drops); other failures throw
   * TunError with `written` set.
   */
  writeBatch(packets: readonly Uint8Array[], count: number, lengths?: Uint32Array): number {
    let n: number;
    try {
      n = this.native.writeBatch(this.handle, packets, lengths, count);
    } catch (err) {
      const e = TunError.from(err);
      this.counters.writePackets += e.written ?? 0;
      throw e;
    }
    this.counters.writePackets += n;
    this.counters.writeDrops += Math.min(count, packets.length) - n;
    return n;
  }

  get stats(): Readonly<TunStats> {
    if (!this.closed) this.readNativeStats();
    return this.counters;
  }

  private readNativeStats(): void {
    Object.assign(this.counters, this.native.stats(this.handle));
  }

  /** An active reader no longer keeps the event loop alive. */
  unref(): this {
    this.native.setRef(this.handle, false);
    return this;
  }

  /** An active reader keeps the event loop alive (the default). */
  ref(): this {
    this.native.setRef(this.handle, true);
    return this;
  }

  /** Stops reading and closes the fd; idempotent. The interface disappears unless made persistent elsewhere. */
  close(): void {
    if (this.closed) return;
    this.readNativeStats();
    this.closed = true;
    this.reading = false;
    this.native.close(this.handle);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // Convenience wrappers over iproute.ts for this interface.
  setMtu(mtu: number, opts?: ip.IpOptions): Promise<void> {
    return ip.setMtu(this.name, mtu, opts);
  }
  up(opts?: ip.IpOptions): Promise<void> {
    return ip.setUp(this.name, opts);
  }
  down(opts?: ip.IpOptions): Promise<void> {
    return ip.setDown(this.name, opts);
  }
  addAddress(cidr: string, opts?: ip.IpOptions): Promise<void> {
    return ip.addAddress(this.name, cidr, opts);
  }
  delAddress(cidr: string, opts?: ip.IpOptions): Promise<void> {
    return ip.delAddress(this.name, cidr, opts);
  }
  addRoute(cidr: string, opts?: ip.IpOptions): Promise<void> {
    return ip.addRoute(this.name, cidr, opts);
  }
  delRoute(cidr: string, opts?: ip.IpOptions): Promise<void> {
    return ip.delRoute(this.name, cidr, opts);
  }

  // Created once and handed to the native side: no per-batch closure.
  private readonly deliver = (count: number): void => {
    this.counters.readPackets += count;
    const handler = this.batchHandler;
    if (handler) handler(this.slots, this.lengths, count);
  };

  private readonly fail = (err: Error): void => {
    this.reading = false;
    const e = TunError.from(err);
    const handler = this.errorHandler;
    if (!handler) throw e;
    handler(e);
  };
}
