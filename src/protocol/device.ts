/**
 * WireGuardDevice: the sans-I/O WireGuard protocol core. The daemon owns
 * sockets, TUN and timers; it calls in with datagrams, packets and ticks and
 * gets back what to send. No clock, randomness or I/O is read here except
 * through ProtocolOptions.
 *
 *   TUN packet ──▶ peer.encapsulate(packet, out) ─┬─ n > 0 ─▶ send out[0..n) to peer.endpoint
 *   (daemon picks the peer by allowed IPs)        └─ 0 ─────▶ packet queued, handshake started:
 *                                                            send peer.takeOutbound()
 *   UDP datagram ─▶ device.decapsulate(d, src, out)
 *        type 4 ─▶ index → session → replay pre-check → AEAD open → replay accept
 *                  ─▶ { data, peer, length }  plaintext in out (padded; 0 = keepalive)
 *        type 1 ─▶ mac1 → [under load: mac2 or cookie reply; rate limit] → Noise consume
 *                  ─▶ { handshake, peer, reply: response }  (session kept as `next`)
 *        type 2 ─▶ mac1 → [under load: mac2 / rate limit] → index → Noise consume
 *                  ─▶ { handshake, peer, flush: queued data or a keepalive }
 *        type 3 ─▶ index → decrypt cookie ─▶ { cookie, peer } (mac2 on the next retry)
 *        other  ─▶ { error, code }
 *      After any result with a peer, peer.hasOutbound says whether
 *      peer.takeOutbound() has something (a rekey initiation, the queue
 *      flushed when `next` became `current`); tick() drains it anyway.
 *   every 100-250 ms ─▶ device.tick() ─▶ [{ peer, data }]: handshake retries,
 *                     keepalives, rekeys; sessions wiped after 3 × Reject-After-Time.
 *
 * Hot path: a transport message costs no allocation here beyond the views the
 * AEAD call needs; the 'data' result object is reused per peer, so it is only
 * valid until the next decapsulate call.
 */
import type { CryptoBackend } from '../crypto/types.js';
import type { ViewCache } from '../crypto/util.js';
import { TunvpnError } from '../errors.js';
import { STAGED_PACKETS_MAX } from '../constants.js';
import { IndexTable } from './index-table.js';
import { KEY_LEN, resolveConstants } from './constants.js';
import type { ProtocolConstants } from './constants.js';
import { CookieChecker, RateLimiter } from './cookie.js';
import type { SourceAddress } from './cookie.js';
import {
  INIT_SENDER,
  MESSAGE_COOKIE_REPLY,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  MESSAGE_TRANSPORT,
  RESP_RECEIVER,
  RESP_SENDER,
  TRANSPORT_COUNTER,
  TRANSPORT_MIN_SIZE,
  TRANSPORT_OVERHEAD,
  TRANSPORT_RECEIVER,
  readCounterLE,
  readU32LE,
  messageType,
  COOKIE_RECEIVER,
} from './messages.js';
import { consumeInitiation, consumeResponse, makeIdentity } from './noise-handshake.js';
import type { HandshakeFailure, NoiseIdentity } from './noise-handshake.js';
import { PendingHandshake, ProtocolPeer } from './peer.js';
import type { DataResult, DeviceContext, IndexEntry, ProtocolPeerOptions } from './peer.js';
import { Session } from './session.js';

export type { SourceAddress } from './cookie.js';
export type { ProtocolPeerOptions, PeerStats, DataResult } from './peer.js';
export type { ProtocolConstants } from './constants.js';
export { ProtocolPeer } from './peer.js';

