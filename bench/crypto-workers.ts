/**
 * What a second thread buys: transport crypto (ChaCha20-Poly1305 of
 * 1420-byte packets, the daemon's sodium-native backend) on the main thread
 * against 1, 2 and 3 worker threads fed through SharedArrayBuffer rings
 * (bench/lib/crypto-worker-ring.ts), batches of 128, completed in order.
 * docs/performance.md, "Multi-core: what a second thread buys", has the
 * figures and what they mean for the daemon.
 *
 * Run: npm run bench:workers -- [--runs N] [--ms N] [--pings N]
 *   --runs   rounds over every case, interleaved (default 3): the machine is shared
 *   --ms     measured window per case (default 1000), after a 200 ms warm-up
 *   --pings  round trips per hand-off latency case (default 2000)
 *
 * Cases, each for seal (sender) and open (receiver):
 *   inline     the main thread seals/opens each packet from its read slot
 *              into its send slot, as Session.encrypt/decrypt do now;
 *   Nw         N workers; the main thread copies the batch into a ring slot
 *              (today's TUN and UDP slots are not shared memory), writes the
 *              headers and counters (seal), hands it over, waits with
 *              Atomics.waitAsync (the event loop stays free) and takes the
 *              results in submission order, reading them in place;
 *   +work      the same with the main thread's other per-batch work
 *              emulated: a busy loop as long as inline crypto of one batch
 *              took in this run (the profile: crypto is about half of each
 *              side's busy time), so what the offload gives a daemon whose
 *              main thread is half crypto shows directly.
 * Per case: packets/s, Gbit/s of 1420-byte plaintext, ratio to inline of the
 * same round, the main thread's CPU share (from /proc/self/task/PID/stat;
 * what is left of it is what I/O and protocol work can use), main-thread
 * CPU per batch, and the process's CPU per packet (all threads).
 * Hand-off latency: round trip of an empty batch to a parked worker, by
 * Atomics.wait (blocking, the floor), Atomics.waitAsync (what an event loop
 * can use) and a MessagePort ping.
 */
