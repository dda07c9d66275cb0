/**
 * The four WireGuard messages on the wire. All integers are little-endian;
 * the first four bytes are a 32-bit type (1..4), i.e. the type byte followed
 * by three reserved zero bytes.
 *
 *   1 initiation  148: type | sender | ephemeral 32 | static 32+16 | timestamp 12+16 | mac1 16 | mac2 16
 *   2 response     92: type | sender | receiver | ephemeral 32 | empty 0+16 | mac1 16 | mac2 16
 *   3 cookie reply 64: type | receiver | nonce 24 | cookie 16+16
 *   4 transport  >=32: type | receiver | counter u64 | ciphertext (padded plaintext + 16)
 *
 * `messageType` is the one gate every datagram passes: it checks type and
 * size, so the decoders after it never read out of bounds. Decoders return
 * views into the datagram (handshake path only; the transport path reads
 * fields in place and allocates nothing).
 */
import { TunvpnError } from '../errors.js';
import { COOKIE_NONCE_LEN, KEY_LEN, TAG_LEN, TIMESTAMP_LEN } from './constants.js';

export const MESSAGE_INITIATION = 1;
export const MESSAGE_RESPONSE = 2;
export const MESSAGE_COOKIE_REPLY = 3;
export const MESSAGE_TRANSPORT = 4;
export type MessageType = 1 | 2 | 3 | 4;

export const INITIATION_SIZE = 148;
export const RESPONSE_SIZE = 92;
export const COOKIE_REPLY_SIZE = 64;
export const TRANSPORT_HEADER_SIZE = 16;
export const TRANSPORT_MIN_SIZE = TRANSPORT_HEADER_SIZE + TAG_LEN;
/** Bytes a transport message adds to a padded plaintext. */
export const TRANSPORT_OVERHEAD = TRANSPORT_HEADER_SIZE + TAG_LEN;

// Field offsets.
export const INIT_SENDER = 4;
export const INIT_EPHEMERAL = 8;
export const INIT_STATIC = INIT_EPHEMERAL + KEY_LEN; // 40
export const INIT_TIMESTAMP = INIT_STATIC + KEY_LEN + TAG_LEN; // 88
export const INIT_MAC1 = INIT_TIMESTAMP + TIMESTAMP_LEN + TAG_LEN; // 116
export const INIT_MAC2 = INIT_MAC1 + 16; // 132

export const RESP_SENDER = 4;
export const RESP_RECEIVER = 8;
export const RESP_EPHEMERAL = 12;
export const RESP_EMPTY = RESP_EPHEMERAL + KEY_LEN; // 44
export const RESP_MAC1 = RESP_EMPTY + TAG_LEN; // 60
export const RESP_MAC2 = RESP_MAC1 + 16; // 76

export const COOKIE_RECEIVER = 4;
export const COOKIE_NONCE = 8;
export const COOKIE_CIPHERTEXT = COOKIE_NONCE + COOKIE_NONCE_LEN; // 32

export const TRANSPORT_RECEIVER = 4;
export const TRANSPORT_COUNTER = 8;

/** A message that fails the size or type checks. Never thrown on the packet path. */
export class MessageError extends TunvpnError {
  constructor(message: string) {
    super('PROTOCOL_MALFORMED_MESSAGE', message);
  }
}

export function readU32LE(buf: Uint8Array, off: number): number {
  return (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)) >>> 0;
}

export function writeU32LE(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v & 0xff;
  buf[off + 1] = (v >>> 8) & 0xff;
  buf[off + 2] = (v >>> 16) & 0xff;
  buf[off + 3] = (v >>> 24) & 0xff;
}

/** Writes a non-negative integer < 2^53 as a 64-bit little-endian counter. */
export function writeCounterLE(buf: Uint8Array, off: number, v: number): void {
  const lo = v >>> 0;
  const hi = Math.floor(v / 4294967296) >>> 0;
  writeU32LE(buf, off, lo);
  writeU32LE(buf, off + 4, hi);
}

/**
 * Reads a 64-bit little-endian counter. Values at or beyond 2^53 come back
 * as Infinity so callers reject them instead of rounding them.
 */
export function readCounterLE(buf: Uint8Array, off: number): number {
  const lo = readU32LE(buf, off);
  const hi = readU32LE(buf, off + 4);
  if (hi >= 0x200000) return Infinity;
  return hi * 4294967296 + lo;
}

/**
 * The message type of a datagram when its type field and size are valid,
 * otherwise 0. Reserved bytes must be zero (wireguard-go reads the 4 bytes
 * as one integer, so anything else is an unknown type there too).
 */
export function messageType(d: Uint8Array): MessageType | 0 {
  if (d.length < 4 || d[1] !== 0 || d[2] !== 0 || d[3] !== 0) return 0;
  switch (d[0]) {
    case MESSAGE_INITIATION:
      return d.length === INITIATION_SIZE ? MESSAGE_INITIATION : 0;
    case MESSAGE_RESPONSE:
      return d.length === RESPONSE_SIZE ? MESSAGE_RESPONSE : 0;
    case MESSAGE_COOKIE_REPLY:
      return d.length === COOKIE_REPLY_SIZE ? MESSAGE_COOKIE_REPLY : 0;
    case MESSAGE_TRANSPORT:
      return d.length >= TRANSPORT_MIN_SIZE ? MESSAGE_TRANSPORT : 0;
    default:
      return 0;
  }
}

