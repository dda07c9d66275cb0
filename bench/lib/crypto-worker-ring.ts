/**
 * The shared-memory layout between bench/crypto-workers.ts (the main
 * thread) and its crypto workers (bench/lib/crypto-worker.ts): one ring of
 * DEPTH batch slots per worker, each slot up to BATCH packets, in
 * SharedArrayBuffers so that no packet is copied through postMessage.
 *
 * Hand-off by two counters per worker, never by a slot state that both
 * sides write: the main thread bumps SUBMIT after it has filled slot
 * `SUBMIT % DEPTH` and wakes the worker (Atomics.notify); the worker bumps
 * DONE after it has sealed or opened that slot and wakes the main thread
 * (Atomics.notify, which resolves the main thread's Atomics.waitAsync).
 * Each counter has one writer, so neither side can miss a wake-up: a
 * waiter re-reads the counter before it sleeps on its value.
 *
 * What crosses per packet: its length and its key index in `meta`, the
 * plaintext (seal) or datagram (open) in `input`. For seal the main thread
 * writes the 16-byte transport header, counter included, into `output`:
 * the nonce counter stays with the protocol state on the main thread, and
 * the worker derives the nonce from the header it is given, as the
 * receiver does from the datagram.
 */

/** Packets (or datagrams) per batch: the pipeline's read batch. */
export const BATCH = 128;
/** Batches in flight per worker. */
export const DEPTH = 4;
/** Bytes per packet slot: a 1420-byte packet sealed is 1452 bytes; rounded up. */
export const SLOT = 1472;
/** The transport header: type, reserved, receiver index, 64-bit counter. */
export const HEADER = 16;
/** Poly1305 tag. */
export const TAG = 16;
/** Session keys the workers can see (the key table; a session's keys written once per handshake). */
export const KEYS = 4;

export const OP_SEAL = 1;
export const OP_OPEN = 2;
export const OP_STOP = 3;

/** Control words: each on its own 64-byte line, so the two writers do not share a cache line. */
export const CTL_SUBMIT = 0;
export const CTL_DONE = 16;
export const CTL_WORDS = 32;

/** Per batch slot in `meta`: op, count, then lengths[BATCH], then key indices[BATCH]. */
export const META_OP = 0;
export const META_COUNT = 1;
export const META_LENS = 2;
export const META_KEYS = 2 + BATCH;
export const META_STRIDE = 2 + 2 * BATCH;

/** The buffers of one worker's ring, as they cross to the worker in workerData. */
export interface RingBuffers {
  readonly ctl: SharedArrayBuffer;
  readonly meta: SharedArrayBuffer;
  readonly input: SharedArrayBuffer;
  readonly output: SharedArrayBuffer;
  readonly keys: SharedArrayBuffer;
}

/** workerData of a crypto worker: `ring` runs the Atomics loop, `port` answers MessagePort pings (hand-off latency only). */
export interface CryptoWorkerData {
  readonly mode: 'ring' | 'port';
  readonly ring: RingBuffers;
}

export function allocRing(keys: SharedArrayBuffer): RingBuffers {
  return {
    ctl: new SharedArrayBuffer(CTL_WORDS * 4),
    meta: new SharedArrayBuffer(DEPTH * META_STRIDE * 4),
    input: new SharedArrayBuffer(DEPTH * BATCH * SLOT),
    output: new SharedArrayBuffer(DEPTH * BATCH * SLOT),
    keys,
  };
}

/** The ring's buffers as the typed arrays both sides read and write. */
export interface RingViews {
  readonly ctl: Int32Array;
  readonly meta: Int32Array;
  readonly input: Uint8Array;
  readonly output: Uint8Array;
}

export function ringViews(ring: RingBuffers): RingViews {
  return { ctl: new Int32Array(ring.ctl), meta: new Int32Array(ring.meta), input: new Uint8Array(ring.input), output: new Uint8Array(ring.output) };
}

/** Bumps a control counter to `value` and wakes the other side if it sleeps on it (each counter has one writer). */
export function publish(ctl: Int32Array, index: number, value: number): void {
  Atomics.store(ctl, index, value);
  Atomics.notify(ctl, index);
}

/** The ChaCha20-Poly1305 nonce of the transport header at `buf[off]`: 4 zero bytes, then the header's 64-bit little-endian counter. */
export function nonceFromHeader(nonce: Uint8Array, buf: Uint8Array, off: number): Uint8Array {
  for (let b = 0; b < 8; b++) nonce[4 + b] = buf[off + 8 + b];
  return nonce;
}

export function isCryptoWorkerData(v: unknown): v is CryptoWorkerData {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  if (o.mode !== 'ring' && o.mode !== 'port') return false;
  const r = o.ring;
  if (typeof r !== 'object' || r === null) return false;
  const rb = r as Record<string, unknown>;
  return ['ctl', 'meta', 'input', 'output', 'keys'].every((k) => rb[k] instanceof SharedArrayBuffer);
}