import { availableParallelism, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { createSodiumNativeBackend } from '../src/crypto/sodium-native.js';
import type { CryptoBackend } from '../src/crypto/types.js';
import { threadCpuSeconds } from '../src/testbed/proc.js';
import { numArg } from './lib/args.js';
import {
  BATCH,
  CTL_DONE,
  CTL_SUBMIT,
  type CryptoWorkerData,
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
  type RingBuffers,
  type RingViews,
  SLOT,
  TAG,
  allocRing,
  nonceFromHeader,
  publish,
  ringViews,
} from './lib/crypto-worker-ring.js';

const PACKET = 1420;
const DATAGRAM = PACKET + HEADER + TAG;
const MAX_WORKERS = 3;
const POOL_BATCHES = 8;

const args = process.argv.slice(2);
const RUNS = numArg(args, '--runs', 3, 1, 20);
const WINDOW_MS = numArg(args, '--ms', 1000, 100, 60_000);
const PINGS = numArg(args, '--pings', 2000, 10, 1_000_000);
const WARMUP_MS = 200;

type Op = 'seal' | 'open';

interface WaitAsyncResult {
  async: boolean;
  value: 'ok' | 'not-equal' | 'timed-out' | Promise<'ok' | 'timed-out'>;
}
interface AtomicsWithWaitAsync {
  waitAsync(ta: Int32Array, index: number, value: number, timeout?: number): WaitAsyncResult;
}
const atomicsAsync = Atomics as unknown as Partial<AtomicsWithWaitAsync>;
const waitAsyncFn = atomicsAsync.waitAsync;
if (typeof waitAsyncFn !== 'function') throw new Error('Atomics.waitAsync is missing: Node.js 16+ has it');
const waitAsync: AtomicsWithWaitAsync['waitAsync'] = waitAsyncFn.bind(Atomics);

/** A worker that has not answered in this long is stuck: the bench fails instead of hanging. */
const STUCK_MS = 10_000;

/** Sleeps (without blocking the event loop) until ctl[index] >= target. */
async function waitAtLeast(ctl: Int32Array, index: number, target: number): Promise<void> {
  for (;;) {
    const v = Atomics.load(ctl, index);
    if (v >= target) return;
    const r = waitAsync(ctl, index, v, STUCK_MS);
    const outcome = r.async && typeof r.value !== 'string' ? await r.value : r.value;
    if (outcome === 'timed-out') throw new Error(`crypto worker did not finish a batch in ${STUCK_MS} ms`);
  }
}

// ---- CPU time of the main thread (the daemon's one JS thread) ----

/** utime + stime of the main thread, in ms (clock-tick resolution; the /proc reader is src/testbed/proc.ts). */
function mainCpuMs(): number {
  return threadCpuSeconds(process.pid, process.pid) * 1000;
}
// Once now: the reader asks getconf for the tick on its first call, which must not fall in a measured window.
mainCpuMs();

/** utime + stime of the whole process (all threads), in ms. */
function processCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

// ---- shared material: keys, plaintexts, sealed datagrams ----

const keyTable = new SharedArrayBuffer(KEYS * 32);
const keyBytes = new Uint8Array(keyTable);
const crypto: CryptoBackend = createSodiumNativeBackend();
crypto.randomBytes(keyBytes);
const key0 = keyBytes.subarray(0, 32);
const RECEIVER = 0x1234_5678;

/** POOL_BATCHES x BATCH distinct plaintexts (the TUN read slots). */
const plain: Uint8Array[] = [];
/** The same, sealed with counters 0.. under key 0 (the UDP receive slots). */
const sealed: Uint8Array[] = [];

function writeHeader(out: Uint8Array, off: number, counter: number): void {
  out[off] = 4;
  out[off + 1] = 0;
  out[off + 2] = 0;
  out[off + 3] = 0;
  out[off + 4] = RECEIVER & 0xff;
  out[off + 5] = (RECEIVER >>> 8) & 0xff;
  out[off + 6] = (RECEIVER >>> 16) & 0xff;
  out[off + 7] = RECEIVER >>> 24;
  // 64-bit little-endian counter; the bench never passes 2^32.
  out[off + 8] = counter & 0xff;
  out[off + 9] = (counter >>> 8) & 0xff;
  out[off + 10] = (counter >>> 16) & 0xff;
  out[off + 11] = counter >>> 24;
  out[off + 12] = 0;
  out[off + 13] = 0;
  out[off + 14] = 0;
  out[off + 15] = 0;
}

const nonce = new Uint8Array(12);
function nonceFrom(buf: Uint8Array, off: number): Uint8Array {
  return nonceFromHeader(nonce, buf, off);
}

for (let i = 0; i < POOL_BATCHES * BATCH; i++) {
  const p = new Uint8Array(PACKET);
  crypto.randomBytes(p);
  p[0] = 0x45;
  plain.push(p);
  const d = new Uint8Array(DATAGRAM);
  writeHeader(d, 0, i);
  crypto.aeadSeal(d.subarray(HEADER), p, null, nonceFrom(d, 0), key0);
  sealed.push(d);
}

// ---- inline: the main thread does the crypto, as the daemon does now ----

const txSlots: Uint8Array[] = [];
const rxSlots: Uint8Array[] = [];
for (let i = 0; i < BATCH; i++) {
  txSlots.push(new Uint8Array(SLOT));
  rxSlots.push(new Uint8Array(SLOT));
}

let sendCounter = 0;

function inlineBatch(op: Op, b: number): number {
  const first = (b % POOL_BATCHES) * BATCH;
  let bytes = 0;
  if (op === 'seal') {
    for (let i = 0; i < BATCH; i++) {
      const out = txSlots[i];
      const pkt = plain[first + i];
      writeHeader(out, 0, sendCounter++);
      crypto.aeadSeal(out.subarray(HEADER, HEADER + pkt.length + TAG), pkt, null, nonceFrom(out, 0), key0);
      bytes += pkt.length;
    }
  } else {
    for (let i = 0; i < BATCH; i++) {
      const d = sealed[first + i];
      const n = crypto.aeadOpen(rxSlots[i].subarray(0, d.length - HEADER - TAG), d.subarray(HEADER), null, nonceFrom(d, 0), key0);
      if (n !== PACKET) throw new Error(`inline open failed: ${n}`);
      bytes += n;
    }
  }
  return bytes;
}

/** Busy main-thread work of `us` microseconds (the emulated I/O and protocol work). */
function spin(us: number): void {
  if (us <= 0) return;
  const end = performance.now() + us / 1000;
  while (performance.now() < end) {
    // burn
  }
}

interface Sample {
  packets: number;
  ms: number;
  mainCpuMs: number;
  procCpuMs: number;
  batches: number;
}

function inlineRun(op: Op, workUs: number): Sample {
  const t = performance.now() + WARMUP_MS;
  let b = 0;
  while (performance.now() < t) inlineBatch(op, b++);
  const t0 = performance.now();
  const c0 = mainCpuMs();
  const p0 = processCpuMs();
  let packets = 0;
  let batches = 0;
  const end = t0 + WINDOW_MS;
  while (performance.now() < end) {
    spin(workUs);
    inlineBatch(op, b++);
    packets += BATCH;
    batches++;
  }
  return { packets, ms: performance.now() - t0, mainCpuMs: mainCpuMs() - c0, procCpuMs: processCpuMs() - p0, batches };
}

// ---- workers ----

interface RingWorker extends RingViews {
  readonly worker: Worker;
  readonly ring: RingBuffers;
  /** Batches handed to it so far (its SUBMIT). */
  submitted: number;
}

function startWorker(mode: 'ring' | 'port'): { worker: Worker; ring: RingBuffers } {
  const ring = allocRing(keyTable);
  const data: CryptoWorkerData = { mode, ring };
  const worker = new Worker(new URL('./lib/crypto-worker.js', import.meta.url), { workerData: data });
  worker.on('error', (err) => {
    console.error('crypto worker failed:', err);
    process.exit(1);
  });
  return { worker, ring };
}

function ringWorker(): RingWorker {
  const { worker, ring } = startWorker('ring');
  return { worker, ring, ...ringViews(ring), submitted: 0 };
}

/** Fills the worker's next ring slot with batch `b` (copied in), and hands it over. */
function submit(w: RingWorker, op: Op, b: number, count: number): void {
  const slot = w.submitted % DEPTH;
  const m = slot * META_STRIDE;
  const base = slot * BATCH;
  const first = (b % POOL_BATCHES) * BATCH;
  w.meta[m + META_OP] = op === 'seal' ? OP_SEAL : OP_OPEN;
  w.meta[m + META_COUNT] = count;
  for (let i = 0; i < count; i++) {
    const off = (base + i) * SLOT;
    if (op === 'seal') {
      const pkt = plain[first + i];
      w.input.set(pkt, off);
      writeHeader(w.output, off, sendCounter++);
      w.meta[m + META_LENS + i] = pkt.length;
    } else {
      const d = sealed[first + i];
      w.input.set(d, off);
      w.meta[m + META_LENS + i] = d.length;
    }
    w.meta[m + META_KEYS + i] = 0;
  }
  w.submitted++;
  publish(w.ctl, CTL_SUBMIT, w.submitted);
}

/** Reads the results of the worker's batch `j` in place (what sendBatch / writeBatch would be given); returns plaintext bytes. */
function collect(w: RingWorker, op: Op, j: number, count: number): number {
  const slot = j % DEPTH;
  const m = slot * META_STRIDE;
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const n = w.meta[m + META_LENS + i];
    const want = op === 'seal' ? DATAGRAM : PACKET;
    if (n !== want) throw new Error(`worker ${op} of packet ${i} returned ${n}, expected ${want}`);
    bytes += op === 'seal' ? n - HEADER - TAG : n;
  }
  return bytes;
}

