/**
 * The underlay as the pipeline sees it: batches in, batches out, endpoints
 * as fixed-size encoded addresses (see encodeEndpoint) so the hot path never
 * builds address strings or objects.
 *
 * Two implementations: the native batched sockets (recvmmsg/sendmmsg, one
 * JS call per batch) and node:dgram as the portable fallback, adapted to
 * the same batch shape.
 */
import type { RemoteInfo } from 'node:dgram';
import type { Endpoint } from './endpoint.js';
import { ENDPOINT_SIZE, decodeEndpoint, encodeEndpointInto, endpointFamily, sourceEquals, type EncodedEndpoint } from './endpoint-codec.js';
import { NativeUdpSocket, nativeUdpAvailable } from './native-udp.js';
import { TransportError, UdpTransport } from './udp.js';
import { RECV_BATCH_SIZE, SEND_BATCH_MAX } from '../constants.js';

/**
 * One batch of received datagrams: datagram i is slots[i][0..lengths[i])
 * from the endpoint encoded at sources[i * ENDPOINT_SIZE ..]
 * (endpoint-codec.ts). All four are reused after the handler returns.
 */
export type DatagramBatchHandler = (slots: readonly Uint8Array[], lengths: Uint32Array, sources: Uint8Array, count: number) => void;

/**
 * The seam between the pipeline and the underlay (as wireguard-go's
 * conn.Bind): batches in, batches out, endpoints encoded by
 * endpoint-codec.ts. test/pipeline/fakes.ts has an in-memory one.
 */
export interface DatagramTransport {
  /** Which implementation: the native batched sockets, node:dgram, or an in-memory one (tests). */
  readonly kind: 'native' | 'dgram' | 'memory';
  readonly port: number;
  onBatch(handler: DatagramBatchHandler): void;
  onError(handler: (err: Error) => void): void;
  /** Sends datagram i = bufs[i][0..lengths[i]) to dests[i]; buffers are free again on return. */
  sendBatch(bufs: readonly Uint8Array[], lengths: Uint32Array, dests: readonly EncodedEndpoint[], count: number): void;
  send(buf: Uint8Array, length: number, dest: EncodedEndpoint): void;
  /** Failed or dropped sends so far, and the latest reason. */
  sendFailures(): { count: number; last: string | undefined };
  /** Datagrams dropped on receive because they did not fit a slot, so far. */
  oversizedReceived(): number;
  /**
   * UDP GRO on receive: whether the sockets have it (the kernel may refuse
   * it, TUNVPN_UDP_GRO=off turns it off, node:dgram has none), and the
   * coalesced reads and the datagrams cut from them so far (status output).
   */
  groStats(): { gro: boolean; reads: number; datagrams: number };
  /**
   * Sets the firewall mark (SO_MARK) of every socket, for the next datagram
   * on: no rebind, sessions stay. 0 clears it. Throws FwmarkUnsupportedError
   * on node:dgram (which cannot set socket options) for a non-zero mark.
   */
  setMark(mark: number): void;
  /** The largest datagram it receives whole (0 = no limit). */
  readonly maxDatagram: number;
  close(): Promise<void>;
}

export interface TransportOptions {
  port: number;
  /** Largest datagram to receive whole (the native path sizes its slots by it). */
  maxDatagram: number;
  recvBufferSize: number;
  sendBufferSize: number;
  /** Force the node:dgram path (tests, or a platform without the addon). */
  dgram?: boolean;
  /** UDP GRO on receive (native path; default on). */
  gro?: boolean;
  /** SO_MARK for the sockets (0 or absent: none). node:dgram refuses a non-zero one. */
  fwmark?: number;
}

/**
 * node:dgram has no way to set SO_MARK (no setsockopt, no fd), so a mark
 * cannot be honoured there: refused rather than silently ignored, because
 * an unmarked full tunnel would route its own datagrams into itself.
 */
export class FwmarkUnsupportedError extends TransportError {
  constructor() {
    super(
      'FWMARK_UNSUPPORTED',
      "a fwmark (interface.fwmark, or a full tunnel's own mark) needs the native UDP binding (build/Release/tunvpn_udp.node); node:dgram cannot set SO_MARK",
    );
  }
}

