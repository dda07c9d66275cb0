/**
 * mac1, mac2 and cookie replies: WireGuard's defence against handshake
 * floods (paper section 5.4.4 and 5.4.7).
 *
 * Every handshake message ends with mac1 = MAC(HASH("mac1----" || Spub of
 * the receiver), msg up to mac1), which proves the sender knows the
 * receiver's public key, and mac2 = MAC(cookie, msg up to mac2), or zeros.
 * A responder under load answers a message without a valid mac2 with a cookie
 * reply instead of doing Diffie-Hellman; the cookie is MAC(secret, source
 * address) with a secret that rotates every Cookie-Refresh-Time, encrypted
 * with XChaCha20-Poly1305 under HASH("cookie--" || Spub of the responder)
 * and bound to the mac1 it answers. The initiator then sends the cookie back
 * as the mac2 key on its next attempt.
 *
 * CookieChecker is the receiving side (one per device, keyed by our public
 * key); CookieGenerator the sending side (one per peer, keyed by theirs).
 */
import type { CryptoBackend } from '../crypto/types.js';
import { blake2s, mac } from '../crypto/hash.js';
import { COOKIE_LEN, COOKIE_NONCE_LEN, KEY_LEN, TAG_LEN, WG_LABEL_COOKIE, WG_LABEL_MAC1 } from './constants.js';
import { COOKIE_REPLY_SIZE, encodeCookieReply, viewCookieReply } from './messages.js';

const MAC_LEN = 16;
const encoder = new TextEncoder();
const LABEL_MAC1 = encoder.encode(WG_LABEL_MAC1);
const LABEL_COOKIE = encoder.encode(WG_LABEL_COOKIE);

/** Where a datagram came from; node:dgram's RemoteInfo satisfies it. */
export interface SourceAddress {
  readonly address: string;
  readonly port: number;
}

export function mac1Key(publicKey: Uint8Array): Uint8Array {
  return blake2s(LABEL_MAC1, publicKey);
}

export function cookieKey(publicKey: Uint8Array): Uint8Array {
  return blake2s(LABEL_COOKIE, publicKey);
}

/** Constant-time comparison of equal-length byte strings. */
export function equalConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

/**
 * Only we read our own cookies, so any injective encoding of the source
 * works: the address text and the port.
 */
function sourceBytes(src: SourceAddress): Uint8Array {
  const a = encoder.encode(src.address);
  const out = new Uint8Array(a.length + 2);
  out.set(a, 0);
  out[a.length] = (src.port >>> 8) & 0xff;
  out[a.length + 1] = src.port & 0xff;
  return out;
}

export class CookieChecker {
  private mac1Key: Uint8Array = new Uint8Array(KEY_LEN);
  private encryptionKey: Uint8Array = new Uint8Array(KEY_LEN);
  private readonly secret = new Uint8Array(KEY_LEN);
  private secretSetAt = -Infinity;

  constructor(
    private readonly crypto: CryptoBackend,
    private readonly random: (out: Uint8Array) => void,
    private readonly refreshTime: number,
    publicKey: Uint8Array,
  ) {
    this.setPublicKey(publicKey);
  }

  setPublicKey(publicKey: Uint8Array): void {
    this.mac1Key = mac1Key(publicKey);
    this.encryptionKey = cookieKey(publicKey);
  }

  /** Whether the message's mac1 is right for our public key. */
  checkMac1(msg: Uint8Array): boolean {
    const end = msg.length - 2 * MAC_LEN;
    const want = mac(this.mac1Key, msg.subarray(0, end));
    return equalConstantTime(want, msg.subarray(end, end + MAC_LEN));
  }

  /** Whether the message's mac2 carries a cookie we issued to `src` recently. */
  checkMac2(msg: Uint8Array, src: SourceAddress, now: number): boolean {
    // An expired secret can vouch for nothing; do not rotate here so that
    // a flood of checks cannot force rotations.
    if (now - this.secretSetAt >= this.refreshTime) return false;
    const cookie = mac(this.secret, sourceBytes(src));
    const end = msg.length - MAC_LEN;
    const want = mac(cookie, msg.subarray(0, end));
    return equalConstantTime(want, msg.subarray(end));
  }