async function workerRun(pool: readonly RingWorker[], n: number, op: Op, workUs: number): Promise<Sample> {
  const ws = pool.slice(0, n);
  // Batch k goes to worker k % n; results are taken in k order (in-order delivery).
  const base = ws.map((w) => w.submitted);
  let submitted = 0;
  let consumed = 0;
  let packets = 0;
  let batches = 0;
  let measuring = false;
  let t0 = 0;
  let c0 = 0;
  let p0 = 0;
  const warmEnd = performance.now() + WARMUP_MS;
  let end = Number.POSITIVE_INFINITY;
  let stopping = false;
  for (;;) {
    while (!stopping && submitted - consumed < n * DEPTH) {
      const w = ws[submitted % n];
      submit(w, op, submitted, BATCH);
      submitted++;
    }
    if (consumed === submitted) break;
    const wi = consumed % n;
    const w = ws[wi];
    const j = base[wi] + Math.floor(consumed / n);
    if (Atomics.load(w.ctl, CTL_DONE) <= j) await waitAtLeast(w.ctl, CTL_DONE, j + 1);
    collect(w, op, j, BATCH);
    consumed++;
    if (measuring) {
      packets += BATCH;
      batches++;
    }
    spin(workUs);
    const now = performance.now();
    if (!measuring && now >= warmEnd) {
      measuring = true;
      t0 = now;
      c0 = mainCpuMs();
      p0 = processCpuMs();
      end = t0 + WINDOW_MS;
    } else if (measuring && now >= end) stopping = true;
  }
  return { packets, ms: performance.now() - t0, mainCpuMs: mainCpuMs() - c0, procCpuMs: processCpuMs() - p0, batches };
}