/** Opens the native batched sockets when the addon is built, else node:dgram. */
export async function openTransport(opts: TransportOptions): Promise<DatagramTransport> {
  const mark = opts.fwmark ?? 0;
  if (!opts.dgram && nativeUdpAvailable()) {
    const t = NativeTransport.open(opts);
    if (mark !== 0) {
      try {
        t.setMark(mark);
      } catch (err) {
        await t.close();
        throw err;
      }
    }
    return t;
  }
  if (mark !== 0) throw new FwmarkUnsupportedError();
  return DgramTransport.open(opts);
}

class NativeTransport implements DatagramTransport {
  readonly kind = 'native';
  private readonly v4: NativeUdpSocket;
  private readonly v6: NativeUdpSocket | undefined;
  /** Scratch for splitting a mixed-family batch. */
  private readonly split = { bufs: [] as Uint8Array[], dests: [] as Uint8Array[], lengths: new Uint32Array(SEND_BATCH_MAX) };

  private constructor(v4: NativeUdpSocket, v6: NativeUdpSocket | undefined) {
    this.v4 = v4;
    this.v6 = v6;
  }

  static open(opts: TransportOptions): NativeTransport {
    const slotSize = Math.max(2048, Math.ceil(opts.maxDatagram / 64) * 64);
    const common = {
      recvBufferSize: opts.recvBufferSize,
      sendBufferSize: opts.sendBufferSize,
      gso: true,
      gro: opts.gro !== false,
      batchSize: RECV_BATCH_SIZE,
      slotSize,
    };
    let v4: NativeUdpSocket;
    try {
      v4 = NativeUdpSocket.open({ family: 4, port: opts.port, ...common });
    } catch (err) {
      if ((err as { code?: string }).code === 'EADDRINUSE') {
        throw new TransportError('PORT_IN_USE', `UDP port ${opts.port} is already in use`, { cause: err });
      }
      throw err;
    }
    let v6: NativeUdpSocket | undefined;
    try {
      v6 = NativeUdpSocket.open({ family: 6, port: v4.port, ...common });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') {
        v4.close();
        throw err;
      }
    }
    return new NativeTransport(v4, v6);
  }

  get port(): number {
    return this.v4.port;
  }

  setMark(mark: number): void {
    const before = this.mark;
    this.v4.setMark(mark);
    try {
      this.v6?.setMark(mark);
    } catch (err) {
      // Both sockets or neither.
      this.v4.setMark(before);
      throw err;
    }
    this.mark = mark;
  }

  private mark = 0;

  get maxDatagram(): number {
    return this.v4.slotSize;
  }

  oversizedReceived(): number {
    return this.v4.stats.truncated + (this.v6?.stats.truncated ?? 0);
  }

  groStats(): { gro: boolean; reads: number; datagrams: number } {
    const a = this.v4.stats;
    const b = this.v6?.stats;
    return { gro: a.gro, reads: a.groReads + (b?.groReads ?? 0), datagrams: a.groDatagrams + (b?.groDatagrams ?? 0) };
  }

  onBatch(handler: DatagramBatchHandler): void {
    this.v4.onDatagrams(handler);
    this.v6?.onDatagrams(handler);
  }

  onError(handler: (err: Error) => void): void {
    this.v4.onError(handler);
    this.v6?.onError(handler);
  }

  sendBatch(bufs: readonly Uint8Array[], lengths: Uint32Array, dests: readonly Uint8Array[], count: number): void {
    if (count === 0) return;
    let v6count = 0;
    for (let i = 0; i < count; i++) if (endpointFamily(dests[i]) === 6) v6count++;
    if (v6count === 0) {
      this.v4.sendBatch(bufs, lengths, dests, count);
    } else if (v6count === count) {
      if (this.v6) this.v6.sendBatch(bufs, lengths, dests, count);
    } else {
      // Mixed families in one batch: rare (peers on both families at once).
      for (const family of [4, 6] as const) {
        const sock = family === 4 ? this.v4 : this.v6;
        let n = 0;
        for (let i = 0; i < count; i++) {
          if (endpointFamily(dests[i]) !== family) continue;
          this.split.bufs[n] = bufs[i];
          this.split.dests[n] = dests[i];
          this.split.lengths[n] = lengths[i];
          n++;
        }
        if (sock && n > 0) sock.sendBatch(this.split.bufs, this.split.lengths, this.split.dests, n);
      }
    }
  }

  send(buf: Uint8Array, length: number, dest: Uint8Array): void {
    const sock = endpointFamily(dest) === 6 ? this.v6 : this.v4;
    sock?.send(buf, length, dest);
  }

  sendFailures(): { count: number; last: string | undefined } {
    const a = this.v4.stats;
    const b = this.v6?.stats;
    return {
      count: a.sendErrors + a.sendDrops + (b ? b.sendErrors + b.sendDrops : 0),
      last: b?.lastSendErrno ?? a.lastSendErrno,
    };
  }

  async close(): Promise<void> {
    this.v4.close();
    this.v6?.close();
  }
}

