/**
 * Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it (paper section
 * 5.4.2 and 5.4.3): creating and consuming the initiation and the response,
 * and deriving the transport keys. Pure functions over a per-peer Handshake
 * record; the peer and device decide when to call them and own the index
 * table and the macs (cookie.ts).
 *
 *   initiator                                         responder
 *   C = HASH(CONSTRUCTION), H = HASH(HASH(C || IDENTIFIER) || S_r.pub)
 *   e_i; C = KDF1(C, E_i.pub); H = HASH(H || E_i.pub)
 *   (C, k) = KDF2(C, DH(e_i, S_r.pub)); static = AEAD(k, 0, S_i.pub, H); H = HASH(H || static)
 *   (C, k) = KDF2(C, DH(s_i, S_r.pub)); timestamp = AEAD(k, 0, TAI64N, H); H = HASH(H || timestamp)
 *                       ───── initiation ─────▶
 *   e_r; C = KDF1(C, E_r.pub); H = HASH(H || E_r.pub)
 *   C = KDF1(C, DH(e_r, E_i.pub)); C = KDF1(C, DH(e_r, S_i.pub))
 *   (C, τ, k) = KDF3(C, PSK); H = HASH(H || τ); empty = AEAD(k, 0, ε, H); H = HASH(H || empty)
 *                       ◀───── response ─────
 *   (T_send_i = T_recv_r, T_recv_i = T_send_r) = KDF2(C, ε)
 */
import type { CryptoBackend } from '../crypto/types.js';
import { blake2s, kdf1, kdf2, kdf3 } from '../crypto/hash.js';
import { KEY_LEN, NOISE_CONSTRUCTION, TIMESTAMP_LEN, WG_IDENTIFIER } from './constants.js';
import {
  INITIATION_SIZE,
  INIT_EPHEMERAL,
  INIT_MAC1,
  INIT_SENDER,
  INIT_STATIC,
  INIT_TIMESTAMP,
  MESSAGE_INITIATION,
  MESSAGE_RESPONSE,
  RESPONSE_SIZE,
  RESP_EMPTY,
  RESP_EPHEMERAL,
  RESP_MAC1,
  RESP_RECEIVER,
  RESP_SENDER,
  readU32LE,
  writeType,
  writeU32LE,
} from './messages.js';
import { tai64n, tai64nAfter } from './tai64n.js';

const encoder = new TextEncoder();
export const INITIAL_CHAIN_KEY: Uint8Array = blake2s(encoder.encode(NOISE_CONSTRUCTION));
export const INITIAL_HASH: Uint8Array = blake2s(INITIAL_CHAIN_KEY, encoder.encode(WG_IDENTIFIER));
const ZERO_NONCE = new Uint8Array(12);
const EMPTY = new Uint8Array(0);

export type HandshakeState = 'zeroed' | 'initiation-created' | 'initiation-consumed' | 'response-created' | 'response-consumed';

/** Why a handshake message was refused. */
export type HandshakeFailure = 'bad-auth' | 'unknown-peer' | 'invalid-key' | 'stale-timestamp' | 'handshake-flood' | 'unexpected-message';

/** Our static identity and the primitives, shared by all handshakes of a device. */
export interface NoiseIdentity {
  readonly crypto: CryptoBackend;
  staticPrivate: Uint8Array;
  staticPublic: Uint8Array;
  /** HASH(INITIAL_HASH || our public key): the responder's starting hash. */
  responderInitialHash: Uint8Array;
  random(out: Uint8Array): void;
}

export function makeIdentity(crypto: CryptoBackend, privateKey: Uint8Array, random: (out: Uint8Array) => void): NoiseIdentity {
  const staticPrivate = Uint8Array.from(privateKey);
  const staticPublic = crypto.publicKey(staticPrivate);
  return { crypto, staticPrivate, staticPublic, responderInitialHash: blake2s(INITIAL_HASH, staticPublic), random };
}