export interface InitiationMessage {
  type: 1;
  sender: number;
  ephemeral: Uint8Array;
  encryptedStatic: Uint8Array;
  encryptedTimestamp: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

export interface ResponseMessage {
  type: 2;
  sender: number;
  receiver: number;
  ephemeral: Uint8Array;
  encryptedNothing: Uint8Array;
  mac1: Uint8Array;
  mac2: Uint8Array;
}

export interface CookieReplyMessage {
  type: 3;
  receiver: number;
  nonce: Uint8Array;
  encryptedCookie: Uint8Array;
}

export interface TransportHeader {
  type: 4;
  receiver: number;
  /** Infinity when the wire counter is at or beyond 2^53. */
  counter: number;
  ciphertext: Uint8Array;
}

export type Message = InitiationMessage | ResponseMessage | CookieReplyMessage | TransportHeader;

/** Views of an initiation; `d` must have passed messageType(). */
export function viewInitiation(d: Uint8Array): InitiationMessage {
  return {
    type: MESSAGE_INITIATION,
    sender: readU32LE(d, INIT_SENDER),
    ephemeral: d.subarray(INIT_EPHEMERAL, INIT_STATIC),
    encryptedStatic: d.subarray(INIT_STATIC, INIT_TIMESTAMP),
    encryptedTimestamp: d.subarray(INIT_TIMESTAMP, INIT_MAC1),
    mac1: d.subarray(INIT_MAC1, INIT_MAC2),
    mac2: d.subarray(INIT_MAC2, INITIATION_SIZE),
  };
}

/** Views of a response; `d` must have passed messageType(). */
export function viewResponse(d: Uint8Array): ResponseMessage {
  return {
    type: MESSAGE_RESPONSE,
    sender: readU32LE(d, RESP_SENDER),
    receiver: readU32LE(d, RESP_RECEIVER),
    ephemeral: d.subarray(RESP_EPHEMERAL, RESP_EMPTY),
    encryptedNothing: d.subarray(RESP_EMPTY, RESP_MAC1),
    mac1: d.subarray(RESP_MAC1, RESP_MAC2),
    mac2: d.subarray(RESP_MAC2, RESPONSE_SIZE),
  };
}

/** Views of a cookie reply; `d` must have passed messageType(). */
export function viewCookieReply(d: Uint8Array): CookieReplyMessage {
  return {
    type: MESSAGE_COOKIE_REPLY,
    receiver: readU32LE(d, COOKIE_RECEIVER),
    nonce: d.subarray(COOKIE_NONCE, COOKIE_CIPHERTEXT),
    encryptedCookie: d.subarray(COOKIE_CIPHERTEXT, COOKIE_REPLY_SIZE),
  };
}

export function viewTransport(d: Uint8Array): TransportHeader {
  return {
    type: MESSAGE_TRANSPORT,
    receiver: readU32LE(d, TRANSPORT_RECEIVER),
    counter: readCounterLE(d, TRANSPORT_COUNTER),
    ciphertext: d.subarray(TRANSPORT_HEADER_SIZE),
  };
}

/**
 * Decodes any message, or returns (never throws) a MessageError saying why
 * not. For tools and tests; the device uses messageType() and the views.
 */
export function decodeMessage(d: Uint8Array): Message | MessageError {
  if (d.length < 4) return new MessageError(`datagram of ${d.length} bytes is shorter than a message header`);
  if (d[1] !== 0 || d[2] !== 0 || d[3] !== 0) return new MessageError('reserved header bytes are not zero');
  const t = messageType(d);
  switch (t) {
    case MESSAGE_INITIATION:
      return viewInitiation(d);
    case MESSAGE_RESPONSE:
      return viewResponse(d);
    case MESSAGE_COOKIE_REPLY:
      return viewCookieReply(d);
    case MESSAGE_TRANSPORT:
      return viewTransport(d);
    default: {
      const sizes: Record<number, string> = { 1: '148', 2: '92', 3: '64', 4: 'at least 32' };
      const want = sizes[d[0]];
      return new MessageError(want === undefined ? `unknown message type ${d[0]}` : `message type ${d[0]} must be ${want} bytes, got ${d.length}`);
    }
  }
}

/** Writes the 4-byte type field (type byte + 3 reserved zeros). */
export function writeType(out: Uint8Array, type: MessageType): void {
  out[0] = type;
  out[1] = 0;
  out[2] = 0;
  out[3] = 0;
}

export function encodeCookieReply(receiver: number, nonce: Uint8Array, encryptedCookie: Uint8Array): Uint8Array {
  if (nonce.length !== COOKIE_NONCE_LEN || encryptedCookie.length !== COOKIE_REPLY_SIZE - COOKIE_CIPHERTEXT) {
    throw new MessageError('cookie reply fields have the wrong sizes');
  }
  const out = new Uint8Array(COOKIE_REPLY_SIZE);
  writeType(out, MESSAGE_COOKIE_REPLY);
  writeU32LE(out, COOKIE_RECEIVER, receiver);
  out.set(nonce, COOKIE_NONCE);
  out.set(encryptedCookie, COOKIE_CIPHERTEXT);
  return out;
}