export interface ProtocolOptions {
  crypto: CryptoBackend;
  privateKey: Uint8Array;
  /** Monotonic milliseconds. */
  now(): number;
  /** Milliseconds since the epoch (TAI64N timestamps, last-handshake stats). */
  wallClock(): number;
  /** Fills `out` with random bytes; defaults to crypto.randomBytes. Inject for deterministic tests. */
  random?: (out: Uint8Array) => void;
  constants?: Partial<ProtocolConstants>;
  /** Packets queued per peer while waiting for a session; the oldest is dropped. Default STAGED_PACKETS_MAX (128). */
  maxQueuedPackets?: number;
  /** Tunnel MTU: padding never goes past it (see setMtu). Default 0 = no cap. */
  mtu?: number;
}

/**
 * Why the protocol dropped a datagram: stable strings the daemon counts by
 * (src/pipeline/counters.ts adds the pipeline's own reasons to this list).
 */
export const PROTOCOL_DROP_REASONS = [
  'malformed', // size or type wrong
  'unknown-index', // receiver index names no session or handshake of ours
  'unknown-peer', // initiation from a static key we do not know
  'replay', // counter already seen or behind the window
  'bad-auth', // AEAD authentication failed
  'bad-mac', // mac1 wrong
  'bad-cookie', // cookie reply that does not decrypt for our last message
  'stale-timestamp', // initiation not newer than the last accepted from that peer
  'handshake-flood', // initiations from one peer faster than the initiation rate
  'rate-limited', // per-source initiation rate limit under load
  'expired', // session past Reject-After-Time or counter past Reject-After-Messages
  'invalid-key', // all-zero Diffie-Hellman result
  'unexpected-message', // response with no initiation pending
] as const;

export type DropReason = (typeof PROTOCOL_DROP_REASONS)[number];

export interface HandshakeResult<O = void> {
  kind: 'handshake';
  /** The authenticated peer; undefined for a cookie reply sent to an unauthenticated source. */
  peer: ProtocolPeer<O> | undefined;
  /** Send back to the datagram's source: a handshake response or a cookie reply. */
  reply?: Uint8Array;
  /** Transport datagrams for `peer` that became sendable (queued data, or a keepalive). */
  flush: Uint8Array[];
}

export interface CookieResult<O = void> {
  kind: 'cookie';
  peer: ProtocolPeer<O>;
}

export interface ErrorResult<O = void> {
  kind: 'error';
  code: DropReason;
  peer?: ProtocolPeer<O>;
}

export type DecapResult<O = void> = DataResult<O> | HandshakeResult<O> | CookieResult<O> | ErrorResult<O>;

export interface OutboundDatagram<O = void> {
  peer: ProtocolPeer<O>;
  data: Uint8Array;
}

/** Thrown by device configuration calls (never by the packet path). */
export class ProtocolError extends TunvpnError {}

/**
 * A drop that names no peer is the same frozen object every time (garbage
 * costs no allocation); one that names a peer is made per drop.
 */
const DROPS: ReadonlyMap<DropReason, ErrorResult<never>> = new Map(PROTOCOL_DROP_REASONS.map((code) => [code, Object.freeze({ kind: 'error', code })]));

function drop<O>(code: DropReason, peer?: ProtocolPeer<O>): ErrorResult<O> {
  if (peer !== undefined) return { kind: 'error', code, peer };
  return DROPS.get(code) ?? { kind: 'error', code };
}

function b64(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}

/**
 * `O`: the owner type of its peers (see ProtocolPeer); a device whose
 * peers need no owner (tests, benches) leaves it void and omits it.
 */
export class WireGuardDevice<O = void> {
  private readonly ctx: DeviceContext<O> & { identity: NoiseIdentity };
  private readonly peers = new Map<string, ProtocolPeer<O>>();
  private readonly cookieChecker: CookieChecker;
  private readonly limiter: RateLimiter;
  private readonly random: (out: Uint8Array) => void;
  private readonly rand4 = new Uint8Array(4);
  private underLoad = false;
  /** holdClock(): the protocol's clock reads `heldAt` until releaseClock(). */
  private clockHeld = false;
  private heldAt = 0;
  private readonly clock: () => number;
  private readonly lookupPeer = (staticKey: Uint8Array): { peer: ProtocolPeer<O>; handshake: ProtocolPeer<O>['handshake'] } | undefined => {
    const p = this.peers.get(b64(staticKey));
    return p === undefined ? undefined : { peer: p, handshake: p.handshake };
  };

