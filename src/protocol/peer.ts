/**
 * One peer of a device: its handshake, its sessions (previous / current /
 * next, as wireguard-go keeps them), the queue of packets waiting for a
 * session, and its timers (the paper's section 6, as deadlines checked by
 * tick() rather than live timer objects, so the clock stays injected).
 *
 * Session rotation: the initiator installs a new session as `current` as soon
 * as it consumes the response. The responder keeps it as `next` and may not
 * send with it until the initiator's first transport message proves the
 * initiator has it too; that message promotes `next` to `current`. The old
 * `current` stays as `previous` so packets in flight still decrypt.
 */
import type { CryptoBackend } from '../crypto/types.js';
import type { ViewCache } from '../crypto/util.js';
import { KEY_LEN } from './constants.js';
import type { ProtocolConstants } from './constants.js';
import { CookieGenerator } from './cookie.js';
import { INITIATION_SIZE, RESPONSE_SIZE } from './messages.js';
import { Handshake, createInitiation, createResponse, deriveTransportKeys } from './noise-handshake.js';
import type { NoiseIdentity } from './noise-handshake.js';
import { Session, transportSize } from './session.js';
import type { IndexTable } from './index-table.js';

/** What a receiver index names: a handshake in flight or a session. */
export class PendingHandshake<O = void> {
  constructor(readonly peer: ProtocolPeer<O>) {}
}
export type IndexEntry<O = void> = Session<ProtocolPeer<O>> | PendingHandshake<O>;

/** What a peer needs from its device; the device implements it. */
export interface DeviceContext<O = void> {
  readonly crypto: CryptoBackend;
  readonly constants: ProtocolConstants;
  readonly identity: NoiseIdentity;
  readonly indices: IndexTable<IndexEntry<O>>;
  readonly maxQueuedPackets: number;
  /** Padding buffer shared by all peers (the core is single-threaded). */
  readonly scratch: Uint8Array;
  /**
   * The tunnel MTU: padding never goes past it. Read per packet, so a
   * reload's new MTU applies from the next packet on. 0 = no cap.
   */
  mtu: number;
  now(): number;
  wallClock(): number;
  /** Cryptographically random (session indices). */
  random32(): number;
  /** Cheap, seeded once from random32: timer jitter only, called per idle packet. */
  jitter32(): number;
}

export interface ProtocolPeerOptions {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  /** Seconds, 0 = off. */
  persistentKeepalive?: number;
}

/**
 * A peer's counters, the only ones: status, metrics, the control socket's
 * get and `tunvpn show` all read them here. Bytes and handshakes are
 * counted by the protocol; packets by the pipeline, which alone knows
 * what reached the TUN device (after the inner-source check).
 */
export interface PeerStats {
  /** Bytes of authenticated datagrams received (transport messages, headers included). */
  rxBytes: number;
  /** Bytes of transport datagrams sent. */
  txBytes: number;
  /** Data packets from this peer written towards the TUN device (keepalives and dropped packets not counted). */
  rxPackets: number;
  /** Data packets read from the TUN device and sealed at once for this peer (staged ones not counted). */
  txPackets: number;
  /** Wall-clock ms of the last completed handshake, 0 if none. */
  lastHandshakeWallMs: number;
  handshakesStarted: number;
  handshakesCompleted: number;
}

/** Reused result of a successful transport decapsulation (see WireGuardDevice.decapsulate). */
export interface DataResult<O = void> {
  kind: 'data';
  peer: ProtocolPeer<O>;
  length: number;
}

const NEVER = Infinity;

/**
 * `O` is the type of the owner: whatever the embedding keeps per peer (the
 * daemon's Peer record, src/peers/registry.ts). Every result that names a
 * peer names this object, so the owner is one property away: no lookup on
 * the packet path. The protocol never looks inside it.
 */
export class ProtocolPeer<O = void> {
  readonly publicKey: Uint8Array;
  readonly publicKeyB64: string;
  /** The embedding's record of this peer, given to WireGuardDevice.addPeer. */
  readonly owner: O;
  readonly stats: PeerStats = { rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, lastHandshakeWallMs: 0, handshakesStarted: 0, handshakesCompleted: 0 };

