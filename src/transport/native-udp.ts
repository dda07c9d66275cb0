/**
 * A batched UDP socket (native addon tunvpn_udp, src/transport/native/udp.c):
 * one recvmmsg per wakeup delivered to JavaScript as ONE call, one sendmmsg
 * per sendBatch. Compared with node:dgram it saves, per datagram, a Buffer,
 * an rinfo object with an address string, a JS callback on receive, and a
 * send request plus completion callback on send.
 *
 * One socket serves one address family. Run two on the same port for IPv4
 * and IPv6 (the IPv6 one is IPV6_V6ONLY, as in WireGuard), and send each
 * datagram through the socket of its destination's family (the first byte
 * of an encoded endpoint).
 *
 * Endpoints travel as fixed-size byte strings (ENDPOINT_SIZE): encode a
 * peer's endpoint once with encodeEndpoint() when it changes, compare a
 * received source against it with sourceEquals() (no allocation), and only
 * decode (decodeSource(), allocates strings) when it did change.
 *
 * Receive: slots, lengths and sources are reused by the next batch; the
 * handler copies what it keeps. Send: the kernel copies the bytes during
 * the call, so buffers may be reused as soon as sendBatch/send returns.
 * Send failures never throw: EAGAIN (send buffer full) drops and counts,
 * other errors (ENETUNREACH, EPERM...) count with the last errno, in stats.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TunvpnError } from '../errors.js';
import { ENDPOINT_SIZE, encodeEndpoint as encodeEndpointTs } from './endpoint-codec.js';

export { ENDPOINT_SIZE, decodeEndpoint, decodeSource, endpointFamily, sourceEquals } from './endpoint-codec.js';

export interface NativeUdpOptions {
  family: 4 | 6;
  /** 0: the kernel picks one (read it back from `port`). */
  port: number;
  /** Local address to bind (default: any address of the family). */
  address?: string;
  /** SO_REUSEPORT, for one socket per worker on the same port. */
  reusePort?: boolean;
  /** Bytes; as root may exceed net.core.rmem_max/wmem_max (SO_*BUFFORCE). */
  recvBufferSize?: number;
  sendBufferSize?: number;
  /** Most datagrams per receive batch (1..1024, default 64). */
  batchSize?: number;
  /** Bytes per receive slot (default 2048); larger datagrams are dropped and counted. */
  slotSize?: number;
  /**
   * UDP GSO (UDP_SEGMENT) in sendBatch: consecutive datagrams to the same
   * endpoint with the same length (the last of a run may be shorter) leave
   * in one send that the kernel segments. A send the kernel refuses to
   * segment (EMSGSIZE or EINVAL: the segment does not fit the route's MTU; EIO: the
   * route cannot offload) goes out datagram by datagram and GSO pauses for
   * a few batches, then is tried again; only a kernel without UDP GSO turns
   * it off for good. Default false.
   */
  gso?: boolean;
  /**
   * UDP GRO (UDP_GRO) on receive: the kernel may hand over several datagrams
   * of one flow in one read; the addon cuts them back into one slot each, so
   * handlers see the same batches. Default true; if the kernel refuses it
   * the socket works without (stats.gro false, stats.groError why).
   */
  gro?: boolean;
}

/**
 * One batch of received datagrams: datagram i is slots[i][0..lengths[i])
 * from the endpoint encoded at sources[i * ENDPOINT_SIZE ..]. All four are
 * reused after the handler returns.
 */
export type UdpBatchHandler = (slots: readonly Buffer[], lengths: Uint32Array, sources: Uint8Array, count: number) => void;

export interface NativeUdpStats {
  /** Datagrams delivered to the handler. */
  received: number;
  /** Datagrams the kernel accepted for sending. */
  sent: number;
  /** Datagrams not sent because of an error other than EAGAIN. */
  sendErrors: number;
  /** Datagrams dropped because the send buffer was full (EAGAIN). */
  sendDrops: number;
  /** errno name of the latest send error. */
  lastSendErrno: string | undefined;
  /** Datagrams larger than a slot, dropped. */
  truncated: number;
  /** Receive-side errors reported to onError. */
  recvErrors: number;
  /** Datagrams that left inside UDP GSO sends (included in `sent`). */
  gsoDatagrams: number;
  /** GSO sends the kernel refused; their datagrams were resent one by one. */
  gsoRefused: number;
  /** Whether UDP GRO is on for this socket. */
  gro: boolean;
  /** errno name of a refused setsockopt(UDP_GRO), else undefined. */
  groError: string | undefined;
  /** Reads that held several coalesced datagrams. */
  groReads: number;
  /** Datagrams delivered out of those reads (included in `received`). */
  groDatagrams: number;
}

