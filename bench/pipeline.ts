/**
 * The data path's JavaScript per packet, without the kernel: two real
 * Pipelines (real WireGuardDevices, sodium-native, the peer registry) joined
 * by in-memory seams whose slots are reused Buffers of one slab, as the
 * native TUN and UDP layers hand them over. Outbound: one TUN batch of 128
 * packets through Pipeline.onTunBatch to one sendBatch (which copies each
 * datagram into the other side's receive slots, as the kernel would);
 * inbound: that batch through Pipeline.onDatagrams to one writeBatch. The
 * raw aeadSeal / aeadOpen of the same size are measured in the same run, so
 * the pipeline and protocol overhead reads as a difference that survives a
 * noisy machine.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/pipeline.js [--quick] [--size N]
 */
import { Writable } from 'node:stream';
import { Yielder } from '../src/cooperative.js';
import { loadCrypto } from '../src/crypto/index.js';
import { createLogger } from '../src/log.js';
import { type Peer, PeerRegistry } from '../src/peers/registry.js';
import { Pipeline } from '../src/pipeline/pipeline.js';
import { WireGuardDevice } from '../src/protocol/device.js';
import type { DatagramBatchHandler, DatagramTransport } from '../src/transport/datagram-transport.js';
import { ENDPOINT_SIZE, type EncodedEndpoint, encodeEndpoint } from '../src/transport/endpoint-codec.js';
import type { PacketBatchHandler, PacketDevice } from '../src/tun/packet-device.js';

const QUICK = process.argv.includes('--quick');
const sizeArg = process.argv.indexOf('--size');
const SIZE = sizeArg > 0 ? Number(process.argv[sizeArg + 1]) : 1420;
const MTU = 1420;
const BATCH = 128;
const BATCHES = QUICK ? 200 : 2000;
const ROUNDS = QUICK ? 2 : 5;
const SLOT = 2048;

function slab(n: number): Buffer[] {
  const s = Buffer.allocUnsafeSlow(n * SLOT);
  return Array.from({ length: n }, (_, i) => s.subarray(i * SLOT, (i + 1) * SLOT));
}

class BenchTun implements PacketDevice {
  handler: PacketBatchHandler | undefined;
  written = 0;
  onPackets(h: PacketBatchHandler): void {
    this.handler = h;
  }
  onError(): void {}
  writeBatch(_packets: readonly Uint8Array[], count: number): number {
    this.written += count;
    return count;
  }
}

/** Sends into the other side's reused receive slots; the test delivers them by hand. */
class BenchTransport implements DatagramTransport {
  readonly kind = 'memory';
  readonly maxDatagram = 0;
  handler: DatagramBatchHandler | undefined;
  peer: BenchTransport | undefined;
  readonly slots = slab(BATCH);
  readonly lengths = new Uint32Array(BATCH);
  readonly sources = new Uint8Array(BATCH * ENDPOINT_SIZE);
  count = 0;
  /** Single sends (handshakes), delivered one by one. */
  readonly singles: Uint8Array[] = [];
  constructor(
    readonly address: EncodedEndpoint,
    readonly port: number,
  ) {}
  onBatch(h: DatagramBatchHandler): void {
    this.handler = h;
  }
  onError(): void {}
  sendBatch(bufs: readonly Uint8Array[], lengths: Uint32Array, _dests: readonly EncodedEndpoint[], count: number): void {
    const to = this.peer;
    if (to === undefined) return;
    // Whole slots (no view to make): a copy the bench's own cost keeps small.
    for (let i = 0; i < count; i++) {
      to.slots[to.count].set(bufs[i]);
      to.lengths[to.count] = lengths[i];
      to.count++;
    }
  }
  send(buf: Uint8Array, length: number): void {
    this.peer?.singles.push(Uint8Array.from(buf.subarray(0, length)));
  }
  /** Hands what arrived to the pipeline as one batch. */
  deliver(): void {
    const h = this.handler;
    if (h === undefined) throw new Error('nobody reads');
    while (this.singles.length > 0) {
      const d = this.singles.shift() ?? new Uint8Array(0);
      this.slots[0].set(d);
      this.lengths[0] = d.length;
      h(this.slots, this.lengths, this.sources, 1);
    }
    if (this.count > 0) h(this.slots, this.lengths, this.sources, this.count);
    this.count = 0;
  }
  sendFailures(): { count: number; last: string | undefined } {
    return { count: 0, last: undefined };
  }
  oversizedReceived(): number {
    return 0;
  }
  groStats(): { gro: boolean; reads: number; datagrams: number } {
    return { gro: false, reads: 0, datagrams: 0 };
  }
  setMark(): void {}
  async close(): Promise<void> {}
}

function ipv4(total: number): Buffer {
  const p = Buffer.alloc(total, 0x5a);
  p[0] = 0x45;
  p[1] = 0;
  p.writeUInt16BE(total, 2);
  p[8] = 64;
  p[9] = 17;
  p.set([10, 0, 0, 1], 12);
  p.set([10, 0, 0, 2], 16);
  return p;
}