/** Per-peer handshake state (wireguard-go's Handshake, the paper's initiator/responder state). */
export class Handshake {
  state: HandshakeState = 'zeroed';
  hash = new Uint8Array(KEY_LEN);
  chainKey = new Uint8Array(KEY_LEN);
  readonly localEphemeralPrivate = new Uint8Array(KEY_LEN);
  readonly remoteEphemeral = new Uint8Array(KEY_LEN);
  /** Our receiver index for this handshake, -1 when none is allocated. */
  localIndex = -1;
  remoteIndex = 0;
  readonly remoteStatic: Uint8Array;
  readonly presharedKey = new Uint8Array(KEY_LEN);
  /** DH(our static, their static), computed at the first handshake that needs it (see precompute). */
  private readonly staticStatic = new Uint8Array(KEY_LEN);
  private staticStaticOk = false;
  /** The identity to compute it from; undefined once computed for it, or after wipe(). */
  private staticStaticFrom: NoiseIdentity | undefined;
  /** Greatest TAI64N timestamp accepted from this peer; survives clear(). */
  readonly lastTimestamp = new Uint8Array(TIMESTAMP_LEN);
  lastInitiationConsumedAt = -Infinity;
  /**
   * Our own initiation, set aside while we answer the peer's (both sides
   * initiated at once). Answering overwrites the chain key, hash, ephemeral
   * and state, and without this our initiation's response would then be
   * refused on both sides: each would hold only an unconfirmed responder
   * session until Rekey-Timeout. Filled by consumeInitiation, emptied by
   * restoreInitiation within the same datagram's processing.
   */
  private readonly asideChainKey = new Uint8Array(KEY_LEN);
  private readonly asideHash = new Uint8Array(KEY_LEN);
  private readonly asideEphemeral = new Uint8Array(KEY_LEN);
  private asideIndex = -1;

  constructor(remoteStatic: Uint8Array) {
    this.remoteStatic = Uint8Array.from(remoteStatic);
  }

  /**
   * Schedules DH(our static, their static) for `id`'s current key. Lazy: an
   * X25519 costs about 36 us, so computing it for every peer a 20,000-peer
   * set adds (or every peer, on a private key change) took most of a second
   * on the packet thread; now the first initiation made or consumed pays.
   */
  precompute(id: NoiseIdentity): void {
    this.staticStaticFrom = id;
    this.staticStaticOk = false;
  }

  /** False when DH(our static, their static) is all zero (no handshake is possible) or the peer was wiped. */
  get staticStaticValid(): boolean {
    this.computeStaticStatic();
    return this.staticStaticOk;
  }

  get precomputedStaticStatic(): Uint8Array {
    this.computeStaticStatic();
    return this.staticStatic;
  }

  /** Zeroes the static-static DH, the preshared key and any initiation set aside (the peer is being removed): no handshake after this. */
  wipe(crypto: CryptoBackend): void {
    crypto.memzero(this.staticStatic);
    crypto.memzero(this.presharedKey);
    this.dropAside(crypto);
    this.staticStaticOk = false;
    this.staticStaticFrom = undefined;
  }

  private computeStaticStatic(): void {
    const id = this.staticStaticFrom;
    if (id === undefined) return;
    this.staticStaticFrom = undefined;
    this.staticStaticOk = id.crypto.x25519(this.staticStatic, id.staticPrivate, this.remoteStatic);
  }

  /** Whether an initiation of ours is set aside (see restoreInitiation). */
  get hasInitiationAside(): boolean {
    return this.asideIndex >= 0;
  }

  /** Index of the initiation set aside, -1 if none. */
  get initiationAsideIndex(): number {
    return this.asideIndex;
  }

