/**
 * Start-up warm-up of the pipeline itself (onTunBatch, onDatagrams, the
 * allowed-IPs lookups, the IP header checks, roaming, the TUN flush), the
 * part src/protocol/warmup.ts leaves cold: a throwaway pair of Pipelines,
 * each with its own WireGuardDevice<Peer> and PeerRegistry (real Peer
 * records, real crypto, the daemon's logger), joined back to back by two
 * tiny in-memory seams. A handshake, then `iterations` rounds of packets
 * each way with ticks and rekeys from both sides, then everything is
 * released. Run it before the daemon makes its real device, peers and
 * pipeline (docs/decisions.md, "Idle round trip", lists what otherwise
 * deoptimised the real path at its first packets).
 *
 * The seams are built to look to V8 like the real ones where the pipeline
 * reads them: read slots are Buffers over one ArrayBuffer slab in a frozen
 * array (as TunDevice and NativeUdpSocket hand them over), lengths a
 * Uint32Array, sources encoded endpoints in one Uint8Array. The call sites
 * on the seams themselves (writeBatch, sendBatch, send) see one more class
 * than in production: two shapes, polymorphic, not megamorphic.
 *
 * Nothing leaves the process: no socket, no device, no timer; the
 * endpoints are TEST-NET-1 addresses that only these objects ever see.
 */
import type { CryptoBackend } from '../crypto/types.js';
import type { Logger } from '../log.js';
import type { PeerConfig } from '../config/index.js';
import { Yielder } from '../cooperative.js';
import { PeerRegistry, type Peer } from '../peers/registry.js';
import { WireGuardDevice } from '../protocol/device.js';
import type { DatagramBatchHandler, DatagramTransport } from '../transport/datagram-transport.js';
import { ENDPOINT_SIZE, encodeEndpoint, type EncodedEndpoint } from '../transport/endpoint-codec.js';
import type { Endpoint } from '../transport/endpoint.js';
import type { PacketBatchHandler, PacketDevice } from '../tun/packet-device.js';
import { Pipeline } from './pipeline.js';

export interface PipelineWarmupOptions {
  crypto: CryptoBackend;
  log: Logger;
  mtu: number;
  /** The protocol's monotonic clock and wall clock, as the daemon gives its device. */
  now: () => number;
  wallClock: () => number;
  /** Rounds of packets each way (default 300: about 1,150 packets each way; 1,000 cost twice the time for no better round trip, docs/decisions.md). */
  iterations?: number;
}

export interface PipelineWarmupResult {
  /** Packets that reached the far side's (in-memory) TUN, both directions together. */
  packets: number;
  ms: number;
}

/** Slots per read batch, as small as the real ones are at idle and big enough for a burst. */
const BATCH = 32;
const SLOT_SIZE = 2048;

/** A packet device whose reads the warm-up injects; writes are counted and forgotten. */
class MemoryPacketDevice implements PacketDevice {
  private handler: PacketBatchHandler | undefined = undefined;
  readonly slots: readonly Buffer[];
  readonly lengths = new Uint32Array(BATCH);
  written = 0;

  constructor() {
    const slab = new ArrayBuffer(SLOT_SIZE * BATCH);
    const slots: Buffer[] = [];
    for (let i = 0; i < BATCH; i++) slots.push(Buffer.from(slab, i * SLOT_SIZE, SLOT_SIZE));
    this.slots = Object.freeze(slots);
  }

  onPackets(handler: PacketBatchHandler): void {
    this.handler = handler;
  }

  onError(): void {}

  writeBatch(_packets: readonly Uint8Array[], count: number): number {
    this.written += count;
    return count;
  }

  /** One read batch: the first `count` slots, already filled by the caller. */
  read(count: number): void {
    this.handler?.(this.slots, this.lengths, count);
  }

  release(): void {
    this.handler = undefined;
  }
}

/** One end of an in-memory link: what it sends waits, copied, until pump() hands it to the other end. */
class MemoryTransport implements DatagramTransport {
  readonly kind = 'memory';
  readonly port = 0;
  readonly maxDatagram = SLOT_SIZE;
  readonly address: EncodedEndpoint;
  peerEnd: MemoryTransport | undefined = undefined;
  private handler: DatagramBatchHandler | undefined = undefined;
  private readonly slots: readonly Buffer[];
  private readonly lengths = new Uint32Array(BATCH);
  private readonly sources = new Uint8Array(BATCH * ENDPOINT_SIZE);
  /** Received, not yet delivered. */
  private queued = 0;