/** A sealed batch from worker 0 must open inline, and an opened one must match. Throws if not. */
async function checkWorker(w: RingWorker): Promise<void> {
  const c = sendCounter;
  submit(w, 'seal', 0, BATCH);
  const j = w.submitted - 1;
  await waitAtLeast(w.ctl, CTL_DONE, j + 1);
  collect(w, 'seal', j, BATCH);
  const slot = j % DEPTH;
  const back = new Uint8Array(PACKET);
  for (let i = 0; i < BATCH; i++) {
    const off = (slot * BATCH + i) * SLOT;
    const d = w.output.subarray(off, off + DATAGRAM);
    if (d[8] !== ((c + i) & 0xff)) throw new Error('worker seal: counter not taken from the header');
    const r = crypto.aeadOpen(back, d.subarray(HEADER), null, nonceFrom(d, 0), key0);
    if (r !== PACKET || !back.every((x, k) => x === plain[i][k])) throw new Error(`worker seal of packet ${i} does not open to its plaintext`);
  }
  submit(w, 'open', 0, BATCH);
  const j2 = w.submitted - 1;
  await waitAtLeast(w.ctl, CTL_DONE, j2 + 1);
  collect(w, 'open', j2, BATCH);
  const slot2 = j2 % DEPTH;
  for (let i = 0; i < BATCH; i++) {
    const off = (slot2 * BATCH + i) * SLOT;
    const p = w.output.subarray(off, off + PACKET);
    if (!p.every((x, k) => x === plain[i][k])) throw new Error(`worker open of packet ${i} is not its plaintext`);
  }
}

function stopWorker(w: RingWorker): void {
  const slot = w.submitted % DEPTH;
  w.meta[slot * META_STRIDE + META_OP] = OP_STOP;
  w.submitted++;
  publish(w.ctl, CTL_SUBMIT, w.submitted);
}

// ---- hand-off latency: an empty batch to a parked worker and back ----

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

interface Latency {
  name: string;
  medianUs: number;
  p99Us: number;
}