  /** @internal Keeps our pending initiation before the peer's initiation overwrites the state. */
  setAsideInitiation(): void {
    if (this.state !== 'initiation-created' || this.localIndex < 0) {
      // Nothing of ours pending; never restore an older one later.
      if (this.asideIndex >= 0) {
        this.asideChainKey.fill(0);
        this.asideHash.fill(0);
        this.asideEphemeral.fill(0);
        this.asideIndex = -1;
      }
      return;
    }
    this.asideChainKey.set(this.chainKey);
    this.asideHash.set(this.hash);
    this.asideEphemeral.set(this.localEphemeralPrivate);
    this.asideIndex = this.localIndex;
  }

  /**
   * Puts the initiation set aside back (state 'initiation-created'), once
   * the response to the peer's initiation is made and the state wiped, so a
   * response to ours is still accepted. Returns whether there was one.
   */
  restoreInitiation(crypto: CryptoBackend): boolean {
    if (this.asideIndex < 0) return false;
    this.chainKey.set(this.asideChainKey);
    this.hash.set(this.asideHash);
    this.localEphemeralPrivate.set(this.asideEphemeral);
    crypto.memzero(this.remoteEphemeral);
    this.localIndex = this.asideIndex;
    this.remoteIndex = 0;
    this.state = 'initiation-created';
    this.dropAside(crypto);
    return true;
  }

  /** Wipes an initiation set aside without restoring it. */
  dropAside(crypto: CryptoBackend): void {
    crypto.memzero(this.asideChainKey);
    crypto.memzero(this.asideHash);
    crypto.memzero(this.asideEphemeral);
    this.asideIndex = -1;
  }

  /** Forgets the in-progress handshake (not the timestamp, which guards against replays). */
  clear(crypto: CryptoBackend): void {
    crypto.memzero(this.hash);
    crypto.memzero(this.chainKey);
    crypto.memzero(this.localEphemeralPrivate);
    crypto.memzero(this.remoteEphemeral);
    this.state = 'zeroed';
    this.localIndex = -1;
    this.remoteIndex = 0;
  }
}

function newEphemeral(id: NoiseIdentity, priv: Uint8Array): Uint8Array {
  id.random(priv);
  priv[0] &= 248;
  priv[31] = (priv[31] & 127) | 64;
  return id.crypto.publicKey(priv);
}

function replace(dst: Uint8Array, src: Uint8Array): void {
  dst.set(src);
  src.fill(0);
}

/**
 * Writes an initiation into out[0..148) except its macs. Returns false when
 * the peer's static key gives an all-zero DH (the message cannot be made).
 */
export function createInitiation(id: NoiseIdentity, hs: Handshake, localIndex: number, wallClockMs: number, out: Uint8Array): boolean {
  if (!hs.staticStaticValid || out.length < INITIATION_SIZE) return false;
  const { crypto } = id;
  let ck: Uint8Array = Uint8Array.from(INITIAL_CHAIN_KEY);
  let h = blake2s(INITIAL_HASH, hs.remoteStatic);
  const epub = newEphemeral(id, hs.localEphemeralPrivate);

  writeType(out, MESSAGE_INITIATION);
  writeU32LE(out, INIT_SENDER, localIndex);
  out.set(epub, INIT_EPHEMERAL);
  [ck] = kdf1(ck, epub);
  h = blake2s(h, epub);

  const dh = new Uint8Array(KEY_LEN);
  if (!crypto.x25519(dh, hs.localEphemeralPrivate, hs.remoteStatic)) return false;
  let k: Uint8Array;
  [ck, k] = kdf2(ck, dh);
  const encStatic = out.subarray(INIT_STATIC, INIT_TIMESTAMP);
  crypto.aeadSeal(encStatic, id.staticPublic, h, ZERO_NONCE, k);
  h = blake2s(h, encStatic);

  k.fill(0);
  [ck, k] = kdf2(ck, hs.precomputedStaticStatic);
  const encTimestamp = out.subarray(INIT_TIMESTAMP, INIT_MAC1);
  crypto.aeadSeal(encTimestamp, tai64n(wallClockMs), h, ZERO_NONCE, k);
  h = blake2s(h, encTimestamp);
  k.fill(0);
  dh.fill(0);

  replace(hs.chainKey, ck);
  hs.hash.set(h);
  hs.localIndex = localIndex;
  hs.state = 'initiation-created';
  return true;
}