async function main(): Promise<void> {
  const crypto = await loadCrypto('sodium-native');
  // The daemon's clocks (src/daemon.ts: performance.now for the protocol's
  // timers, Date.now for timestamps): a clock read is part of the cost.
  const now = (): number => performance.now();
  const silent = new Writable({ write: (_c, _e, done) => done() });
  const log = createLogger({ level: 'warn', pretty: false, destination: silent });
  const addrs = [encodeEndpoint('192.0.2.1', 51820), encodeEndpoint('192.0.2.2', 51821)];
  const devices = [0, 1].map(() => new WireGuardDevice<Peer>({ crypto, privateKey: crypto.generatePrivateKey(), now, wallClock: Date.now }));
  const transports = addrs.map((a, i) => new BenchTransport(a, 51820 + i));
  transports[0].peer = transports[1];
  transports[1].peer = transports[0];
  const tuns = [new BenchTun(), new BenchTun()];
  const allowed = [['10.0.0.2/32'], ['10.0.0.1/32']];
  const endpoints = [
    { address: '192.0.2.2', port: 51821, family: 4 as const },
    { address: '192.0.2.1', port: 51820, family: 4 as const },
  ];
  // Every datagram comes from the other side's one address.
  for (let i = 0; i < 2; i++) for (let j = 0; j < BATCH; j++) transports[i].sources.set(addrs[1 - i].subarray(0, ENDPOINT_SIZE), j * ENDPOINT_SIZE);
  for (let i = 0; i < 2; i++) {
    const peers = new PeerRegistry(devices[i]);
    const other = devices[1 - i].publicKey;
    await peers.add(
      { publicKey: Buffer.from(other).toString('base64'), publicKeyBytes: Uint8Array.from(other), allowedIPs: allowed[i], persistentKeepalive: 0 },
      endpoints[i],
      new Yielder(),
    );
    new Pipeline({ peers, tun: tuns[i], transport: transports[i], log, mtu: MTU, now }).start();
  }
  const tunSlots = slab(BATCH);
  const pkt = ipv4(SIZE);
  for (const s of tunSlots) s.set(pkt);
  const lengths = new Uint32Array(BATCH).fill(SIZE);
  const readA = tuns[0].handler;
  if (readA === undefined) throw new Error('pipeline A did not start');
  // Handshake: A's first packet starts it; deliver until B has written it.
  readA(tunSlots, lengths, 1);
  for (let i = 0; i < 6 && tuns[1].written === 0; i++) {
    transports[1].deliver();
    transports[0].deliver();
  }
  if (tuns[1].written === 0) throw new Error('no session after the handshake');

  // Per batch (128 packets, ~0.25 ms): a batch the scheduler preempted is
  // slow, one it did not is not, so the 10th percentile of the batch times
  // is the uncontended cost even on a loaded machine (the mean of a round
  // moves with the load). Both figures are printed.
  let out = Infinity;
  let inb = Infinity;
  const outBatches: number[] = [];
  const inBatches: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    let to = 0n;
    let ti = 0n;
    const before = tuns[1].written;
    for (let b = 0; b < BATCHES; b++) {
      const t0 = process.hrtime.bigint();
      readA(tunSlots, lengths, BATCH);
      const t1 = process.hrtime.bigint();
      transports[1].deliver();
      const t2 = process.hrtime.bigint();
      to += t1 - t0;
      ti += t2 - t1;
      outBatches.push(Number(t1 - t0) / BATCH);
      inBatches.push(Number(t2 - t1) / BATCH);
    }
    if (tuns[1].written - before !== BATCH * BATCHES) throw new Error(`B wrote ${tuns[1].written - before} of ${BATCH * BATCHES}`);
    out = Math.min(out, Number(to) / (BATCH * BATCHES));
    inb = Math.min(inb, Number(ti) / (BATCH * BATCHES));
  }

  // The raw AEAD of the same datagram size, on the same reused-slot shape, timed per BATCH calls too.
  const padded = SIZE;
  const key = new Uint8Array(32).fill(1);
  const nonce = new Uint8Array(12);
  const plain = new Uint8Array(padded);
  const sealed = new Uint8Array(padded + 16);
  const opened = new Uint8Array(padded);
  let seal = Infinity;
  let open = Infinity;
  const sealBatches: number[] = [];
  const openBatches: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    let ts = 0n;
    let tp = 0n;
    for (let b = 0; b < BATCHES; b++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < BATCH; i++) crypto.aeadSeal(sealed, plain, null, nonce, key);
      const t1 = process.hrtime.bigint();
      for (let i = 0; i < BATCH; i++) crypto.aeadOpen(opened, sealed, null, nonce, key);
      const t2 = process.hrtime.bigint();
      ts += t1 - t0;
      tp += t2 - t1;
      sealBatches.push(Number(t1 - t0) / BATCH);
      openBatches.push(Number(t2 - t1) / BATCH);
    }
    seal = Math.min(seal, Number(ts) / (BATCH * BATCHES));
    open = Math.min(open, Number(tp) / (BATCH * BATCHES));
  }
  const p10 = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 10)];
  const ns = (v: number): string => v.toFixed(0).padStart(5);
  console.log(`pipeline bench: ${SIZE}-byte IPv4 packets, MTU ${MTU}, batches of ${BATCH}, ${BATCHES} batches x best of ${ROUNDS}, sodium-native`);
  console.log(`outbound (TUN batch -> sendBatch) ${ns(out)} ns/packet   raw seal ${ns(seal)} ns   rest ${ns(out - seal)} ns`);
  console.log(`inbound  (datagrams -> writeBatch) ${ns(inb)} ns/packet   raw open ${ns(open)} ns   rest ${ns(inb - open)} ns`);
  const [po, ps, pi, pp] = [p10(outBatches), p10(sealBatches), p10(inBatches), p10(openBatches)];
  console.log(
    `10th percentile of the batches: outbound ${ns(po)} - seal ${ns(ps)} = rest ${ns(po - ps)} ns; inbound ${ns(pi)} - open ${ns(pp)} = rest ${ns(pi - pp)} ns`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
