/**
 * TAI64N timestamps for handshake initiations: 8 bytes big-endian seconds
 * (TAI64 label 2^62 plus the 10 s TAI-UTC offset wireguard uses) and 4 bytes
 * big-endian nanoseconds. The responder only accepts an initiation whose
 * timestamp is greater than the last it accepted from that peer, which stops
 * replayed initiations.
 */
import { TIMESTAMP_LEN } from './constants.js';

/**
 * The nanoseconds are rounded down to 2^24 ns (~16.8 ms) so the timestamp
 * does not reveal the sender's clock at full precision.
 */
const NANO_WHITENER = 0x1000000;

export function tai64n(wallClockMs: number, out: Uint8Array = new Uint8Array(TIMESTAMP_LEN)): Uint8Array {
  const secs = Math.floor(wallClockMs / 1000);
  let nanos = Math.floor((wallClockMs - secs * 1000) * 1e6);
  nanos -= nanos % NANO_WHITENER;
  const low = secs + 10;
  const hi = 0x40000000 + Math.floor(low / 4294967296);
  const lo = low >>> 0;
  const dv = new DataView(out.buffer, out.byteOffset, TIMESTAMP_LEN);
  dv.setUint32(0, hi);
  dv.setUint32(4, lo);
  dv.setUint32(8, nanos);
  return out;
}

/** Big-endian comparison: whether `a` is strictly later than `b`. */
export function tai64nAfter(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < TIMESTAMP_LEN; i++) {
    if (a[i] !== b[i]) return a[i] > b[i];
  }
  return false;
}