/** A native UDP failure; `code` is the errno name (EADDRINUSE, EACCES...). */
export class NativeUdpError extends TunvpnError {
  readonly errno: number | undefined;
  readonly syscall: string | undefined;

  constructor(code: string, message: string, opts: { errno?: number; syscall?: string; cause?: unknown } = {}) {
    super(code, message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.errno = opts.errno;
    this.syscall = opts.syscall;
  }

  static from(err: unknown): NativeUdpError {
    if (err instanceof NativeUdpError) return err;
    if (err instanceof Error) {
      const e = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown };
      return new NativeUdpError(typeof e.code === 'string' ? e.code : 'UDP_ERROR', e.message, {
        errno: typeof e.errno === 'number' ? e.errno : undefined,
        syscall: typeof e.syscall === 'string' ? e.syscall : undefined,
        cause: err,
      });
    }
    return new NativeUdpError('UDP_ERROR', String(err), { cause: err });
  }
}

declare const handleBrand: unique symbol;
interface NativeHandle {
  readonly [handleBrand]: true;
}

/** The addon's functions; contracts in src/transport/native/udp.c. */
interface NativeUdp {
  open(
    family: 4 | 6,
    address: string,
    port: number,
    reusePort: boolean,
    recvBufferSize: number,
    sendBufferSize: number,
    counters: Float64Array,
    gso: boolean,
    gro: boolean,
  ): [NativeHandle, number, number, number];
  setMark(handle: NativeHandle, mark: number): void;
  startReceiving(
    handle: NativeHandle,
    slab: ArrayBuffer,
    slotSize: number,
    lengths: Uint32Array,
    sources: Uint8Array,
    batchSize: number,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
  ): void;
  setRef(handle: NativeHandle, ref: boolean): void;
  sendBatch(handle: NativeHandle, bufs: readonly Uint8Array[], lengths: Uint32Array, dests: readonly Uint8Array[], count: number): number;
  send(handle: NativeHandle, buf: Uint8Array, length: number, dest: Uint8Array): boolean;
  encodeEndpoint(address: string, port: number): Uint8Array;
  decodeEndpoint(encoded: Uint8Array, offset: number): [string, number, 4 | 6];
  close(handle: NativeHandle): void;
  readonly ENDPOINT_SIZE: number;
}

// Indices into the counters array the addon writes (enum in udp.c).
const C_RECEIVED = 0;
const C_SENT = 1;
const C_SEND_ERRORS = 2;
const C_SEND_DROPS = 3;
const C_LAST_SEND_ERRNO = 4;
const C_TRUNCATED = 5;
const C_RECV_ERRORS = 6;
const C_GSO_DATAGRAMS = 7;
const C_GSO_REFUSED = 8;
const C_GRO = 9;
const C_GRO_ERRNO = 10;
const C_GRO_READS = 11;
const C_GRO_DATAGRAMS = 12;
const C_COUNT = 13;

export const UDP_ADDON_FILE = 'tunvpn_udp.node';

/** Absolute path of the compiled addon (package root found by walking up, so src/ and dist/src/ both work). */
export function udpAddonPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return join(dir, 'build', 'Release', UDP_ADDON_FILE);
    const parent = dirname(dir);
    if (parent === dir) throw new NativeUdpError('UDP_ADDON_MISSING', 'no package root (package.json + binding.gyp) above this module');
    dir = parent;
  }
}

let cached: NativeUdp | undefined;

function loadNativeUdp(): NativeUdp {
  if (cached) return cached;
  const path = udpAddonPath();
  if (!existsSync(path)) {
    throw new NativeUdpError('UDP_ADDON_MISSING', `UDP addon not built: ${path} is missing (run \`npx node-gyp rebuild\`)`);
  }
  const native = createRequire(import.meta.url)(path) as NativeUdp;
  if (native.ENDPOINT_SIZE !== ENDPOINT_SIZE)
    throw new NativeUdpError('UDP_ADDON_MISMATCH', `addon endpoint size ${native.ENDPOINT_SIZE}, expected ${ENDPOINT_SIZE}`);
  cached = native;
  return native;
}

/** Whether the addon is built (callers may fall back to node:dgram). */
export function nativeUdpAvailable(): boolean {
  try {
    loadNativeUdp();
    return true;
  } catch {
    return false;
  }
}