/**
 * node:dgram behind the batch interface: one datagram per "batch". Needs
 * nothing native: sources are encoded by the TypeScript codec (the last
 * one is remembered, so a steady peer costs a string compare), and a
 * destination is decoded once per change of destination.
 */
class DgramTransport implements DatagramTransport {
  readonly kind = 'dgram';
  private readonly udp: UdpTransport;
  private readonly slot: Uint8Array[] = [new Uint8Array(0)];
  private readonly length = new Uint32Array(1);
  private readonly source = new Uint8Array(ENDPOINT_SIZE);
  private lastSourceAddress = '';
  private lastSourcePort = -1;
  private readonly lastDest = new Uint8Array(ENDPOINT_SIZE);
  private lastDestDecoded: Endpoint | undefined;

  private constructor(udp: UdpTransport) {
    this.udp = udp;
  }

  static async open(opts: TransportOptions): Promise<DgramTransport> {
    return new DgramTransport(await UdpTransport.open(opts));
  }

  get port(): number {
    return this.udp.port;
  }

  readonly maxDatagram = 0;

  setMark(mark: number): void {
    if (mark !== 0) throw new FwmarkUnsupportedError();
  }

  oversizedReceived(): number {
    return 0;
  }

  groStats(): { gro: boolean; reads: number; datagrams: number } {
    return { gro: false, reads: 0, datagrams: 0 };
  }

  onBatch(handler: DatagramBatchHandler): void {
    this.udp.onDatagram((msg: Buffer, rinfo: RemoteInfo) => {
      if (rinfo.address !== this.lastSourceAddress || rinfo.port !== this.lastSourcePort) {
        try {
          encodeEndpointInto(rinfo.address, rinfo.port, this.source, 0);
        } catch {
          return; // node gives numeric addresses; an interface gone meanwhile leaves a zone we cannot encode
        }
        this.lastSourceAddress = rinfo.address;
        this.lastSourcePort = rinfo.port;
      }
      this.slot[0] = msg;
      this.length[0] = msg.length;
      handler(this.slot, this.length, this.source, 1);
    });
  }

  onError(handler: (err: Error) => void): void {
    this.udp.onError(handler);
  }

  sendBatch(bufs: readonly Uint8Array[], lengths: Uint32Array, dests: readonly EncodedEndpoint[], count: number): void {
    // dgram keeps a reference until the send completes: hand it copies.
    for (let i = 0; i < count; i++) this.send(bufs[i], lengths[i], dests[i]);
  }

  send(buf: Uint8Array, length: number, dest: EncodedEndpoint): void {
    let e = this.lastDestDecoded;
    if (e === undefined || !sourceEquals(dest, 0, this.lastDest)) {
      e = decodeEndpoint(dest);
      this.lastDest.set(dest.subarray(0, ENDPOINT_SIZE));
      this.lastDestDecoded = e;
    }
    this.udp.send(Buffer.from(buf.subarray(0, length)), length, e);
  }

  sendFailures(): { count: number; last: string | undefined } {
    return { count: this.udp.sendErrors, last: this.udp.lastSendError?.message };
  }

  close(): Promise<void> {
    return this.udp.close();
  }
}