  constructor(opts: ProtocolOptions) {
    if (opts.privateKey.length !== KEY_LEN) throw new ProtocolError('PROTOCOL_BAD_KEY', 'private key must be 32 bytes');
    const crypto = opts.crypto;
    this.random = opts.random ?? ((out: Uint8Array) => crypto.randomBytes(out));
    const constants = resolveConstants(opts.constants);
    const clock = opts.now;
    this.clock = clock;
    const random32 = (): number => {
      this.random(this.rand4);
      return readU32LE(this.rand4, 0);
    };
    // Timer jitter needs no secrecy; a getrandom() per idle packet showed up
    // in the idle round trip. xorshift32, seeded once (never 0).
    let jitterState = random32() | 1;
    const jitter32 = (): number => {
      jitterState ^= jitterState << 13;
      jitterState ^= jitterState >>> 17;
      jitterState ^= jitterState << 5;
      return jitterState >>> 0;
    };
    this.ctx = {
      crypto,
      constants,
      identity: makeIdentity(crypto, opts.privateKey, this.random),
      indices: new IndexTable<IndexEntry<O>>(random32),
      maxQueuedPackets: opts.maxQueuedPackets ?? STAGED_PACKETS_MAX,
      scratch: new Uint8Array(65536 + 16),
      mtu: checkMtu(opts.mtu ?? 0),
      now: () => (this.clockHeld ? this.heldAt : clock()),
      wallClock: opts.wallClock,
      random32,
      jitter32,
    };
    this.cookieChecker = new CookieChecker(crypto, this.random, constants.cookieRefreshTime, this.ctx.identity.staticPublic);
    this.limiter = new RateLimiter(constants.initiationsPerSecondPerSource, constants.initiationBurstPerSource);
  }

  get publicKey(): Uint8Array {
    return this.ctx.identity.staticPublic;
  }

  get constants(): Readonly<ProtocolConstants> {
    return this.ctx.constants;
  }

  /**
   * The tunnel MTU the padding is capped by, from the next packet on (a
   * reload may change it while sessions run). 0 = no cap.
   */
  setMtu(mtu: number): void {
    this.ctx.mtu = checkMtu(mtu);
  }

  get mtu(): number {
    return this.ctx.mtu;
  }

  /** Number of receiver indices in use (handshakes and sessions), for tests and status. */
  get indicesInUse(): number {
    return this.ctx.indices.size;
  }

  /**
   * Replaces our static key. Every session and handshake was keyed by the old
   * one, so all are dropped (peers re-handshake on their next packet); a peer
   * whose public key equals our new one is removed, as wireguard does.
   */
  setPrivateKey(key: Uint8Array): void {
    if (key.length !== KEY_LEN) throw new ProtocolError('PROTOCOL_BAD_KEY', 'private key must be 32 bytes');
    const id = this.ctx.identity;
    let same = true;
    for (let i = 0; i < KEY_LEN; i++) if (id.staticPrivate[i] !== key[i]) same = false;
    if (same) return;
    const next = makeIdentity(this.ctx.crypto, key, this.random);
    this.ctx.crypto.memzero(id.staticPrivate);
    id.staticPrivate = next.staticPrivate;
    id.staticPublic = next.staticPublic;
    id.responderInitialHash = next.responderInitialHash;
    this.cookieChecker.setPublicKey(id.staticPublic);
    const self = this.peers.get(b64(id.staticPublic));
    if (self !== undefined) this.removePeer(self.publicKey);
    for (const p of this.peers.values()) p.rekeyStatic();
  }