async function latencies(w: RingWorker): Promise<Latency[]> {
  const out: Latency[] = [];
  const rt = async (name: string, once: () => Promise<void> | void): Promise<void> => {
    for (let i = 0; i < Math.min(200, PINGS); i++) await once();
    const t: number[] = [];
    for (let i = 0; i < PINGS; i++) {
      // A short gap, so the worker is parked in its futex as between real batches.
      spin(20);
      const s = performance.now();
      await once();
      t.push((performance.now() - s) * 1000);
    }
    t.sort((a, b) => a - b);
    out.push({ name, medianUs: percentile(t, 0.5), p99Us: percentile(t, 0.99) });
  };
  await rt('Atomics.wait (main blocks; floor)', () => {
    submit(w, 'seal', 0, 0);
    const target = w.submitted;
    for (;;) {
      const v = Atomics.load(w.ctl, CTL_DONE);
      if (v >= target) break;
      if (Atomics.wait(w.ctl, CTL_DONE, v, STUCK_MS) === 'timed-out') throw new Error(`crypto worker did not answer in ${STUCK_MS} ms`);
    }
  });
  await rt('Atomics.waitAsync (event loop free)', async () => {
    submit(w, 'seal', 0, 0);
    await waitAtLeast(w.ctl, CTL_DONE, w.submitted);
  });
  const { worker } = startWorker('port');
  const replies: Array<() => void> = [];
  worker.on('message', () => replies.shift()?.());
  await rt('MessagePort ping', () => {
    return new Promise<void>((resolve) => {
      replies.push(resolve);
      worker.postMessage(0);
    });
  });
  await worker.terminate();
  return out;
}

/** Median µs the main thread spends filling one ring slot (copy of 128 packets, headers, lengths), without the hand-off. */
function copyCostUs(w: RingWorker, op: Op): number {
  const slot = w.submitted % DEPTH;
  const m = slot * META_STRIDE;
  const base = slot * BATCH;
  const t: number[] = [];
  for (let r = 0; r < 400; r++) {
    const s = performance.now();
    for (let i = 0; i < BATCH; i++) {
      const off = (base + i) * SLOT;
      if (op === 'seal') {
        w.input.set(plain[i], off);
        writeHeader(w.output, off, i);
        w.meta[m + META_LENS + i] = PACKET;
      } else {
        w.input.set(sealed[i], off);
        w.meta[m + META_LENS + i] = DATAGRAM;
      }
      w.meta[m + META_KEYS + i] = 0;
    }
    t.push((performance.now() - s) * 1000);
  }
  t.sort((a, b) => a - b);
  return percentile(t, 0.5);
}

// ---- the rounds ----

interface CaseDef {
  name: string;
  op: Op;
  workers: number;
  work: boolean;
}

const CASES: CaseDef[] = [];
for (const op of ['seal', 'open'] as const) {
  for (let n = 0; n <= MAX_WORKERS; n++) CASES.push({ name: `${op} ${n === 0 ? 'inline' : `${n}w`}`, op, workers: n, work: false });
  for (let n = 0; n <= 2; n++) CASES.push({ name: `${op} ${n === 0 ? 'inline' : `${n}w`} +work`, op, workers: n, work: true });
}

interface Row {
  pps: number;
  ratio: number;
  mainShare: number;
  mainUsPerBatch: number;
  procNsPerPacket: number;
}

function row(s: Sample, inlinePps: number): Row {
  const pps = (s.packets / s.ms) * 1000;
  return {
    pps,
    ratio: pps / inlinePps,
    mainShare: s.mainCpuMs / s.ms,
    mainUsPerBatch: (s.mainCpuMs * 1000) / Math.max(1, s.batches),
    procNsPerPacket: (s.procCpuMs * 1e6) / Math.max(1, s.packets),
  };
}

function gbit(pps: number): number {
  return (pps * PACKET * 8) / 1e9;
}

function span(xs: readonly number[], f: (x: number) => string): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = percentile(s, 0.5);
  return s.length === 1 ? f(med) : `${f(med)} (${f(s[0] ?? med)}–${f(s[s.length - 1] ?? med)})`;
}

