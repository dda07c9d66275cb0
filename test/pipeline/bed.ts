/**
 * Two real WireGuardDevices (real crypto, simulated clock) behind two real
 * Pipelines, joined by the in-memory fakes: everything of the data path
 * but the kernel.
 *
 *   A: 10.0.0.1, fd00::1  192.0.2.1:51820 ══ FakeNetwork ══ 192.0.2.2:51821  B: 10.0.0.2, fd00::2
 */
import { Writable } from 'node:stream';
import type { PeerConfig } from '../../src/config/index.js';
import { Yielder } from '../../src/cooperative.js';
import { createLogger } from '../../src/log.js';
import { PeerRegistry, type Peer } from '../../src/peers/registry.js';
import { Pipeline } from '../../src/pipeline/pipeline.js';
import { WireGuardDevice } from '../../src/protocol/device.js';
import type { Endpoint } from '../../src/transport/endpoint.js';
import { backend, seededRandom, SimClock } from '../protocol/helpers.js';
import { FakeNetwork, type FakeTransport, FakeTun } from './fakes.js';

export interface Side {
  device: WireGuardDevice<Peer>;
  peers: PeerRegistry;
  tun: FakeTun;
  transport: FakeTransport;
  pipeline: Pipeline;
  /** The other side, as this side knows it. */
  peer: Peer;
  logs: { level: number; msg: string }[];
}

export interface Bed {
  clock: SimClock;
  net: FakeNetwork;
  a: Side;
  b: Side;
  /** Runs both pipelines' ticks (timers, under-load window, transport counters). */
  tick(): void;
}

export interface BedOptions {
  /** Whether B knows A's endpoint from its config (default false: B learns it from A's packets). */
  bKnowsA?: boolean;
  mtu?: number;
  seed?: number;
  /** B's receive batch size (default 128). */
  bBatch?: number;
}

function peerConfig(publicKey: Uint8Array, allowedIPs: string[]): PeerConfig {
  return { publicKey: Buffer.from(publicKey).toString('base64'), publicKeyBytes: Uint8Array.from(publicKey), allowedIPs, persistentKeepalive: 0 };
}

function capture(): { logs: { level: number; msg: string }[]; stream: Writable } {
  const logs: { level: number; msg: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as { level: number; msg: string });
      done();
    },
  });
  return { logs, stream };
}

export async function makeBed(opts: BedOptions = {}): Promise<Bed> {
  const crypto = await backend('sodium-native');
  const clock = new SimClock();
  const net = new FakeNetwork();
  const seed = opts.seed ?? 7;
  const mtu = opts.mtu ?? 1420;
  const rnd = [seededRandom(seed), seededRandom(seed + 1)];
  const keys = rnd.map((r) => {
    const k = new Uint8Array(32);
    r(k);
    return k;
  });
  const devices = keys.map((privateKey, i) => new WireGuardDevice<Peer>({ crypto, privateKey, random: rnd[i], now: clock.now, wallClock: clock.wallClock }));
  const transports = [net.transport('192.0.2.1', 51820), net.transport('192.0.2.2', 51821, { batchSize: opts.bBatch })];
  const allowed = [
    ['10.0.0.2/32', 'fd00::2/128'],
    ['10.0.0.1/32', 'fd00::1/128'],
  ];
  const endpoints: (Endpoint | undefined)[] = [
    { address: '192.0.2.2', port: 51821, family: 4 },
    opts.bKnowsA ? { address: '192.0.2.1', port: 51820, family: 4 } : undefined,
  ];
  const sides: Side[] = [];
  for (let i = 0; i < 2; i++) {
    const device = devices[i];
    const peers = new PeerRegistry(device);
    const peer = await peers.add(peerConfig(devices[1 - i].publicKey, allowed[i]), endpoints[i], new Yielder());
    const tun = new FakeTun();
    const { logs, stream } = capture();
    const log = createLogger({ level: 'debug', pretty: false, destination: stream });
    const pipeline = new Pipeline({ peers, tun, transport: transports[i], log, mtu, now: clock.now });
    pipeline.start();
    sides.push({ device, peers, tun, transport: transports[i], pipeline, peer, logs });
  }
  const [a, b] = sides;
  return {
    clock,
    net,
    a,
    b,
    tick() {
      a.pipeline.tick();
      b.pipeline.tick();
    },
  };
}

/** An IPv4 packet (UDP, no checksum: nothing on the path checks it) of `total` bytes. */
export function ipv4(src: string, dst: string, total = 60, tag = 0): Uint8Array {
  const p = new Uint8Array(total);
  p[0] = 0x45;
  p[2] = total >> 8;
  p[3] = total & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(src.split('.').map(Number), 12);
  p.set(dst.split('.').map(Number), 16);
  for (let i = 20; i < total; i++) p[i] = (i + tag) & 0xff;
  return p;
}

/** An IPv6 packet with `payload` bytes after the 40-byte header. Addresses as fd00::N. */
export function ipv6(srcLast: number, dstLast: number, payload = 20): Uint8Array {
  const p = new Uint8Array(40 + payload);
  p[0] = 0x60;
  p[4] = payload >> 8;
  p[5] = payload & 0xff;
  p[6] = 17;
  p[7] = 64;
  p[8] = 0xfd;
  p[23] = srcLast;
  p[24] = 0xfd;
  p[39] = dstLast;
  return p;
}

/** Completes a handshake A → B and lets the confirmation arrive: both sides have a current session. */
export function connect(bed: Bed): void {
  bed.a.tun.read([ipv4('10.0.0.1', '10.0.0.2', 60, 99)]);
  bed.net.pump();
}