  /** A new peer, owned by `owner` (reachable as peer.owner from every result that names it). */
  addPeer(opts: ProtocolPeerOptions, owner: O): ProtocolPeer<O> {
    if (opts.publicKey.length !== KEY_LEN) throw new ProtocolError('PROTOCOL_BAD_KEY', 'peer public key must be 32 bytes');
    const key = b64(opts.publicKey);
    if (this.peers.has(key)) throw new ProtocolError('PROTOCOL_DUPLICATE_PEER', `peer ${key} already exists`);
    if (key === b64(this.publicKey)) throw new ProtocolError('PROTOCOL_SELF_PEER', 'a peer cannot have our own public key');
    const peer = new ProtocolPeer<O>(this.ctx, opts, owner);
    this.peers.set(key, peer);
    return peer;
  }

  removePeer(publicKey: Uint8Array): void {
    const key = b64(publicKey);
    const peer = this.peers.get(key);
    if (peer === undefined) return;
    peer.remove();
    this.peers.delete(key);
  }

  getPeer(publicKeyB64: string): ProtocolPeer<O> | undefined {
    return this.peers.get(publicKeyB64);
  }

  listPeers(): ProtocolPeer<O>[] {
    return [...this.peers.values()];
  }

  /** Under load, handshake messages without a valid mac2 get a cookie reply instead of DH. */
  setUnderLoad(flag: boolean): void {
    this.underLoad = flag;
  }

  get isUnderLoad(): boolean {
    return this.underLoad;
  }

  /**
   * Processes one received datagram. `out` receives the plaintext of a
   * transport message and must hold datagram.length bytes. Never throws for
   * any input; every outcome is a DecapResult. `body`: an optional view
   * memo for the datagram's ciphertext (Session.decrypt).
   */
  decapsulate(datagram: Uint8Array, source: SourceAddress, out: Uint8Array, body?: ViewCache): DecapResult<O> {
    const t = messageType(datagram);
    if (t === MESSAGE_TRANSPORT) return this.decapsulateTransport(datagram, out, body);
    try {
      switch (t) {
        case MESSAGE_INITIATION:
          return this.handleInitiation(datagram, source);
        case MESSAGE_RESPONSE:
          return this.handleResponse(datagram, source);
        case MESSAGE_COOKIE_REPLY:
          return this.handleCookieReply(datagram);
        default:
          return drop<O>('malformed');
      }
    } catch {
      // The handshake path only throws on a bug; hostile input must never
      // take the daemon down, so it counts as malformed.
      return drop<O>('malformed');
    }
  }

  /**
   * Reads the clock once for a batch of packets: until releaseClock(),
   * every timer check and stamp of the protocol sees this instant. A clock
   * read per packet was 1.5-2.4% of each daemon's busy time under TCP load
   * (docs/performance.md, "Per-packet JavaScript costs"); a batch spans well
   * under the millisecond the protocol's timers are measured in.
   */
  holdClock(): void {
    this.heldAt = this.clock();
    this.clockHeld = true;
  }

  releaseClock(): void {
    this.clockHeld = false;
  }

  /** Runs every peer's timers; returns the datagrams to send. */
  tick(): OutboundDatagram<O>[] {
    const now = this.ctx.now();
    const result: OutboundDatagram<O>[] = [];
    for (const peer of this.peers.values()) {
      peer.tick(now);
      if (peer.hasOutbound) for (const data of peer.takeOutbound()) result.push({ peer, data });
    }
    this.limiter.collect(now);
    return result;
  }