  constructor(address: EncodedEndpoint) {
    this.address = address;
    const slab = new ArrayBuffer(SLOT_SIZE * BATCH);
    const slots: Buffer[] = [];
    for (let i = 0; i < BATCH; i++) slots.push(Buffer.from(slab, i * SLOT_SIZE, SLOT_SIZE));
    this.slots = Object.freeze(slots);
  }

  onBatch(handler: DatagramBatchHandler): void {
    this.handler = handler;
  }

  onError(): void {}

  sendBatch(bufs: readonly Uint8Array[], lengths: Uint32Array, _dests: readonly EncodedEndpoint[], count: number): void {
    for (let i = 0; i < count; i++) this.send(bufs[i], lengths[i]);
  }

  send(buf: Uint8Array, length: number): void {
    const to = this.peerEnd;
    if (to === undefined) return;
    // A full queue delivers first, as a real receiver would take a batch.
    if (to.queued === BATCH) to.deliver();
    to.slots[to.queued].set(buf.subarray(0, length));
    to.lengths[to.queued] = length;
    to.sources.set(this.address.subarray(0, ENDPOINT_SIZE), to.queued * ENDPOINT_SIZE);
    to.queued++;
  }

  /** Hands what is queued to the pipeline as one batch; returns how many. */
  deliver(): number {
    const n = this.queued;
    if (n === 0) return 0;
    this.queued = 0;
    this.handler?.(this.slots, this.lengths, this.sources, n);
    return n;
  }

  sendFailures(): { count: number; last: string | undefined } {
    return { count: 0, last: undefined };
  }

  oversizedReceived(): number {
    return 0;
  }

  groStats(): { gro: boolean; reads: number; datagrams: number } {
    return { gro: false, reads: 0, datagrams: 0 };
  }

  setMark(): void {}

  async close(): Promise<void> {
    this.handler = undefined;
    this.peerEnd = undefined;
  }
}

interface Side {
  device: WireGuardDevice<Peer>;
  peers: PeerRegistry;
  tun: MemoryPacketDevice;
  transport: MemoryTransport;
  pipeline: Pipeline;
  /** Its underlay address, as the other side's peer record has it configured. */
  endpoint: Endpoint;
  v4: number;
  lan4: number;
  v6: Uint8Array;
}

/**
 * Tunnel addresses inside 10.255.255.0/30 and fdff::/126, and each side's
 * routed LAN 10.255.(253 + i).0/24, as a site-to-site peer has: only these
 * objects ever see them.
 */
const V4 = [0x0affff01, 0x0affff02];
const LAN4 = [0x0afffd00, 0x0afffe00];
/** No peer routes these: a kernel's IPv6 router solicitation (ff02::2) and an unrouted IPv4 address. */
const UNROUTED4 = 0x0a000001;
const UNROUTED6 = Uint8Array.from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
const V6 = [1, 2].map((last) => {
  const a = new Uint8Array(16);
  a[0] = 0xfd;
  a[1] = 0xff;
  a[15] = last;
  return a;
});

function side(i: number, opts: PipelineWarmupOptions): Side {
  // Rekey-Timeout 1 ms: a peer may initiate again a few iterations later
  // (the real 5 s would allow one initiation per side).
  const device = new WireGuardDevice<Peer>({
    crypto: opts.crypto,
    privateKey: opts.crypto.generatePrivateKey(),
    now: opts.now,
    wallClock: opts.wallClock,
    constants: { rekeyTimeout: 1 },
  });
  const peers = new PeerRegistry(device);
  const tun = new MemoryPacketDevice();
  const endpoint: Endpoint = { address: `192.0.2.${i + 1}`, port: 51820, family: 4 };
  const transport = new MemoryTransport(encodeEndpoint(endpoint.address, endpoint.port));
  const pipeline = new Pipeline({ peers, tun, transport, log: opts.log, mtu: opts.mtu });
  return { device, peers, tun, transport, pipeline, endpoint, v4: V4[i], lan4: LAN4[i], v6: V6[i] };
}

/**
 * Side A routes IPv6 to B, side B routes none to A (as the bench's and
 * many real configs do): both kinds of IPv6 table get warmed, and B's
 * IPv6 packets are dropped as the kernel's router solicitations are.
 */
function peerConfig(of: Side, withV6: boolean): PeerConfig {
  const publicKeyBytes = of.device.publicKey;
  const allowedIPs = [`${ipv4Text(of.v4)}/32`, `${ipv4Text(of.lan4)}/24`];
  if (withV6) allowedIPs.push(`fdff::${of.v6[15]}/128`);
  return { publicKey: Buffer.from(publicKeyBytes).toString('base64'), publicKeyBytes, allowedIPs, persistentKeepalive: 0 };
}

