/**
 * The packet pipelines between the TUN device and the UDP sockets.
 *
 *  outbound:  TUN read batch ─▶ for each packet: allowed-IPs lookup of the
 *             destination ─▶ peer.encapsulate into a fresh datagram
 *             ─▶ UDP send to the peer's endpoint
 *             (no session yet: the protocol stages the packet and starts a
 *             handshake; we send what takeOutbound() returns)
 *
 *  inbound:   UDP datagram batch ─▶ for each: device.decapsulate into the
 *             next preallocated plaintext slot
 *             ─▶ data: trim padding by the IP header, check the inner source
 *                against the sending peer's allowed IPs, keep the slot;
 *                after the batch, one TUN writeBatch (with TUN offload the
 *                device merges consecutive TCP segments into one write);
 *                the peer's endpoint follows the packet (roaming)
 *             ─▶ handshake: reply to the source, flush staged data
 *             ─▶ error: count the drop by reason
 *
 * No logging per packet: drops are counted, send failures are summarised
 * at most once per interval by tick().
 */
import {
  SEND_BATCH_MAX,
  SEND_ERROR_LOG_INTERVAL_MS,
  SLOT_PADDING,
  TRANSPORT_OVERHEAD,
  TUN_WRITE_BATCH_MAX,
  UNDER_LOAD_AFTER_MS,
  UNDER_LOAD_INITIATIONS,
  UNDER_LOAD_WINDOW_MS,
} from '../constants.js';
import { ViewCache } from '../crypto/util.js';
import type { Logger } from '../log.js';
import type { PeerTable } from '../peers/peer-table.js';
import type { Peer, PeerRegistry } from '../peers/registry.js';
import type { WireGuardDevice } from '../protocol/device.js';
import { MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION, MESSAGE_TRANSPORT, TRANSPORT_OVERHEAD as MESSAGE_OVERHEAD } from '../protocol/messages.js';
import type { DatagramTransport } from '../transport/datagram-transport.js';
import { decodeSource, sourceAt, sourceEquals } from '../transport/endpoint-codec.js';
import { writtenBefore, type PacketDevice } from '../tun/packet-device.js';
import { newDropCounters, type DropCounters, type DropReason } from './counters.js';
import { ipPacketLength } from './ip.js';

export interface PipelineOptions {
  /** The peers: protocol device and allowed-IPs table, as one registry. */
  peers: PeerRegistry;
  /** The TUN side (TunDevice, or a fake in tests). */
  tun: PacketDevice;
  /** The underlay (native sockets, node:dgram, or a fake in tests). */
  transport: DatagramTransport;
  log: Logger;
  mtu: number;
  /**
   * Milliseconds, for the under-load window and the send-error log
   * interval (not the protocol's timers: the device has its own clock).
   * Default Date.now; inject to test the switching.
   */
  now?: () => number;
}

/** Transport messages never read their source; one shared placeholder avoids decoding it. */
const TRANSPORT_SOURCE = { address: '', port: 0 };

/**
 * A slot array with its first slot allocated (the first packet would
 * allocate it anyway): an empty literal starts with small-integer elements
 * and changes kind at the first packet, which would deoptimise the packet
 * path that the start-up warm-up compiled (src/pipeline/warmup.ts).
 */
function slotArray(size: number): Buffer[] {
  return [Buffer.allocUnsafeSlow(size)];
}

export class Pipeline {
  readonly drops: DropCounters = newDropCounters();
  /** Packets moved, reported in the daemon's status record. */
  readonly counters = { tunRx: 0, tunTx: 0, udpRx: 0, udpTx: 0, keepalivesRx: 0 };
  /** Cookie replies sent instead of a handshake response (under load): a handshake flood shows here. */
  cookieRepliesSent = 0;