export interface ConsumedInitiation<P> {
  peer: P;
  handshake: Handshake;
}

/**
 * Consumes an initiation (already size- and mac1-checked). `lookup` finds the
 * peer and its handshake by the decrypted static key. On success the peer's
 * handshake is in state 'initiation-consumed' (an initiation of ours that
 * was pending is set aside: restore it with restoreInitiation once the
 * response is made); on failure nothing changed.
 */
export function consumeInitiation<P>(
  id: NoiseIdentity,
  msg: Uint8Array,
  lookup: (staticKey: Uint8Array) => ConsumedInitiation<P> | undefined,
  now: number,
  initiationRate: number,
): ConsumedInitiation<P> | HandshakeFailure {
  const { crypto } = id;
  const epub = msg.subarray(INIT_EPHEMERAL, INIT_STATIC);
  let [ck] = kdf1(INITIAL_CHAIN_KEY, epub);
  let h = blake2s(id.responderInitialHash, epub);

  const dh = new Uint8Array(KEY_LEN);
  if (!crypto.x25519(dh, id.staticPrivate, epub)) return 'invalid-key';
  let k: Uint8Array;
  [ck, k] = kdf2(ck, dh);
  dh.fill(0);
  const encStatic = msg.subarray(INIT_STATIC, INIT_TIMESTAMP);
  const peerStatic = new Uint8Array(KEY_LEN);
  if (crypto.aeadOpen(peerStatic, encStatic, h, ZERO_NONCE, k) !== KEY_LEN) return 'bad-auth';
  h = blake2s(h, encStatic);

  const found = lookup(peerStatic);
  if (found === undefined) return 'unknown-peer';
  const hs = found.handshake;
  if (!hs.staticStaticValid) return 'invalid-key';

  k.fill(0);
  [ck, k] = kdf2(ck, hs.precomputedStaticStatic);
  const encTimestamp = msg.subarray(INIT_TIMESTAMP, INIT_MAC1);
  const timestamp = new Uint8Array(TIMESTAMP_LEN);
  if (crypto.aeadOpen(timestamp, encTimestamp, h, ZERO_NONCE, k) !== TIMESTAMP_LEN) return 'bad-auth';
  k.fill(0);
  h = blake2s(h, encTimestamp);

  if (!tai64nAfter(timestamp, hs.lastTimestamp)) return 'stale-timestamp';
  if (now - hs.lastInitiationConsumedAt < initiationRate) return 'handshake-flood';

  hs.lastTimestamp.set(timestamp);
  hs.lastInitiationConsumedAt = now;
  // Both sides may have initiated at once: keep ours for its response.
  hs.setAsideInitiation();
  replace(hs.chainKey, ck);
  hs.hash.set(h);
  hs.remoteEphemeral.set(epub);
  hs.remoteIndex = readU32LE(msg, INIT_SENDER);
  hs.state = 'initiation-consumed';
  return found;
}