let errnoNames: Map<number, string> | undefined;

function errnoName(errno: number): string {
  if (!errnoNames) {
    errnoNames = new Map();
    for (const [name, value] of Object.entries(osConstants.errno)) if (!errnoNames.has(value)) errnoNames.set(value, name);
  }
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/**
 * Encodes a numeric IP address (IPv4, IPv6, IPv6 with %scope) and port into
 * the form send/sendBatch take (the plain-TypeScript codec,
 * endpoint-codec.ts). Throws NativeUdpError EINVAL for anything else
 * (resolve names first).
 */
export function encodeEndpoint(address: string, port: number): Uint8Array {
  try {
    return encodeEndpointTs(address, port);
  } catch (err) {
    throw NativeUdpError.from(err);
  }
}

/**
 * The addon's own encoder and decoder (getaddrinfo / getnameinfo), which
 * the packet path no longer calls: kept so a test can check that the
 * TypeScript codec gives the same bytes.
 */
export function addonEndpointCodec(): {
  encode(address: string, port: number): Uint8Array;
  decode(encoded: Uint8Array, offset: number): [string, number, 4 | 6];
} {
  const native = loadNativeUdp();
  return { encode: (a, p) => native.encodeEndpoint(a, p), decode: (e, o) => native.decodeEndpoint(e, o) };
}

const DEFAULT_BATCH = 64;
const DEFAULT_SLOT = 2048;
const MAX_BATCH = 1024;
// Slots start on cache-line boundaries.
const SLOT_ALIGN = 64;

function checkInt(what: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new NativeUdpError('EINVAL', `${what} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

export class NativeUdpSocket {
  readonly family: 4 | 6;
  readonly port: number;
  readonly batchSize: number;
  readonly slotSize: number;
  /** SO_RCVBUF / SO_SNDBUF as the kernel reports them (twice what was set). */
  readonly recvBufferSize: number;
  readonly sendBufferSize: number;

  private readonly native: NativeUdp;
  private readonly handle: NativeHandle;
  private readonly counters: Float64Array;
  private batchHandler: UdpBatchHandler | undefined;
  private errorHandler: ((err: Error) => void) | undefined;
  private slots: Buffer[] = [];
  private lengths = new Uint32Array(0);
  private sources = new Uint8Array(0);
  private receiving = false;
  private closed = false;

  private constructor(
    native: NativeUdp,
    opened: [NativeHandle, number, number, number],
    counters: Float64Array,
    family: 4 | 6,
    batchSize: number,
    slotSize: number,
  ) {
    this.native = native;
    [this.handle, this.port, this.recvBufferSize, this.sendBufferSize] = opened;
    this.counters = counters;
    this.family = family;
    this.batchSize = batchSize;
    this.slotSize = slotSize;
  }

  /** Creates and binds the socket; synchronous. Throws NativeUdpError (code = errno name, e.g. EADDRINUSE). */
  static open(opts: NativeUdpOptions): NativeUdpSocket {
    if (opts.family !== 4 && opts.family !== 6) throw new NativeUdpError('EINVAL', `family must be 4 or 6, got ${String(opts.family)}`);
    checkInt('port', opts.port, 0, 65535);
    const batchSize = checkInt('batchSize', opts.batchSize ?? DEFAULT_BATCH, 1, MAX_BATCH);
    const slotSize = Math.ceil(checkInt('slotSize', opts.slotSize ?? DEFAULT_SLOT, 64, 65536) / SLOT_ALIGN) * SLOT_ALIGN;
    const recv = checkInt('recvBufferSize', opts.recvBufferSize ?? 0, 0, 0x3fffffff);
    const send = checkInt('sendBufferSize', opts.sendBufferSize ?? 0, 0, 0x3fffffff);
    const native = loadNativeUdp();
    const counters = new Float64Array(C_COUNT);
    let opened: [NativeHandle, number, number, number];
    try {
      opened = native.open(opts.family, opts.address ?? '', opts.port, opts.reusePort === true, recv, send, counters, opts.gso === true, opts.gro !== false);
    } catch (err) {
      throw NativeUdpError.from(err);
    }
    return new NativeUdpSocket(native, opened, counters, opts.family, batchSize, slotSize);
  }

  /** Sets the batch handler and starts receiving (a later call replaces the handler). */
  onDatagrams(handler: UdpBatchHandler): void {
    this.batchHandler = handler;
    if (this.receiving) return;
    if (this.closed) throw new NativeUdpError('EBADF', 'UDP socket is closed');
    const slab = new ArrayBuffer(this.slotSize * this.batchSize);
    const slots: Buffer[] = [];
    for (let i = 0; i < this.batchSize; i++) slots.push(Buffer.from(slab, i * this.slotSize, this.slotSize));
    this.slots = Object.freeze(slots) as Buffer[];
    this.lengths = new Uint32Array(this.batchSize);
    this.sources = new Uint8Array(this.batchSize * ENDPOINT_SIZE);
    try {
      this.native.startReceiving(this.handle, slab, this.slotSize, this.lengths, this.sources, this.batchSize, this.deliver, this.fail);
    } catch (err) {
      throw NativeUdpError.from(err);
    }
    this.receiving = true;
  }

  /**
   * Receive-side errors (rare on UDP: a queued socket error); receiving goes
   * on unless the poll itself failed. Without a handler they are ignored
   * (counted in stats.recvErrors): a socket error must not kill the daemon.
   */
  onError(handler: (err: Error) => void): void {
    this.errorHandler = handler;
  }

  /**
   * One sendmmsg for the batch: datagram i is bufs[i][0..lengths[i]) to the
   * encoded endpoint dests[i]. Returns how many the kernel took; EAGAIN
   * stops early (the rest count in stats.sendDrops), other failures skip
   * the datagram (stats.sendErrors). Throws only on malformed arguments.
   */
  sendBatch(bufs: readonly Uint8Array[], lengths: Uint32Array, dests: readonly Uint8Array[], count: number): number {
    if (count === 0) return 0;
    try {
      return this.native.sendBatch(this.handle, bufs, lengths, dests, count);
    } catch (err) {
      throw NativeUdpError.from(err);
    }
  }

  /** Sends one datagram; false when it was dropped or failed (counted in stats). */
  send(buf: Uint8Array, length: number, dest: Uint8Array): boolean {
    try {
      return this.native.send(this.handle, buf, length, dest);
    } catch (err) {
      throw NativeUdpError.from(err);
    }
  }

  /** A snapshot (allocates: read it from timers, not per packet). */
  get stats(): NativeUdpStats {
    const c = this.counters;
    return {
      received: c[C_RECEIVED],
      sent: c[C_SENT],
      sendErrors: c[C_SEND_ERRORS],
      sendDrops: c[C_SEND_DROPS],
      lastSendErrno: c[C_LAST_SEND_ERRNO] === 0 ? undefined : errnoName(c[C_LAST_SEND_ERRNO]),
      truncated: c[C_TRUNCATED],
      recvErrors: c[C_RECV_ERRORS],
      gsoDatagrams: c[C_GSO_DATAGRAMS],
      gsoRefused: c[C_GSO_REFUSED],
      gro: c[C_GRO] === 1,
      groError: c[C_GRO_ERRNO] === 0 ? undefined : errnoName(c[C_GRO_ERRNO]),
      groReads: c[C_GRO_READS],
      groDatagrams: c[C_GRO_DATAGRAMS],
    };
  }

  /**
   * SO_MARK: the firewall mark every datagram sent from now on carries (0
   * clears it). Needs CAP_NET_ADMIN; throws NativeUdpError (EPERM...).
   */
  setMark(mark: number): void {
    if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff)
      throw new NativeUdpError('UDP_ARGUMENT_INVALID', `fwmark must be an integer in 0..4294967295, got ${mark}`);
    if (this.closed) throw new NativeUdpError('UDP_CLOSED', 'the socket is closed');
    try {
      this.native.setMark(this.handle, mark);
    } catch (err) {
      throw NativeUdpError.from(err);
    }
  }

  /** An active receiver no longer keeps the event loop alive. */
  unref(): this {
    if (!this.closed) this.native.setRef(this.handle, false);
    return this;
  }

  /** An active receiver keeps the event loop alive (the default). */
  ref(): this {
    if (!this.closed) this.native.setRef(this.handle, true);
    return this;
  }

  /** Stops receiving and closes the socket; idempotent. Stats stay readable. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.receiving = false;
    this.native.close(this.handle);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  // Created once and handed to the native side: no per-batch closure.
  private readonly deliver = (count: number): void => {
    const handler = this.batchHandler;
    if (handler) handler(this.slots, this.lengths, this.sources, count);
  };

  private readonly fail = (err: Error): void => {
    const handler = this.errorHandler;
    if (handler) handler(NativeUdpError.from(err));
  };
}
