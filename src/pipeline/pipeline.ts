/**
 * The packet pipelines between the TUN device and the UDP sockets.
 *
 *  outbound:  TUN read batch ─▶ for each packet: allowed-IPs lookup of the
 *             destination ─▶ peer.encapsulate into a fresh datagram
 *             ─▶ UDP send to the peer's endpoint
 *             (no session yet: the protocol stages the packet and starts a
 *             handshake; we send what takeOutbound() returns)
 *
 *  inbound:   UDP datagram ─▶ device.decapsulate into a reusable buffer
 *             ─▶ data: trim padding by the IP header, check the inner source
 *                against the sending peer's allowed IPs, TUN write;
 *                the peer's endpoint follows the packet (roaming)
 *             ─▶ handshake: reply to the source, flush staged data
 *             ─▶ error: count the drop by reason
 *
 * No logging per packet: drops are counted, send failures are summarised
 * at most once per interval by tick().
 */
import type { RemoteInfo } from 'node:dgram';
import type { PeerConfig } from '../config/index.js';
import type { Logger } from '../log.js';
import type { PeerTable } from '../peers/peer-table.js';
import type { WireGuardDevice, ProtocolPeer } from '../protocol/device.js';
import { normaliseAddress, type Endpoint } from '../transport/endpoint.js';
import type { UdpTransport } from '../transport/udp.js';
import type { TunDevice } from '../tun/tun-device.js';
import { newDropCounters, type DropCounters, type DropReason } from './counters.js';
import { ipPacketLength } from './ip.js';

/** What the daemon keeps per peer: its config, protocol state and endpoint. */
export interface DaemonPeer {
  config: PeerConfig;
  proto: ProtocolPeer;
  endpoint: Endpoint | undefined;
  /** Data packets through this peer's tunnel (bytes are in proto.stats). */
  rxPackets: number;
  txPackets: number;
}

export interface PipelineOptions {
  device: WireGuardDevice;
  table: PeerTable<DaemonPeer>;
  tun: TunDevice;
  transport: UdpTransport;
  log: Logger;
  mtu: number;
}

/** WireGuard adds 16 (header) + 16 (tag) + up to 15 (padding) bytes. */
const OVERHEAD = 32 + 15;
const SEND_ERROR_LOG_INTERVAL_MS = 10_000;

export class Pipeline {
  readonly drops: DropCounters = newDropCounters();
  /** Packets and bytes moved, for status and benchmarks. */
  readonly counters = { tunRx: 0, tunTx: 0, udpRx: 0, udpTx: 0, keepalivesRx: 0 };

  private readonly device: WireGuardDevice;
  private readonly table: PeerTable<DaemonPeer>;
  private readonly tun: TunDevice;
  private transport: UdpTransport;
  private readonly log: Logger;
  private readonly byProto = new Map<ProtocolPeer, DaemonPeer>();
  /** Decrypted plaintext lands here; reused because TUN writes are synchronous. */
  private rxBuf: Buffer;
  private lastSendErrors = 0;
  private lastSendErrorLog = 0;
  private running = false;

  constructor(opts: PipelineOptions) {
    this.device = opts.device;
    this.table = opts.table;
    this.tun = opts.tun;
    this.transport = opts.transport;
    this.log = opts.log;
    this.rxBuf = Buffer.alloc(Math.max(opts.mtu, 1500) + 256);
  }

  registerPeer(peer: DaemonPeer): void {
    this.byProto.set(peer.proto, peer);
  }

  unregisterPeer(peer: DaemonPeer): void {
    this.byProto.delete(peer.proto);
  }

  setMtu(mtu: number): void {
    if (this.rxBuf.length < mtu + 256) this.rxBuf = Buffer.alloc(mtu + 256);
  }

  setTransport(transport: UdpTransport): void {
    this.transport = transport;
    if (this.running) transport.onDatagram(this.onDatagram);
  }

  start(): void {
    this.running = true;
    this.tun.onPackets(this.onTunBatch);
    this.tun.onError((err) => this.log.error({ err: err.message }, 'TUN device error'));
    this.transport.onDatagram(this.onDatagram);
    this.transport.onError((err) => this.log.warn({ err: err.message }, 'UDP socket error'));
  }

  stop(): void {
    this.running = false;
    this.transport.onDatagram(() => undefined);
  }

  private drop(reason: DropReason): void {
    this.drops[reason]++;
  }