/** Writes a response into out[0..92) except its macs; the handshake must be 'initiation-consumed'. */
export function createResponse(id: NoiseIdentity, hs: Handshake, localIndex: number, out: Uint8Array): boolean {
  if (hs.state !== 'initiation-consumed' || out.length < RESPONSE_SIZE) return false;
  const { crypto } = id;
  const epub = newEphemeral(id, hs.localEphemeralPrivate);
  writeType(out, MESSAGE_RESPONSE);
  writeU32LE(out, RESP_SENDER, localIndex);
  writeU32LE(out, RESP_RECEIVER, hs.remoteIndex);
  out.set(epub, RESP_EPHEMERAL);

  let [ck] = kdf1(hs.chainKey, epub);
  let h = blake2s(hs.hash, epub);
  const dh = new Uint8Array(KEY_LEN);
  if (!crypto.x25519(dh, hs.localEphemeralPrivate, hs.remoteEphemeral)) return false;
  [ck] = kdf1(ck, dh);
  if (!crypto.x25519(dh, hs.localEphemeralPrivate, hs.remoteStatic)) return false;
  [ck] = kdf1(ck, dh);
  dh.fill(0);
  const [ck2, tau, k] = kdf3(ck, hs.presharedKey);
  ck.fill(0);
  h = blake2s(h, tau);
  tau.fill(0);
  const encNothing = out.subarray(RESP_EMPTY, RESP_MAC1);
  crypto.aeadSeal(encNothing, EMPTY, h, ZERO_NONCE, k);
  k.fill(0);
  h = blake2s(h, encNothing);

  replace(hs.chainKey, ck2);
  hs.hash.set(h);
  hs.localIndex = localIndex;
  hs.state = 'response-created';
  return true;
}

/**
 * Consumes a response to our initiation (already size-, mac1- and
 * index-checked). On success the handshake is 'response-consumed'; on
 * failure it is unchanged, so a forged response cannot spoil a pending one.
 */
export function consumeResponse(id: NoiseIdentity, hs: Handshake, msg: Uint8Array): true | HandshakeFailure {
  if (hs.state !== 'initiation-created') return 'unexpected-message';
  const { crypto } = id;
  const epub = msg.subarray(RESP_EPHEMERAL, RESP_EMPTY);
  let [ck] = kdf1(hs.chainKey, epub);
  let h = blake2s(hs.hash, epub);
  const dh = new Uint8Array(KEY_LEN);
  if (!crypto.x25519(dh, hs.localEphemeralPrivate, epub)) return 'invalid-key';
  [ck] = kdf1(ck, dh);
  if (!crypto.x25519(dh, id.staticPrivate, epub)) return 'invalid-key';
  [ck] = kdf1(ck, dh);
  dh.fill(0);
  const [ck2, tau, k] = kdf3(ck, hs.presharedKey);
  ck.fill(0);
  h = blake2s(h, tau);
  tau.fill(0);
  const encNothing = msg.subarray(RESP_EMPTY, RESP_MAC1);
  const ok = crypto.aeadOpen(EMPTY, encNothing, h, ZERO_NONCE, k) === 0;
  k.fill(0);
  if (!ok) {
    ck2.fill(0);
    return 'bad-auth';
  }
  h = blake2s(h, encNothing);

  replace(hs.chainKey, ck2);
  hs.hash.set(h);
  hs.remoteEphemeral.set(epub);
  hs.remoteIndex = readU32LE(msg, RESP_SENDER);
  hs.state = 'response-consumed';
  return true;
}

export interface TransportKeys {
  sendKey: Uint8Array;
  receiveKey: Uint8Array;
  isInitiator: boolean;
  localIndex: number;
  remoteIndex: number;
}

/**
 * Derives the transport keys from a completed handshake ('response-consumed'
 * for the initiator, 'response-created' for the responder) and wipes the
 * handshake. Returns undefined in any other state.
 */
export function deriveTransportKeys(crypto: CryptoBackend, hs: Handshake): TransportKeys | undefined {
  let isInitiator: boolean;
  if (hs.state === 'response-consumed') isInitiator = true;
  else if (hs.state === 'response-created') isInitiator = false;
  else return undefined;
  const [t1, t2] = kdf2(hs.chainKey, EMPTY);
  const keys: TransportKeys = {
    sendKey: isInitiator ? t1 : t2,
    receiveKey: isInitiator ? t2 : t1,
    isInitiator,
    localIndex: hs.localIndex,
    remoteIndex: hs.remoteIndex,
  };
  hs.clear(crypto);
  return keys;
}
