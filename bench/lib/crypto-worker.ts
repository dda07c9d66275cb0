/**
 * A crypto worker of bench/crypto-workers.ts: seals or opens the batches the
 * main thread puts in its ring (layout: ./crypto-worker-ring.ts) with the
 * daemon's own sodium-native backend, and reports each batch done in order.
 * It holds no protocol state: keys come from the shared key table, nonces
 * from the transport headers, lengths from the slot's metadata.
 *
 * `port` mode answers MessagePort pings instead, to measure that hand-off.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createSodiumNativeBackend } from '../../src/crypto/sodium-native.js';
import {
  BATCH,
  CTL_DONE,
  CTL_SUBMIT,
  DEPTH,
  HEADER,
  KEYS,
  META_COUNT,
  META_KEYS,
  META_LENS,
  META_OP,
  META_STRIDE,
  OP_OPEN,
  OP_SEAL,
  OP_STOP,
  SLOT,
  TAG,
  isCryptoWorkerData,
  nonceFromHeader,
  publish,
  ringViews,
} from './crypto-worker-ring.js';

const data: unknown = workerData;
if (!isCryptoWorkerData(data) || parentPort === null) throw new Error('crypto-worker: started without its ring (run bench/crypto-workers.ts)');
const port = parentPort;

if (data.mode === 'port') {
  // Echo: the main thread measures a round trip of an empty batch.
  port.on('message', (m: unknown) => port.postMessage(m));
} else {
  const crypto = createSodiumNativeBackend();
  const { ctl, meta, input, output } = ringViews(data.ring);
  const keyTable = new Uint8Array(data.ring.keys);
  const keys: Uint8Array[] = [];
  for (let k = 0; k < KEYS; k++) keys.push(keyTable.subarray(k * 32, k * 32 + 32));
  const nonce = new Uint8Array(12);
  const header = HEADER;
  const overhead = HEADER + TAG;

  /**
   * Seals (plaintext in `input`, the header the main thread wrote in
   * `output`) or opens (datagram in `input`) one batch into `output`; a
   * packet without a key or that does not fit its slot gets length -1.
   */
  const runBatch = (seal: boolean, m: number, base: number, count: number): void => {
    // The nonce's counter is in the header: the one written for seal, the one received for open.
    const headers = seal ? output : input;
    for (let i = 0; i < count; i++) {
      const len = meta[m + META_LENS + i];
      const key = keys[meta[m + META_KEYS + i]];
      const off = (base + i) * SLOT;
      const fits = seal ? len + overhead <= SLOT : len >= overhead && len <= SLOT;
      if (key === undefined || !fits) {
        meta[m + META_LENS + i] = -1;
        continue;
      }
      nonceFromHeader(nonce, headers, off);
      if (seal) {
        crypto.aeadSeal(output.subarray(off + header, off + len + overhead), input.subarray(off, off + len), null, nonce, key);
        meta[m + META_LENS + i] = len + overhead;
      } else {
        meta[m + META_LENS + i] = crypto.aeadOpen(output.subarray(off, off + len - overhead), input.subarray(off + header, off + len), null, nonce, key);
      }
    }
  };

  let processed = 0;
  for (;;) {
    // Sleep until the main thread has submitted past what we processed.
    while (Atomics.load(ctl, CTL_SUBMIT) === processed) Atomics.wait(ctl, CTL_SUBMIT, processed);
    const slot = processed % DEPTH;
    const m = slot * META_STRIDE;
    const op = meta[m + META_OP];
    if (op === OP_STOP) break;
    const count = meta[m + META_COUNT];
    if (op === OP_SEAL || op === OP_OPEN) runBatch(op === OP_SEAL, m, slot * BATCH, count);
    processed++;
    publish(ctl, CTL_DONE, processed);
  }
}