  /** Outbound: one batch of IP packets read from the TUN device. */
  private readonly onTunBatch = (slots: readonly Buffer[], lengths: Uint32Array, count: number): void => {
    for (let i = 0; i < count; i++) {
      const len = lengths[i];
      const pkt = slots[i];
      this.counters.tunRx++;
      const version = len > 0 ? pkt[0] >> 4 : 0;
      if (version !== 4 && version !== 6) {
        this.drop('bad-ip-version');
        continue;
      }
      const peer = this.table.lookupDestination(pkt, len);
      if (peer === undefined) {
        this.drop('no-peer');
        continue;
      }
      const endpoint = peer.endpoint;
      if (endpoint === undefined) {
        this.drop('no-endpoint');
        continue;
      }
      const out = Buffer.allocUnsafe(len + OVERHEAD);
      const n = peer.proto.encapsulate(pkt.subarray(0, len), out);
      if (n > 0) {
        this.transport.send(out, n, endpoint);
        this.counters.udpTx++;
        peer.txPackets++;
      }
      // A rekey initiation (n > 0) or a started handshake (n = 0) waits here.
      if (peer.proto.hasOutbound) this.flushOutbound(peer);
    }
  };

  /** Sends whatever the protocol produced outside encapsulate (handshakes, staged data). */
  private flushOutbound(peer: DaemonPeer): void {
    const endpoint = peer.endpoint;
    if (!peer.proto.hasOutbound) return;
    const pending = peer.proto.takeOutbound();
    if (endpoint === undefined) return;
    for (const d of pending) {
      this.transport.send(d, d.length, endpoint);
      this.counters.udpTx++;
    }
  }

  /** Starts a handshake now (persistent-keepalive peers at start-up). */
  initiate(peer: DaemonPeer): void {
    const msg = peer.proto.initiateHandshake();
    if (msg && peer.endpoint) this.transport.send(msg, msg.length, peer.endpoint);
    this.flushOutbound(peer);
  }

  /** Inbound: one datagram from the UDP socket. */
  private readonly onDatagram = (msg: Buffer, rinfo: RemoteInfo): void => {
    this.counters.udpRx++;
    if (this.rxBuf.length < msg.length) this.rxBuf = Buffer.alloc(msg.length + 256);
    const out = this.rxBuf;
    const res = this.device.decapsulate(msg, rinfo, out);
    switch (res.kind) {
      case 'data': {
        const peer = this.byProto.get(res.peer);
        if (peer === undefined) return;
        this.roam(peer, rinfo);
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
        peer.rxPackets++;
        try {
          this.tun.write(out.subarray(0, len));
          this.counters.tunTx++;
        } catch {
          this.drop('tun-write-failed');
        }
        return;
      }
      case 'handshake': {
        if (res.reply) {
          const { address, family } = normaliseAddress(rinfo.address);
          this.transport.send(res.reply, res.reply.length, { address, port: rinfo.port, family });
        }
        const peer = res.peer ? this.byProto.get(res.peer) : undefined;
        if (peer) {
          this.roam(peer, rinfo);
          for (const d of res.flush) this.transport.send(d, d.length, peer.endpoint ?? { ...normaliseAddress(rinfo.address), port: rinfo.port });
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
  };

  /** Roaming: a peer's endpoint follows its latest authenticated packet. */
  private roam(peer: DaemonPeer, rinfo: RemoteInfo): void {
    const cur = peer.endpoint;
    if (cur !== undefined && cur.port === rinfo.port && (cur.address === rinfo.address || `::ffff:${cur.address}` === rinfo.address)) return;
    const { address, family } = normaliseAddress(rinfo.address);
    peer.endpoint = { address, port: rinfo.port, family };
  }

  /** Protocol timers, and a summary of send failures at most every 10 s. */
  tick(): void {
    // device.tick() also drains every peer's outbound list.
    const out = this.device.tick();
    for (const d of out) {
      const peer = this.byProto.get(d.peer);
      if (peer?.endpoint) {
        this.transport.send(d.data, d.data.length, peer.endpoint);
        this.counters.udpTx++;
      }
    }
    const errors = this.transport.sendErrors;
    const now = Date.now();
    if (errors !== this.lastSendErrors && now - this.lastSendErrorLog >= SEND_ERROR_LOG_INTERVAL_MS) {
      this.log.warn(
        { failed: errors - this.lastSendErrors, err: this.transport.lastSendError?.message },
        'UDP sends failing',
      );
      this.lastSendErrors = errors;
      this.lastSendErrorLog = now;
    }
  }
}