async function main(): Promise<void> {
  const pool: RingWorker[] = [];
  for (let i = 0; i < MAX_WORKERS; i++) pool.push(ringWorker());
  for (const w of pool) await checkWorker(w);
  console.log(
    `crypto-workers: ${PACKET}-byte packets, batches of ${BATCH}, ring depth ${DEPTH}/worker, ${RUNS} rounds x ${WINDOW_MS} ms, node ${process.version}, ${availableParallelism()} CPUs usable`,
  );
  console.log('worker seal/open checked against inline open/seal: ok');
  const results = new Map<string, Row[]>();
  const lat = new Map<string, Latency[]>();
  const loads: string[] = [];
  const copies = new Map<Op, number[]>();
  for (let r = 0; r < RUNS; r++) {
    const la0 = loadavg()[0] ?? 0;
    const round = new Map<string, Sample>();
    for (const c of CASES) {
      // The emulated other work: as long as inline crypto of one batch took in this round.
      const ref = round.get(`${c.op} inline`);
      const workUs = c.work && ref !== undefined ? (ref.ms * 1000) / ref.batches : 0;
      const s = c.workers === 0 ? inlineRun(c.op, workUs) : await workerRun(pool, c.workers, c.op, workUs);
      round.set(c.name, s);
      const base = round.get(c.work ? `${c.op} inline +work` : `${c.op} inline`) ?? s;
      const rw = row(s, (base.packets / base.ms) * 1000);
      const list = results.get(c.name) ?? [];
      list.push(rw);
      results.set(c.name, list);
      const w = c.work ? ` (work ${workUs.toFixed(0)} µs/batch)` : '';
      console.log(
        `round ${r + 1} ${c.name.padEnd(18)} ${(rw.pps / 1000).toFixed(0).padStart(6)} kpps ${rw.ratio.toFixed(2)}x main ${(rw.mainShare * 100).toFixed(0)}%${w}`,
      );
    }
    const pool0 = pool[0];
    if (pool0 === undefined) throw new Error('no worker');
    for (const l of await latencies(pool0)) {
      const list = lat.get(l.name) ?? [];
      list.push(l);
      lat.set(l.name, list);
    }
    for (const op of ['seal', 'open'] as const) {
      const list = copies.get(op) ?? [];
      list.push(copyCostUs(pool0, op));
      copies.set(op, list);
    }
    loads.push(`${la0.toFixed(2)}→${(loadavg()[0] ?? 0).toFixed(2)}`);
  }
  for (const w of pool) stopWorker(w);

  console.log(`\nload average (1 min) at start→end of each round: ${loads.join(', ')}`);
  console.log('median over rounds (min–max); ratio to inline of the same round (+work: to inline +work)\n');
  console.log('| case | packets/s | Gbit/s | vs inline | main thread busy | main CPU per batch, µs | CPU per packet, all threads, ns |');
  console.log('|---|---|---|---|---|---|---|');
  for (const c of CASES) {
    const rows = results.get(c.name) ?? [];
    const k = (x: number): string => `${(x / 1000).toFixed(0)}k`;
    console.log(
      `| ${c.name} | ${span(
        rows.map((x) => x.pps),
        k,
      )} | ${span(
        rows.map((x) => gbit(x.pps)),
        (x) => x.toFixed(2),
      )} | ${span(
        rows.map((x) => x.ratio),
        (x) => `${x.toFixed(2)}x`,
      )} | ${span(
        rows.map((x) => x.mainShare * 100),
        (x) => `${x.toFixed(0)}%`,
      )} | ${span(
        rows.map((x) => x.mainUsPerBatch),
        (x) => x.toFixed(0),
      )} | ${span(
        rows.map((x) => x.procNsPerPacket),
        (x) => x.toFixed(0),
      )} |`,
    );
  }
  console.log('\n| hand-off of an empty batch, round trip | median µs | p99 µs |');
  console.log('|---|---|---|');
  for (const [name, ls] of lat) {
    console.log(
      `| ${name} | ${span(
        ls.map((l) => l.medianUs),
        (x) => x.toFixed(1),
      )} | ${span(
        ls.map((l) => l.p99Us),
        (x) => x.toFixed(0),
      )} |`,
    );
  }
  for (const [op, us] of copies) {
    console.log(`main thread filling one ring slot for ${op} (copy of ${BATCH} packets, headers): ${span(us, (x) => x.toFixed(1))} µs`);
  }
  await Promise.all(pool.map((w) => w.worker.terminate()));
}

await main();