  private readonly device: WireGuardDevice<Peer>;
  private readonly table: PeerTable<Peer>;
  private readonly tun: PacketDevice;
  private transport: DatagramTransport;
  private readonly now: () => number;
  /** Outbound datagrams of one TUN batch, sent with one sendBatch. */
  private txBufs: Buffer[];
  private readonly txLens = new Uint32Array(SEND_BATCH_MAX);
  private readonly txDests: Uint8Array[] = [];
  private txSlotSize: number;
  private readonly log: Logger;
  /** Decrypted plaintext of one datagram batch, one slot each, written to the TUN after the batch. */
  private rxBufs: Buffer[];
  private readonly rxLens = new Uint32Array(TUN_WRITE_BATCH_MAX);
  private rxCount = 0;
  /**
   * Exact-length views of the slots, one cache per batch position: the TUN
   * packets and the datagrams as the protocol takes them, and each
   * plaintext slot at a transport message's plaintext length (what the
   * AEAD open writes). A slot read again at the same length (a bulk flow)
   * reuses its view instead of allocating one per packet. Each list starts
   * with its first cache, for the reason slotArray does.
   */
  private readonly tunViews: ViewCache[] = [new ViewCache()];
  private readonly udpViews: ViewCache[] = [new ViewCache()];
  private readonly rxViews: ViewCache[] = [new ViewCache()];
  /** Per transmit slot: the sealed part of a datagram (past its 16-byte header). */
  private readonly sealViews: ViewCache[] = [new ViewCache()];
  /** Per datagram slot: its ciphertext (past the header), what the AEAD opens. */
  private readonly bodyViews: ViewCache[] = [new ViewCache()];
  private rxSlotSize: number;
  private lastSendErrors = 0;
  private lastOversized = 0;
  private initiationsInWindow = 0;
  private windowStart = 0;
  private underLoadUntil = 0;
  private lastSendErrorLog = 0;
  private running = false;

  constructor(opts: PipelineOptions) {
    this.device = opts.peers.device;
    this.table = opts.peers.table;
    this.tun = opts.tun;
    this.transport = opts.transport;
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.rxSlotSize = Math.max(opts.mtu, 1500) + SLOT_PADDING;
    this.txSlotSize = Math.max(opts.mtu, 1500) + SLOT_PADDING;
    this.rxBufs = slotArray(this.rxSlotSize);
    this.txBufs = slotArray(this.txSlotSize);
    // Padding is capped by the tunnel MTU (never past it on the wire).
    this.device.setMtu(opts.mtu);
  }

  /** A new tunnel MTU (reload): the protocol pads by it from the next packet on. */
  setMtu(mtu: number): void {
    this.device.setMtu(mtu);
    if (this.rxSlotSize < mtu + SLOT_PADDING) {
      this.rxSlotSize = mtu + SLOT_PADDING;
      this.rxBufs = slotArray(this.rxSlotSize);
    }
    if (this.txSlotSize < mtu + SLOT_PADDING) {
      this.txSlotSize = mtu + SLOT_PADDING;
      this.txBufs = slotArray(this.txSlotSize);
    }
  }

  setTransport(transport: DatagramTransport): void {
    this.transport = transport;
    this.lastOversized = 0;
    this.lastSendErrors = 0;
    if (this.running) {
      transport.onBatch(this.onDatagrams);
      transport.onError((err) => this.log.warn({ err: err.message }, 'UDP socket error'));
    }
  }

  start(): void {
    this.running = true;
    this.tun.onPackets(this.onTunBatch);
    this.tun.onError((err) => this.log.error({ err: err.message }, 'TUN device error'));
    this.transport.onBatch(this.onDatagrams);
    this.transport.onError((err) => this.log.warn({ err: err.message }, 'UDP socket error'));
  }

  stop(): void {
    this.running = false;
    this.transport.onBatch(() => undefined);
  }

  private drop(reason: DropReason): void {
    this.drops[reason]++;
  }

  /**
   * Outbound: one batch of IP packets read from the TUN device becomes one
   * batch of datagrams (one sendmmsg with the native transport). The
   * transmit buffers are preallocated and reused: the kernel copies them
   * during the send.
   */
  private readonly onTunBatch = (slots: readonly Uint8Array[], lengths: Uint32Array, count: number): void => {
    // One clock read for the batch (WireGuardDevice.holdClock).
    this.device.holdClock();
    try {
      this.sealBatch(slots, lengths, count);
    } finally {
      this.device.releaseClock();
    }
  };

