/**
 * A session (wireguard-go's keypair): the two transport keys of one completed
 * handshake, its send counter and its receive replay window. Encrypt and
 * decrypt are the transport hot path: nonces are preallocated per session
 * and headers are written byte by byte into the caller's buffer.
 */
import type { CryptoBackend } from '../crypto/types.js';
import { ViewCache } from '../crypto/util.js';
import { MESSAGE_TRANSPORT, TRANSPORT_COUNTER, TRANSPORT_HEADER_SIZE, TRANSPORT_OVERHEAD, TRANSPORT_RECEIVER, writeCounterLE, writeU32LE } from './messages.js';
import type { TransportKeys } from './noise-handshake.js';
import { ReplayWindow } from './replay.js';

/**
 * The padded plaintext length of a `len`-byte packet: zero-padded to a
 * multiple of 16, but never past the MTU (the paper's rule, as the kernel
 * and wireguard-go apply it). Without the cap a 1420-byte packet would
 * leave as 1456 bytes of UDP payload instead of 1452 and no longer fit the
 * underlay that `mtu + 60` (IPv4) or `mtu + 80` (IPv6) was chosen for. A
 * packet already longer than the MTU gets no padding: any would only add to
 * the overshoot. `mtu` 0 means no cap (pure multiple-of-16 padding).
 */
export function paddedLength(len: number, mtu: number): number {
  const rounded = (len + 15) & ~15;
  if (mtu <= 0 || rounded <= mtu) return rounded;
  return Math.max(len, mtu);
}

/** Size of the transport datagram for a plaintext of `len` bytes under `mtu` (0 = no cap). */
export function transportSize(len: number, mtu = 0): number {
  return paddedLength(len, mtu) + TRANSPORT_OVERHEAD;
}

export class Session<P = unknown> {
  readonly sendKey: Uint8Array;
  readonly receiveKey: Uint8Array;
  readonly localIndex: number;
  readonly remoteIndex: number;
  readonly isInitiator: boolean;
  /** Monotonic ms at derivation. */
  readonly createdAt: number;
  readonly peer: P;
  sendCounter = 0;
  readonly replay: ReplayWindow;
  private readonly sendNonce = new Uint8Array(12);
  private readonly receiveNonce = new Uint8Array(12);
  /** The padded plaintext's view of the scratch buffer (one buffer, so a repeated padded length reuses it). */
  private readonly paddedView = new ViewCache();
  private zeroed = false;

  constructor(
    private readonly crypto: CryptoBackend,
    keys: TransportKeys,
    peer: P,
    createdAt: number,
    private readonly rejectAfterMessages: number,
    private readonly rejectAfterTime: number,
  ) {
    this.sendKey = keys.sendKey;
    this.receiveKey = keys.receiveKey;
    this.localIndex = keys.localIndex;
    this.remoteIndex = keys.remoteIndex;
    this.isInitiator = keys.isInitiator;
    this.peer = peer;
    this.createdAt = createdAt;
    this.replay = new ReplayWindow(rejectAfterMessages);
  }

  /** Whether this session may still encrypt (Reject-After-Time and -Messages). */
  canSend(now: number): boolean {
    return !this.zeroed && this.sendCounter < this.rejectAfterMessages && now - this.createdAt < this.rejectAfterTime;
  }

  /** Whether this session may still decrypt. */
  canReceive(now: number): boolean {
    return !this.zeroed && now - this.createdAt < this.rejectAfterTime;
  }

  /**
   * Encrypts `packet` as a transport message into `out` and returns its length.
   * `scratch` (>= padded length) holds the zero-padded plaintext when the
   * packet needs padding. `mtu` caps the padding (see paddedLength). Caller
   * checked canSend(). `sealed`, when given, keeps the view of `out` the
   * AEAD writes into: a caller that reuses its transmit slots passes one
   * per slot, so a bulk flow makes no view per packet.
   */
  encrypt(packet: Uint8Array, out: Uint8Array, scratch: Uint8Array, mtu: number, sealed?: ViewCache): number {
    const len = packet.length;
    const padded = paddedLength(len, mtu);
    const total = padded + TRANSPORT_OVERHEAD;
    if (out.length < total) throw new RangeError(`encapsulate: out holds ${out.length} bytes, needs ${total}`);
    const counter = this.sendCounter++;
    out[0] = MESSAGE_TRANSPORT;
    out[1] = 0;
    out[2] = 0;
    out[3] = 0;
    writeU32LE(out, TRANSPORT_RECEIVER, this.remoteIndex);
    writeCounterLE(out, TRANSPORT_COUNTER, counter);
    const nonce = this.sendNonce;
    for (let i = 0; i < 8; i++) nonce[4 + i] = out[TRANSPORT_COUNTER + i];
    let plaintext = packet;
    if (padded !== len) {
      scratch.set(packet, 0);
      scratch.fill(0, len, padded);
      plaintext = this.paddedView.of(scratch, 0, padded);
    }
    const body = sealed === undefined ? out.subarray(TRANSPORT_HEADER_SIZE, total) : sealed.of(out, TRANSPORT_HEADER_SIZE, total - TRANSPORT_HEADER_SIZE);
    this.crypto.aeadSeal(body, plaintext, null, nonce, this.sendKey);
    return total;
  }

  /**
   * Decrypts a transport message (size-checked, counter already checked
   * against the window) into `out`. Returns the padded plaintext length, or
   * -1 when authentication fails. Does not touch the replay window.
   * `body`, when given, keeps the view of the datagram past its header (one
   * per receive slot, as for encrypt's `sealed`).
   */
  decrypt(datagram: Uint8Array, out: Uint8Array, body?: ViewCache): number {
    const nonce = this.receiveNonce;
    for (let i = 0; i < 8; i++) nonce[4 + i] = datagram[TRANSPORT_COUNTER + i];
    if (out.length < datagram.length - TRANSPORT_OVERHEAD) return -1;
    const sealed =
      body === undefined ? datagram.subarray(TRANSPORT_HEADER_SIZE) : body.of(datagram, TRANSPORT_HEADER_SIZE, datagram.length - TRANSPORT_HEADER_SIZE);
    return this.crypto.aeadOpen(out, sealed, null, nonce, this.receiveKey);
  }

  zero(): void {
    this.crypto.memzero(this.sendKey);
    this.crypto.memzero(this.receiveKey);
    this.sendCounter = this.rejectAfterMessages;
    this.zeroed = true;
  }
}