  /** @internal */ readonly handshake: Handshake;
  /** @internal */ readonly cookies: CookieGenerator;
  /** @internal */ readonly pending: PendingHandshake<O>;
  /** @internal */ readonly dataResult: DataResult<O>;
  /** @internal */ previous: Session<ProtocolPeer<O>> | undefined;
  /** @internal */ current: Session<ProtocolPeer<O>> | undefined;
  /** @internal */ next: Session<ProtocolPeer<O>> | undefined;

  private staged: Uint8Array[] = [];
  private outbound: Uint8Array[] = [];
  private persistentKeepaliveMs = 0;
  private removed = false;

  // Timers: absolute monotonic deadlines, NEVER when not armed.
  private retransmitAt = NEVER;
  private keepaliveAt = NEVER;
  private newHandshakeAt = NEVER;
  private zeroKeysAt = NEVER;
  private persistentKeepaliveAt = NEVER;
  private handshakeAttempts = 0;
  private needAnotherKeepalive = false;
  private sentLastMinuteHandshake = false;
  private lastSentHandshakeAt = -Infinity;
  private lastHandshakeAtMs = -Infinity;
  // First contact (see initiateForData): whether the latest handshake
  // message we sent was for waiting data, the wait before data re-initiates
  // behind such an unanswered one, and when waiting data may initiate next.
  private lastHandshakeForData = false;
  private dataRetryInterval: number;
  private firstContactAt = NEVER;

  /** @internal Created by WireGuardDevice.addPeer. */
  constructor(
    private readonly ctx: DeviceContext<O>,
    opts: ProtocolPeerOptions,
    owner: O,
  ) {
    this.owner = owner;
    if (opts.publicKey.length !== KEY_LEN) throw new RangeError('peer public key must be 32 bytes');
    this.publicKey = Uint8Array.from(opts.publicKey);
    this.publicKeyB64 = Buffer.from(this.publicKey).toString('base64');
    this.handshake = new Handshake(this.publicKey);
    this.handshake.precompute(ctx.identity);
    this.cookies = new CookieGenerator(ctx.crypto, ctx.constants.cookieRefreshTime, this.publicKey);
    this.pending = new PendingHandshake(this);
    this.dataResult = { kind: 'data', peer: this, length: 0 };
    this.dataRetryInterval = ctx.constants.dataRetryInitial;
    this.setPresharedKey(opts.presharedKey);
    this.setPersistentKeepalive(opts.persistentKeepalive ?? 0);
  }

  setPresharedKey(k?: Uint8Array): void {
    if (k !== undefined && k.length !== KEY_LEN) throw new RangeError('preshared key must be 32 bytes');
    if (k === undefined) this.handshake.presharedKey.fill(0);
    else this.handshake.presharedKey.set(k);
  }