  private sealBatch(slots: readonly Uint8Array[], lengths: Uint32Array, count: number): void {
    let n = 0;
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      const pkt = slots[i];
      this.counters.tunRx++;
      const version = len > 0 ? pkt[0] >> 4 : 0; // the IP version nibble
      if (version !== 4 && version !== 6) {
        this.drop('bad-ip-version');
        continue;
      }
      // A header cut short, or one whose lengths lie, would only be dropped
      // by the peer after a seal, a send and an open.
      if (ipPacketLength(pkt, len) < 0) {
        this.drop('bad-ip-header');
        continue;
      }
      // Larger than a transmit slot can seal (a TUN never reads one beyond
      // its MTU; a fake or a lowered MTU could): dropped, not thrown.
      if (len > this.txSlotSize - TRANSPORT_OVERHEAD) {
        this.drop('oversized');
        continue;
      }
      const peer = this.table.lookupDestination(pkt, len);
      if (peer === undefined) {
        this.drop('no-peer');
        continue;
      }
      const dest = peer.endpointKey;
      if (dest === undefined) {
        this.drop('no-endpoint');
        continue;
      }
      let out = this.txBufs[n];
      if (out === undefined) {
        out = Buffer.allocUnsafeSlow(this.txSlotSize);
        this.txBufs[n] = out;
      }
      const written = peer.proto.encapsulate(cacheAt(this.tunViews, i).of(pkt, 0, len), out, cacheAt(this.sealViews, n));
      if (written > 0) {
        this.txLens[n] = written;
        this.txDests[n] = dest;
        n++;
        peer.proto.stats.txPackets++;
        if (n === this.txLens.length) {
          this.transport.sendBatch(this.txBufs, this.txLens, this.txDests, n);
          this.counters.udpTx += n;
          n = 0;
        }
      }
      // A rekey initiation (written > 0) or a started handshake (written = 0) waits here.
      if (peer.proto.hasOutbound) this.flushOutbound(peer);
    }
    if (n > 0) {
      this.transport.sendBatch(this.txBufs, this.txLens, this.txDests, n);
      this.counters.udpTx += n;
    }
  }

  /** Sends whatever the protocol produced outside encapsulate (handshakes, staged data). */
  private flushOutbound(peer: Peer): void {
    const dest = peer.endpointKey;
    if (!peer.proto.hasOutbound) return;
    const pending = peer.proto.takeOutbound();
    if (dest === undefined) return;
    for (const d of pending) {
      this.transport.send(d, d.length, dest);
      this.counters.udpTx++;
    }
  }

  /** Starts a handshake now (persistent-keepalive peers at start-up). */
  initiate(peer: Peer): void {
    const msg = peer.proto.initiateHandshake();
    if (msg && peer.endpointKey) this.transport.send(msg, msg.length, peer.endpointKey);
    this.flushOutbound(peer);
  }

  /**
   * Inbound: a batch of datagrams. `sources` holds each one's sender,
   * encoded (ENDPOINT_SIZE bytes per slot); it is decoded to text only for
   * handshake messages and when a peer roams.
   */
  private readonly onDatagrams = (slots: readonly Uint8Array[], lengths: Uint32Array, sources: Uint8Array, count: number): void => {
    this.device.holdClock();
    try {
      for (let i = 0; i < count; i++) this.onDatagram(slots[i], lengths[i], sources, i);
    } finally {
      this.device.releaseClock();
    }
    this.flushTun();
  };

  /** Writes the batch's decrypted packets to the TUN device in one call. */
  private flushTun(): void {
    const n = this.rxCount;
    if (n === 0) return;
    this.rxCount = 0;
    let written: number;
    try {
      written = this.tun.writeBatch(this.rxBufs, n, this.rxLens);
    } catch (err) {
      written = writtenBefore(err);
    }
    this.counters.tunTx += written;
    if (written < n) this.drops['tun-write-failed'] += n - written;
  }

  private onDatagram(slot: Uint8Array, length: number, sources: Uint8Array, i: number): void {
    this.counters.udpRx++;
    if (length > 0 && slot[0] === MESSAGE_INITIATION && ++this.initiationsInWindow === UNDER_LOAD_INITIATIONS) this.enterUnderLoad();
    if (this.rxCount === this.rxLens.length) this.flushTun();
    let out = this.rxBufs[this.rxCount];
    if (out === undefined || out.length < length) {
      out = Buffer.allocUnsafeSlow(Math.max(this.rxSlotSize, length));
      this.rxBufs[this.rxCount] = out;
    }
    // Only handshake messages read the source (cookies, rate limiting).
    const source = length > 0 && slot[0] !== MESSAGE_TRANSPORT ? decodeSource(sources, i) : TRANSPORT_SOURCE;
    const datagram = cacheAt(this.udpViews, i).of(slot, 0, length);
    const plain = length > MESSAGE_OVERHEAD ? cacheAt(this.rxViews, this.rxCount).of(out, 0, length - MESSAGE_OVERHEAD) : out;
    const res = this.device.decapsulate(datagram, source, plain, cacheAt(this.bodyViews, i));
    switch (res.kind) {
      case 'data': {
        const peer = res.peer.owner;
        this.roam(peer, sources, i);
        // Confirming a session can release staged packets or a rekey.
        if (peer.proto.hasOutbound) this.flushOutbound(peer);
        if (res.length === 0) {
          this.counters.keepalivesRx++;
          return;
        }
        const len = ipPacketLength(out, res.length);
        if (len < 0) {
          this.drop('bad-inner-packet');
          return;
        }
        if (!this.table.isSourceAllowed(peer, out, len)) {
          this.drop('source-not-allowed');
          return;
        }
        peer.proto.stats.rxPackets++;
        this.rxLens[this.rxCount++] = len;
        return;
      }
      case 'handshake': {
        if (res.reply) {
          const to = sourceAt(sources, i);
          this.transport.send(res.reply, res.reply.length, to);
          if (res.reply[0] === MESSAGE_COOKIE_REPLY) this.cookieRepliesSent++;
        }
        const peer = res.peer?.owner;
        if (peer !== undefined) {
          this.roam(peer, sources, i);
          const dest = peer.endpointKey;
          if (dest !== undefined) for (const d of res.flush) this.transport.send(d, d.length, dest);
          this.flushOutbound(peer);
        }
        return;
      }
      case 'cookie': {
        return;
      }
      case 'error': {
        // Every protocol drop reason is a pipeline counter (checked by tsc).
        this.drops[res.code]++;
        return;
      }
    }
  }

  /** Roaming: a peer's endpoint follows its latest authenticated packet. */
  private roam(peer: Peer, sources: Uint8Array, i: number): void {
    const key = peer.endpointKey;
    if (key !== undefined && sourceEquals(sources, i, key)) return;
    peer.roamTo(sourceAt(sources, i), decodeSource(sources, i));
  }

  /**
   * Many initiations in a short time: answer them with cookie replies (no
   * Diffie-Hellman) until the flood has been over for UNDER_LOAD_AFTER_MS.
   * The protocol core owns the cookie mechanism; deciding "under load" is
   * the pipeline's, because it sees the arrival rate.
   */
  private enterUnderLoad(): void {
    this.underLoadUntil = this.now() + UNDER_LOAD_AFTER_MS;
    if (!this.device.isUnderLoad) {
      this.device.setUnderLoad(true);
      this.log.warn({ initiationsPerWindow: UNDER_LOAD_INITIATIONS, windowMs: UNDER_LOAD_WINDOW_MS }, 'handshake flood: answering with cookies');
    }
  }

  private checkLoad(now: number): void {
    if (now - this.windowStart < UNDER_LOAD_WINDOW_MS) return;
    if (this.initiationsInWindow >= UNDER_LOAD_INITIATIONS) this.underLoadUntil = now + UNDER_LOAD_AFTER_MS;
    this.windowStart = now;
    this.initiationsInWindow = 0;
    if (this.device.isUnderLoad && now >= this.underLoadUntil) {
      this.device.setUnderLoad(false);
      this.log.info('handshake flood over: cookies off');
    }
  }

  /** Protocol timers, and a summary of send failures at most every 10 s. */
  tick(): void {
    const now = this.now();
    this.checkLoad(now);
    // device.tick() also drains every peer's outbound list.
    const out = this.device.tick();
    for (const d of out) {
      const dest = d.peer.owner.endpointKey;
      if (dest !== undefined) {
        this.transport.send(d.data, d.data.length, dest);
        this.counters.udpTx++;
      }
    }
    // Datagrams too large for a receive slot never reach decapsulate.
    const oversized = this.transport.oversizedReceived();
    if (oversized !== this.lastOversized) {
      this.drops.oversized += oversized - this.lastOversized;
      this.lastOversized = oversized;
    }
    const failures = this.transport.sendFailures();
    if (failures.count !== this.lastSendErrors && now - this.lastSendErrorLog >= SEND_ERROR_LOG_INTERVAL_MS) {
      this.log.warn({ failed: failures.count - this.lastSendErrors, err: failures.last }, 'UDP sends failing');
      this.lastSendErrors = failures.count;
      this.lastSendErrorLog = now;
    }
  }
}

/** The view cache of batch position `i`, made the first time a batch reaches it. */
function cacheAt(caches: ViewCache[], i: number): ViewCache {
  let c = caches[i];
  if (c === undefined) {
    c = new ViewCache();
    caches[i] = c;
  }
  return c;
}