  private decapsulateTransport(d: Uint8Array, out: Uint8Array, body: ViewCache | undefined): DecapResult<O> {
    const entry = this.ctx.indices.get(readU32LE(d, TRANSPORT_RECEIVER));
    if (!(entry instanceof Session)) return drop<O>('unknown-index');
    const s = entry;
    const peer = s.peer;
    const now = this.ctx.now();
    if (!s.canReceive(now)) return drop('expired', peer);
    const counter = readCounterLE(d, TRANSPORT_COUNTER);
    if (!s.replay.check(counter)) return drop(counter >= this.ctx.constants.rejectAfterMessages ? 'expired' : 'replay', peer);
    if (out.length < d.length - TRANSPORT_OVERHEAD || d.length < TRANSPORT_MIN_SIZE) return drop('malformed', peer);
    const n = s.decrypt(d, out, body);
    if (n < 0) return drop('bad-auth', peer);
    if (!s.replay.accept(counter)) return drop('replay', peer);
    peer.receivedData(s, n, d.length, now);
    const r = peer.dataResult;
    r.length = n;
    return r;
  }

  /** Under load: the mac2 / cookie / rate-limit gate. Returns a result to stop with, or undefined to go on. */
  private loadGate(d: Uint8Array, source: SourceAddress, senderIndex: number, now: number): DecapResult<O> | undefined {
    if (!this.underLoad) return undefined;
    if (!this.cookieChecker.checkMac2(d, source, now)) {
      return { kind: 'handshake', peer: undefined, reply: this.cookieChecker.createReply(d, senderIndex, source, now), flush: [] };
    }
    if (!this.limiter.allow(source.address, now)) return drop<O>('rate-limited');
    return undefined;
  }

  private handleInitiation(d: Uint8Array, source: SourceAddress): DecapResult<O> {
    if (!this.cookieChecker.checkMac1(d)) return drop<O>('bad-mac');
    const now = this.ctx.now();
    const gate = this.loadGate(d, source, readU32LE(d, INIT_SENDER), now);
    if (gate !== undefined) return gate;
    const r = consumeInitiation(this.ctx.identity, d, this.lookupPeer, now, this.ctx.constants.handshakeInitiationRate);
    if (typeof r === 'string') return failure(r, undefined);
    const peer = r.peer;
    peer.onInitiationConsumed(now);
    const reply = peer.respond(now);
    if (reply === undefined) return drop('invalid-key', peer);
    return { kind: 'handshake', peer, reply, flush: [] };
  }

  private handleResponse(d: Uint8Array, source: SourceAddress): DecapResult<O> {
    if (!this.cookieChecker.checkMac1(d)) return drop<O>('bad-mac');
    const now = this.ctx.now();
    const gate = this.loadGate(d, source, readU32LE(d, RESP_SENDER), now);
    if (gate !== undefined) return gate;
    const receiver = readU32LE(d, RESP_RECEIVER);
    const entry = this.ctx.indices.get(receiver);
    if (!(entry instanceof PendingHandshake)) return drop<O>('unknown-index');
    const peer = entry.peer;
    // Only the initiation in flight may be answered (not an index of ours
    // that names a response we made and whose session is not installed yet).
    if (peer.handshake.localIndex !== receiver) return drop('unknown-index', peer);
    const r = consumeResponse(this.ctx.identity, peer.handshake, d);
    if (r !== true) return failure(r, peer);
    if (!peer.completeAsInitiator(now)) return drop('unexpected-message', peer);
    return { kind: 'handshake', peer, flush: peer.takeOutbound() };
  }

  private handleCookieReply(d: Uint8Array): DecapResult<O> {
    const entry = this.ctx.indices.get(readU32LE(d, COOKIE_RECEIVER));
    if (entry === undefined) return drop<O>('unknown-index');
    const peer = entry.peer;
    if (!peer.consumeCookie(d, this.ctx.now())) return drop('bad-cookie', peer);
    return { kind: 'cookie', peer };
  }
}

function checkMtu(mtu: number): number {
  if (!Number.isInteger(mtu) || mtu < 0 || mtu > 65535) throw new ProtocolError('PROTOCOL_BAD_MTU', `MTU must be an integer from 0 to 65535, got ${mtu}`);
  return mtu;
}

function failure<O>(f: HandshakeFailure, peer: ProtocolPeer<O> | undefined): ErrorResult<O> {
  return drop(f, peer);
}