  /** Seconds, 0 = off. Takes effect at the next authenticated packet, or now if one has been seen. */
  setPersistentKeepalive(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 65535) throw new RangeError('persistent keepalive must be 0..65535 s');
    const was = this.persistentKeepaliveMs;
    this.persistentKeepaliveMs = Math.floor(seconds) * 1000;
    if (this.persistentKeepaliveMs === 0) this.persistentKeepaliveAt = NEVER;
    else if (was === 0 && this.current !== undefined) this.persistentKeepaliveAt = this.ctx.now();
  }

  get persistentKeepalive(): number {
    return this.persistentKeepaliveMs / 1000;
  }

  /**
   * Monotonic time (the device clock) of the last completed handshake,
   * -Infinity if none: what endpoint re-resolution asks ("no handshake
   * younger than 135 s"), immune to wall-clock steps.
   */
  get lastHandshakeAt(): number {
    return this.lastHandshakeAtMs;
  }

  /** Whether takeOutbound() has datagrams (check after encapsulate/decapsulate). */
  get hasOutbound(): boolean {
    return this.outbound.length > 0;
  }

  /** Packets waiting for a session. */
  get queuedPackets(): number {
    return this.staged.length;
  }

  /** Whether a session can carry data right now. */
  get hasSession(): boolean {
    return this.current?.canSend(this.ctx.now()) === true;
  }

  /**
   * Encrypts one IP packet into `out` (>= transportSize(packet.length), i.e.
   * packet.length + 32 + 15 is always enough, whatever the MTU) and returns the datagram
   * length. Returns 0 when there is no usable session (or older packets are
   * still queued): the packet is copied into the bounded queue and a
   * handshake is started; fetch what to send with takeOutbound().
   * `sealed`: an optional view memo for `out` (Session.encrypt).
   */
  encapsulate(packet: Uint8Array, out: Uint8Array, sealed?: ViewCache): number {
    const now = this.ctx.now();
    const s = this.current;
    if (s === undefined || this.staged.length > 0 || !s.canSend(now)) {
      this.stage(packet);
      this.sendStaged(now, packet.length > 0);
      return 0;
    }
    return this.seal(s, packet, out, now, sealed);
  }

  /** Datagrams produced outside the caller's buffers: handshakes, flushed queue, keepalives. */
  takeOutbound(): Uint8Array[] {
    if (this.outbound.length === 0) return [];
    const out = this.outbound;
    this.outbound = [];
    return out;
  }

  /**
   * Starts a handshake now and returns the initiation to send, or undefined
   * when one was sent less than Rekey-Timeout ago (or cannot be made).
   */
  initiateHandshake(): Uint8Array | undefined {
    return this.createInitiationMessage(this.ctx.now(), false, false, false);
  }

  // ---- internal: called by the device ----

  /**
   * @internal The responder's side after a valid initiation: returns the
   * response. An initiation of ours that was pending (both sides initiated
   * at once) keeps its index and comes back afterwards, so its response is
   * still accepted: both handshakes complete and each side sends on the one
   * it initiated, the other decrypting it with its responder session.
   */
  respond(now: number): Uint8Array | undefined {
    const hs = this.handshake;
    try {
      return this.makeResponse(now);
    } finally {
      hs.restoreInitiation(this.ctx.crypto);
    }
  }

  private makeResponse(now: number): Uint8Array | undefined {
    const { ctx } = this;
    const hs = this.handshake;
    // The index of an initiation set aside stays ours (see respond).
    const index = hs.hasInitiationAside ? ctx.indices.allocate(this.pending) : this.allocateIndex();
    const msg = new Uint8Array(RESPONSE_SIZE);
    if (!createResponse(ctx.identity, hs, index, msg)) {
      ctx.indices.free(index);
      hs.clear(ctx.crypto);
      return undefined;
    }
    this.cookies.addMacs(msg, now);
    const keys = deriveTransportKeys(ctx.crypto, hs);
    if (keys === undefined) {
      ctx.indices.free(index);
      return undefined;
    }
    const s = new Session<ProtocolPeer<O>>(ctx.crypto, keys, this, now, ctx.constants.rejectAfterMessages, ctx.constants.rejectAfterTime);
    ctx.indices.replace(index, s);
    this.drop(this.next);
    this.next = s;
    this.drop(this.previous);
    this.previous = undefined;
    // A response counts as a handshake sent: do not start our own for a while,
    // the initiator's first data will confirm this session (data waiting
    // here may still initiate after firstContactDelay: the response may be lost).
    this.lastSentHandshakeAt = now;
    this.lastHandshakeForData = false;
    this.onAnyAuthenticatedTraversal(now);
    this.onAnyAuthenticatedSent();
    this.onSessionDerived(now);
    return msg;
  }

  /** @internal The initiator's side after a valid response; queues the staged packets or a keepalive. */
  completeAsInitiator(now: number): boolean {
    const { ctx } = this;
    const keys = deriveTransportKeys(ctx.crypto, this.handshake);
    if (keys === undefined) return false;
    const s = new Session<ProtocolPeer<O>>(ctx.crypto, keys, this, now, ctx.constants.rejectAfterMessages, ctx.constants.rejectAfterTime);
    ctx.indices.replace(keys.localIndex, s);
    // A responder session of a crossing handshake (both initiated at once)
    // becomes `previous`: the peer sends on it, we send on ours.
    if (this.next !== undefined) {
      this.drop(this.previous);
      this.previous = this.next;
      this.next = undefined;
      this.drop(this.current);
    } else {
      this.drop(this.previous);
      this.previous = this.current;
    }
    this.current = s;
    this.onAnyAuthenticatedTraversal(now);
    this.onAnyAuthenticatedReceived();
    this.onHandshakeComplete();
    this.onSessionDerived(now);
    // The responder may not use the session until it hears from us.
    this.sendKeepalive(now);
    return true;
  }

  /** @internal A valid initiation was consumed (before responding). */
  onInitiationConsumed(now: number): void {
    this.onAnyAuthenticatedTraversal(now);
    this.onAnyAuthenticatedReceived();
  }

  /** @internal After a transport message authenticated and passed the replay window. */
  receivedData(s: Session<ProtocolPeer<O>>, plaintextLength: number, datagramLength: number, now: number): void {
    if (s === this.next) {
      this.drop(this.previous);
      this.previous = this.current;
      this.current = s;
      this.next = undefined;
      this.onHandshakeComplete();
      if (this.staged.length > 0) this.sendStaged(now, false);
    }
    this.stats.rxBytes += datagramLength;
    this.onAnyAuthenticatedReceived();
    this.onAnyAuthenticatedTraversal(now);
    if (plaintextLength > 0) this.onDataReceived(now);
    // Keep-key-fresh on receive: an initiator whose session nears
    // Reject-After-Time starts one last handshake even if it sends nothing.
    const cur = this.current;
    const c = this.ctx.constants;
    if (cur?.isInitiator && !this.sentLastMinuteHandshake && now - cur.createdAt >= c.rejectAfterTime - c.keepaliveTimeout - c.rekeyTimeout) {
      this.sentLastMinuteHandshake = true;
      this.queueInitiation(now, false);
    }
  }

  /** @internal Runs expired timers; datagrams go to the outbound list. */
  tick(now: number): void {
    const c = this.ctx.constants;
    if (now >= this.retransmitAt) {
      this.retransmitAt = NEVER;
      if (this.handshakeAttempts >= Math.floor(c.rekeyAttemptTime / c.rekeyTimeout)) {
        // Gave up: drop what waited for the session, wipe keys later.
        this.staged = [];
        this.handshakeAttempts = 0;
        if (this.zeroKeysAt === NEVER) this.zeroKeysAt = now + 3 * c.rejectAfterTime;
      } else {
        this.handshakeAttempts++;
        this.queueInitiation(now, true);
      }
    }
    if (now >= this.firstContactAt) {
      this.firstContactAt = NEVER;
      if (!this.hasSession && this.staged.some((p) => p.length > 0)) this.initiateForData(now);
    }
    if (now >= this.keepaliveAt) {
      this.keepaliveAt = NEVER;
      this.sendKeepalive(now);
      if (this.needAnotherKeepalive) {
        this.needAnotherKeepalive = false;
        this.keepaliveAt = now + c.keepaliveTimeout;
      }
    }
    if (now >= this.newHandshakeAt) {
      // We sent data but heard nothing for Keepalive + Rekey-Timeout.
      this.newHandshakeAt = NEVER;
      this.queueInitiation(now, false);
    }
    if (now >= this.zeroKeysAt) {
      this.zeroKeysAt = NEVER;
      this.zeroAll();
    }
    if (now >= this.persistentKeepaliveAt) {
      this.persistentKeepaliveAt = NEVER;
      if (this.persistentKeepaliveMs > 0) this.sendKeepalive(now);
    }
  }

  /** @internal Wipes sessions and the handshake and frees their indices (peer removal, key change). */
  zeroAll(): void {
    this.drop(this.previous);
    this.drop(this.current);
    this.drop(this.next);
    this.previous = this.current = this.next = undefined;
    if (this.handshake.localIndex >= 0 && this.ctx.indices.get(this.handshake.localIndex) === this.pending) {
      this.ctx.indices.free(this.handshake.localIndex);
    }
    this.handshake.clear(this.ctx.crypto);
    this.handshake.dropAside(this.ctx.crypto);
    this.firstContactAt = NEVER;
  }

  /** @internal */
  remove(): void {
    this.zeroAll();
    this.removed = true;
    this.staged = [];
    this.outbound = [];
    this.retransmitAt = this.keepaliveAt = this.newHandshakeAt = this.zeroKeysAt = this.persistentKeepaliveAt = this.firstContactAt = NEVER;
    // The preshared key and the static-static DH are this peer's copies.
    this.handshake.wipe(this.ctx.crypto);
  }

  /** @internal Our static key changed: recompute and forget everything keyed by the old one. */
  rekeyStatic(): void {
    this.zeroAll();
    this.handshake.precompute(this.ctx.identity);
  }

  /** @internal */
  consumeCookie(reply: Uint8Array, now: number): boolean {
    return this.cookies.consumeReply(reply, now);
  }

  // ---- private ----

  private allocateIndex(): number {
    const hs = this.handshake;
    const { indices } = this.ctx;
    if (hs.localIndex >= 0 && indices.get(hs.localIndex) === this.pending) indices.free(hs.localIndex);
    return indices.allocate(this.pending);
  }

  /**
   * A new initiation, unless one was sent less than Rekey-Timeout ago
   * (`force`: first contact decided otherwise, see initiateForData).
   * `forData`: sent because data waits for a session (retries keep the
   * reason of the attempt they repeat).
   */
  private createInitiationMessage(now: number, isRetry: boolean, forData: boolean, force: boolean): Uint8Array | undefined {
    if (this.removed) return undefined;
    if (!isRetry) this.handshakeAttempts = 0;
    if (!force && now - this.lastSentHandshakeAt < this.ctx.constants.rekeyTimeout) return undefined;
    const { ctx } = this;
    const index = this.allocateIndex();
    const msg = new Uint8Array(INITIATION_SIZE);
    if (!createInitiation(ctx.identity, this.handshake, index, ctx.wallClock(), msg)) {
      ctx.indices.free(index);
      this.handshake.clear(ctx.crypto);
      return undefined;
    }
    this.cookies.addMacs(msg, now);
    this.lastSentHandshakeAt = now;
    if (!isRetry) this.lastHandshakeForData = forData;
    this.stats.handshakesStarted++;
    this.onAnyAuthenticatedTraversal(now);
    this.onAnyAuthenticatedSent();
    this.retransmitAt = now + ctx.constants.rekeyTimeout + this.jitter();
    return msg;
  }

  private queueInitiation(now: number, isRetry: boolean): void {
    const msg = this.createInitiationMessage(now, isRetry, false, false);
    if (msg !== undefined) this.outbound.push(msg);
  }

  /**
   * First contact: data waits for a session. WireGuard's rule alone (no new
   * initiation within Rekey-Timeout of the last handshake message) would
   * hold it behind an initiation nobody may ever answer: our start-up one,
   * sent while the peer was down, or a response of ours that was lost. So:
   * - the latest handshake message was not for data (start-up, reload, a
   *   keepalive's initiation, our response to the peer): initiate once it
   *   is firstContactDelay (100 ms) old, at once if it already is;
   * - it was for data and is still unanswered: initiate again after
   *   dataRetryInterval (1 s, doubling up to Rekey-Timeout), longer than
   *   any real round trip, so an answer on its way is not superseded.
   * Not yet due: the firstContactAt timer fires it (tick), so a single
   * packet does not wait for the next one. Bounded: at most one initiation
   * per 100 ms, and only one fast one per handshake message not for data;
   * behind our own data-triggered ones the spacing grows back to
   * Rekey-Timeout (1 s, 2 s, 4 s, 5 s...).
   */
  private initiateForData(now: number): void {
    const c = this.ctx.constants;
    const since = now - this.lastSentHandshakeAt;
    const wait = this.lastHandshakeForData ? this.dataRetryInterval : c.firstContactDelay;
    if (since < wait && since < c.rekeyTimeout) {
      this.firstContactAt = Math.min(this.firstContactAt, this.lastSentHandshakeAt + wait);
      return;
    }
    const behindData = this.lastHandshakeForData;
    const msg = this.createInitiationMessage(now, false, true, true);
    if (msg === undefined) return;
    this.outbound.push(msg);
    this.firstContactAt = NEVER;
    this.dataRetryInterval = behindData ? Math.min(this.dataRetryInterval * 2, c.rekeyTimeout) : c.dataRetryInitial;
  }

  private stage(packet: Uint8Array): void {
    if (this.removed) return;
    const max = this.ctx.maxQueuedPackets;
    if (max <= 0) return;
    while (this.staged.length >= max) this.staged.shift();
    this.staged.push(Uint8Array.from(packet));
  }

  /**
   * Encrypts the queue into outbound if a session can send, otherwise starts
   * a handshake (`forData`: a data packet was just staged, see initiateForData).
   */
  private sendStaged(now: number, forData: boolean): void {
    const s = this.current;
    if (s === undefined || !s.canSend(now)) {
      if (forData) this.initiateForData(now);
      else this.queueInitiation(now, false);
      return;
    }
    const queue = this.staged;
    this.staged = [];
    for (const p of queue) {
      if (!s.canSend(now)) {
        this.staged.push(p);
        continue;
      }
      const buf = new Uint8Array(transportSize(p.length, this.ctx.mtu));
      this.seal(s, p, buf, now);
      this.outbound.push(buf);
    }
  }

  private sendKeepalive(now: number): void {
    if (this.staged.length === 0) this.stage(new Uint8Array(0));
    this.sendStaged(now, false);
  }

  private seal(s: Session<ProtocolPeer<O>>, packet: Uint8Array, out: Uint8Array, now: number, sealed?: ViewCache): number {
    const n = s.encrypt(packet, out, this.ctx.scratch, this.ctx.mtu, sealed);
    this.stats.txBytes += n;
    if (packet.length > 0) this.onDataSent(now);
    this.onAnyAuthenticatedSent();
    this.onAnyAuthenticatedTraversal(now);
    // Keep-key-fresh on send.
    const c = this.ctx.constants;
    if (s.sendCounter >= c.rekeyAfterMessages || (s.isInitiator && now - s.createdAt >= c.rekeyAfterTime)) {
      this.queueInitiation(now, false);
    }
    return n;
  }

  private drop(s: Session<ProtocolPeer<O>> | undefined): void {
    if (s === undefined) return;
    if (this.ctx.indices.get(s.localIndex) === s) this.ctx.indices.free(s.localIndex);
    s.zero();
  }

  private jitter(): number {
    const max = this.ctx.constants.rekeyTimeoutJitterMax;
    return max > 0 ? this.ctx.jitter32() % max : 0;
  }

  // Timer events, named after wireguard's.
  private onDataSent(now: number): void {
    if (this.newHandshakeAt === NEVER) {
      const c = this.ctx.constants;
      this.newHandshakeAt = now + c.keepaliveTimeout + c.rekeyTimeout + this.jitter();
    }
  }

  private onDataReceived(now: number): void {
    if (this.keepaliveAt === NEVER) this.keepaliveAt = now + this.ctx.constants.keepaliveTimeout;
    else this.needAnotherKeepalive = true;
  }

  private onAnyAuthenticatedSent(): void {
    this.keepaliveAt = NEVER;
  }

  private onAnyAuthenticatedReceived(): void {
    this.newHandshakeAt = NEVER;
  }

  private onAnyAuthenticatedTraversal(now: number): void {
    if (this.persistentKeepaliveMs > 0) this.persistentKeepaliveAt = now + this.persistentKeepaliveMs;
  }

  private onHandshakeComplete(): void {
    this.retransmitAt = NEVER;
    this.firstContactAt = NEVER;
    this.dataRetryInterval = this.ctx.constants.dataRetryInitial;
    this.handshakeAttempts = 0;
    this.stats.handshakesCompleted++;
    this.stats.lastHandshakeWallMs = this.ctx.wallClock();
    this.lastHandshakeAtMs = this.ctx.now();
  }

  private onSessionDerived(now: number): void {
    this.zeroKeysAt = now + 3 * this.ctx.constants.rejectAfterTime;
    this.sentLastMinuteHandshake = false;
  }
}