  /** A cookie reply (64 bytes) answering `msg`, whose sender index is `receiver`. */
  createReply(msg: Uint8Array, receiver: number, src: SourceAddress, now: number): Uint8Array {
    if (now - this.secretSetAt >= this.refreshTime) {
      this.random(this.secret);
      this.secretSetAt = now;
    }
    const cookie = mac(this.secret, sourceBytes(src));
    const nonce = new Uint8Array(COOKIE_NONCE_LEN);
    this.random(nonce);
    const mac1 = msg.subarray(msg.length - 2 * MAC_LEN, msg.length - MAC_LEN);
    const sealed = new Uint8Array(COOKIE_LEN + TAG_LEN);
    this.crypto.xaeadSeal(sealed, cookie, mac1, nonce, this.encryptionKey);
    return encodeCookieReply(receiver, nonce, sealed);
  }
}

export class CookieGenerator {
  // Derived from the peer's public key at first use, not when the peer is
  // added: two BLAKE2s were two thirds of adding a peer (about 25 us; half
  // a second of a 20,000-peer set), and most peers of a big set never
  // handshake while it is applied.
  private mac1KeyCache: Uint8Array | undefined;
  private decryptionKeyCache: Uint8Array | undefined;
  private readonly cookie = new Uint8Array(COOKIE_LEN);
  private cookieSetAt = -Infinity;
  private readonly lastMac1 = new Uint8Array(MAC_LEN);
  private hasLastMac1 = false;

  constructor(
    private readonly crypto: CryptoBackend,
    private readonly refreshTime: number,
    private readonly peerPublicKey: Uint8Array,
  ) {}

  private get mac1Key(): Uint8Array {
    this.mac1KeyCache ??= mac1Key(this.peerPublicKey);
    return this.mac1KeyCache;
  }

  private get decryptionKey(): Uint8Array {
    this.decryptionKeyCache ??= cookieKey(this.peerPublicKey);
    return this.decryptionKeyCache;
  }

  /** Fills in mac1 and mac2 (the last 32 bytes) of an outgoing handshake message. */
  addMacs(msg: Uint8Array, now: number): void {
    const mac1At = msg.length - 2 * MAC_LEN;
    const mac2At = msg.length - MAC_LEN;
    const m1 = mac(this.mac1Key, msg.subarray(0, mac1At));
    msg.set(m1, mac1At);
    this.lastMac1.set(m1);
    this.hasLastMac1 = true;
    if (now - this.cookieSetAt < this.refreshTime) {
      msg.set(mac(this.cookie, msg.subarray(0, mac2At)), mac2At);
    } else {
      msg.fill(0, mac2At);
    }
  }

  /** Decrypts a cookie reply to our last message; false if it is not for it. */
  consumeReply(reply: Uint8Array, now: number): boolean {
    if (!this.hasLastMac1 || reply.length !== COOKIE_REPLY_SIZE) return false;
    const v = viewCookieReply(reply);
    const cookie = new Uint8Array(COOKIE_LEN);
    if (this.crypto.xaeadOpen(cookie, v.encryptedCookie, this.lastMac1, v.nonce, this.decryptionKey) !== COOKIE_LEN) {
      return false;
    }
    this.cookie.set(cookie);
    this.cookieSetAt = now;
    // One cookie reply per message: a replayed reply must not refresh it.
    this.hasLastMac1 = false;
    return true;
  }

  /** Whether a cookie is held (tests and status). */
  hasCookie(now: number): boolean {
    return now - this.cookieSetAt < this.refreshTime;
  }
}

/**
 * Token bucket per source address for initiations, applied under load
 * (as wireguard-go does): a source may burst, then gets a steady rate.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {}

  allow(address: string, now: number): boolean {
    let b = this.buckets.get(address);
    if (b === undefined) {
      b = { tokens: this.burst, at: now };
      this.buckets.set(address, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.perSecond) / 1000);
      b.at = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Forgets sources idle for more than a second (their bucket is full again). */
  collect(now: number): void {
    for (const [k, b] of this.buckets) {
      if (now - b.at > 1000) this.buckets.delete(k);
    }
  }

  get size(): number {
    return this.buckets.size;
  }
}
