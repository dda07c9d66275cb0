/**
 * WireGuard's protocol constants, named as in the paper (section 6 and the
 * wireguard.com protocol page). Times are in milliseconds because the
 * injected clock is. Every value can be overridden per device through
 * `ProtocolOptions.constants`, so tests and soak runs can shorten the
 * session lifetimes without touching the code paths.
 */
export interface ProtocolConstants {
  /** Initiator starts a new handshake once a session has sent this many messages. */
  rekeyAfterMessages: number;
  /** A session never sends or accepts a counter at or beyond this. */
  rejectAfterMessages: number;
  /** Initiator starts a new handshake when its session is this old. */
  rekeyAfterTime: number;
  /** A session is unusable (both directions) when it is this old. */
  rejectAfterTime: number;
  /** Handshake retries stop after this long; queued packets are dropped. */
  rekeyAttemptTime: number;
  /** Wait between handshake initiation retries (plus jitter). */
  rekeyTimeout: number;
  /** Upper bound of the random jitter added to handshake timers. */
  rekeyTimeoutJitterMax: number;
  /** Send a keepalive when we received data but sent nothing for this long. */
  keepaliveTimeout: number;
  /** The responder's cookie secret (and the initiator's cookie) lives this long. */
  cookieRefreshTime: number;
  /** Minimum spacing between two initiations accepted from one peer. */
  handshakeInitiationRate: number;
  /** Per-source token bucket for initiations under load: sustained rate per second. */
  initiationsPerSecondPerSource: number;
  /** Per-source token bucket for initiations under load: burst. */
  initiationBurstPerSource: number;
  /**
   * tunvpn's, not the paper's (first contact, docs/decisions.md): a data
   * packet waiting for a session sends a fresh initiation once the latest
   * handshake message we sent was not for data (the start-up initiation, a
   * response to the peer, a keepalive's) and is this old, instead of
   * waiting up to Rekey-Timeout for its retry.
   */
  firstContactDelay: number;
  /**
   * tunvpn's: when the latest initiation was itself sent for data and is
   * unanswered this long, waiting data sends another; the wait doubles
   * each time up to Rekey-Timeout. Above any real round trip, so an answer
   * on its way is never superseded.
   */
  dataRetryInitial: number;
}

export const DEFAULT_CONSTANTS: Readonly<ProtocolConstants> = Object.freeze({
  rekeyAfterMessages: 2 ** 60,
  // 2^64 - 2^13 - 1 is not representable as a double; counters are JS
  // numbers and are in any case capped at MAX_COUNTER below.
  rejectAfterMessages: 2 ** 64 - 2 ** 13 - 1,
  rekeyAfterTime: 120_000,
  rejectAfterTime: 180_000,
  rekeyAttemptTime: 90_000,
  rekeyTimeout: 5_000,
  rekeyTimeoutJitterMax: 334,
  keepaliveTimeout: 10_000,
  cookieRefreshTime: 120_000,
  handshakeInitiationRate: 20,
  initiationsPerSecondPerSource: 20,
  initiationBurstPerSource: 5,
  firstContactDelay: 100,
  dataRetryInitial: 1_000,
});

/**
 * Counters are held in JS numbers so the transport path allocates no
 * BigInt; they are exact up to 2^53, which at ten million packets a second
 * is 28 years of one session (sessions last at most Reject-After-Time).
 * Any counter at or past this is treated as past Reject-After-Messages.
 */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

export function resolveConstants(overrides?: Partial<ProtocolConstants>): ProtocolConstants {
  const c: ProtocolConstants = { ...DEFAULT_CONSTANTS, ...(overrides ?? {}) };
  c.rejectAfterMessages = Math.min(c.rejectAfterMessages, MAX_COUNTER);
  c.rekeyAfterMessages = Math.min(c.rekeyAfterMessages, c.rejectAfterMessages);
  return c;
}

export const NOISE_CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const WG_IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const WG_LABEL_MAC1 = 'mac1----';
export const WG_LABEL_COOKIE = 'cookie--';

// Key and AEAD tag sizes are the crypto layer's; named here too for the protocol modules.
export { KEY_LEN, TAG_LEN } from '../crypto/util.js';
export const TIMESTAMP_LEN = 12;
export const COOKIE_LEN = 16;
export const COOKIE_NONCE_LEN = 24;