function ipv4Text(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

/** What packet k of round i is: mostly pings between the tunnel addresses, some LAN traffic, IPv6, and packets no peer routes. */
type Kind = 'tunnel' | 'lan' | 'v6' | 'unrouted4' | 'unrouted6';

function kindOf(i: number, k: number): Kind {
  if (k === 0) return i % 16 === 15 ? 'v6' : 'tunnel';
  if (k === 1) return 'lan';
  if (k === 2 && i % 32 === 7) return 'unrouted6';
  if (k === 3 && i % 32 === 7) return 'unrouted4';
  return k % 4 === 0 ? 'v6' : 'tunnel';
}

/** Writes an IPv4 or IPv6 header of `len` bytes from one side to the other into a read slot. */
function fillPacket(slot: Buffer, len: number, from: Side, to: Side, kind: Kind): void {
  if (kind === 'v6' || kind === 'unrouted6') {
    slot.fill(0, 0, 40);
    slot[0] = 0x60;
    slot.writeUInt16BE(len - 40, 4);
    slot[6] = 58; // ICMPv6
    slot[7] = 64;
    slot.set(from.v6, 8);
    slot.set(kind === 'v6' ? to.v6 : UNROUTED6, 24);
    return;
  }
  slot.fill(0, 0, 20);
  slot[0] = 0x45;
  slot.writeUInt16BE(len, 2);
  slot[8] = 64;
  slot[9] = 1; // ICMP, as an idle ping
  slot.writeUInt32BE(kind === 'lan' ? from.lan4 + 10 : from.v4, 12);
  slot.writeUInt32BE(kind === 'lan' ? to.lan4 + 20 : kind === 'unrouted4' ? UNROUTED4 : to.v4, 16);
}

/** Delivers both ways until nothing is in flight. */
function pump(a: Side, b: Side): void {
  for (let guard = 0; guard < 64; guard++) {
    if (a.transport.deliver() + b.transport.deliver() === 0) return;
  }
}

/**
 * Runs the warm-up. Asynchronous only because peers enter a registry
 * through its cooperative add; every packet moves synchronously.
 */
export async function warmPipeline(opts: PipelineWarmupOptions): Promise<PipelineWarmupResult> {
  const start = performance.now();
  const iterations = opts.iterations ?? 300;
  const a = side(0, opts);
  const b = side(1, opts);
  a.transport.peerEnd = b.transport;
  b.transport.peerEnd = a.transport;
  try {
    const y = new Yielder();
    const bAtA = await a.peers.add(peerConfig(b, true), b.endpoint, y);
    const aAtB = await b.peers.add(peerConfig(a, false), a.endpoint, y);
    a.pipeline.start();
    b.pipeline.start();
    // The handshake as at start-up: an initiation, the response, the confirming keepalive.
    a.pipeline.initiate(bAtA);
    pump(a, b);
    for (let i = 0; i < iterations; i++) {
      // The daemon's ticker runs between batches: its first tick stores
      // clock values (not small integers) in the pipeline's fields, a new
      // field representation that would otherwise deoptimise the packet
      // path at the first real datagram after it.
      if (i % 64 === 0) {
        a.pipeline.tick();
        b.pipeline.tick();
        pump(a, b);
      }
      // New handshakes now and then, from either side (rekeys, or both
      // daemons initiating at start): the first initiation came before V8
      // kept feedback for that branch, and a real daemon's first datagram
      // is often one.
      if (i % 128 === 64) {
        if (i & 128) a.pipeline.initiate(bAtA);
        else b.pipeline.initiate(aAtB);
        pump(a, b);
      }
      // Mostly single packets (an idle ping is one packet per wake-up), some bursts.
      const count = i % 8 === 7 ? BATCH : 1;
      for (const [from, to] of [
        [a, b],
        [b, a],
      ] as const) {
        for (let k = 0; k < count; k++) {
          const len = k & 1 ? 1400 : 84;
          fillPacket(from.tun.slots[k], len, from, to, kindOf(i, k));
          from.tun.lengths[k] = len;
        }
        from.tun.read(count);
        pump(a, b);
      }
    }
    return { packets: a.tun.written + b.tun.written, ms: performance.now() - start };
  } finally {
    for (const s of [a, b]) {
      s.pipeline.stop();
      s.peers.wipeAll();
      s.tun.release();
      await s.transport.close();
    }
  }
}
