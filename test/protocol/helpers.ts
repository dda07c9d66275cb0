/** Shared fixtures for the protocol tests: a simulated clock, seeded randomness, device pairs. */
import { loadCrypto } from '../../src/crypto/index.js';
import type { CryptoBackend, CryptoBackendName } from '../../src/crypto/types.js';
import { WireGuardDevice } from '../../src/protocol/device.js';
import type { DecapResult, ProtocolConstants, ProtocolPeer, SourceAddress } from '../../src/protocol/device.js';

export const BACKENDS: CryptoBackendName[] = ['sodium-native', 'libsodium-wrappers'];

const cache = new Map<string, CryptoBackend>();
export async function backend(name: CryptoBackendName = 'sodium-native'): Promise<CryptoBackend> {
  let b = cache.get(name);
  if (b === undefined) {
    b = await loadCrypto(name);
    cache.set(name, b);
  }
  return b;
}

/** xorshift128+ seeded generator: deterministic "randomness" for devices and fuzzing. */
export function seededRandom(seed: number): (out: Uint8Array) => void {
  let s0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
  let s1 = (seed * 2654435761) >>> 0 || 2;
  return (out: Uint8Array): void => {
    for (let i = 0; i < out.length; i++) {
      let x = s0;
      const y = s1;
      s0 = y;
      x ^= x << 23;
      x ^= x >>> 17;
      x ^= y ^ (y >>> 26);
      s1 = x >>> 0;
      out[i] = (s0 + s1) & 0xff;
    }
  };
}

export class SimClock {
  mono = 1_000_000;
  wall = 1_700_000_000_000;
  /** How often the monotonic clock was read (the batch-clock tests count them). */
  reads = 0;
  now = (): number => {
    this.reads++;
    return this.mono;
  };
  wallClock = (): number => this.wall;
  advance(ms: number): void {
    this.mono += ms;
    this.wall += ms;
  }
}

export const SRC_A: SourceAddress = { address: '10.0.0.1', port: 51820 };
export const SRC_B: SourceAddress = { address: '10.0.0.2', port: 51821 };

export interface Pair {
  crypto: CryptoBackend;
  clock: SimClock;
  a: WireGuardDevice;
  b: WireGuardDevice;
  /** b as seen by a */
  peerB: ProtocolPeer;
  /** a as seen by b */
  peerA: ProtocolPeer;
}

export async function makePair(
  opts: { psk?: Uint8Array; constants?: Partial<ProtocolConstants>; backendName?: CryptoBackendName; seed?: number } = {},
): Promise<Pair> {
  const crypto = await backend(opts.backendName);
  const clock = new SimClock();
  const seed = opts.seed ?? 1;
  const rndA = seededRandom(seed);
  const rndB = seededRandom(seed + 1000);
  const keyA = new Uint8Array(32);
  const keyB = new Uint8Array(32);
  rndA(keyA);
  rndB(keyB);
  const common = { crypto, now: clock.now, wallClock: clock.wallClock, constants: opts.constants };
  const a = new WireGuardDevice({ ...common, privateKey: keyA, random: rndA });
  const b = new WireGuardDevice({ ...common, privateKey: keyB, random: rndB });
  const peerB = a.addPeer({ publicKey: b.publicKey, presharedKey: opts.psk });
  const peerA = b.addPeer({ publicKey: a.publicKey, presharedKey: opts.psk });
  return { crypto, clock, a, b, peerB, peerA };
}

/** A fake IPv4-looking packet of `len` bytes with recognisable content. */
export function packet(len: number, tag = 0): Uint8Array {
  const p = new Uint8Array(len);
  for (let i = 0; i < len; i++) p[i] = (i * 7 + tag) & 0xff;
  if (len > 0) p[0] = 0x45;
  return p;
}

export function expectKind<K extends DecapResult['kind']>(r: DecapResult, kind: K): Extract<DecapResult, { kind: K }> {
  if (r.kind !== kind) {
    throw new Error(`expected ${kind}, got ${r.kind}${r.kind === 'error' ? ` (${r.code})` : ''}`);
  }
  return r as Extract<DecapResult, { kind: K }>;
}

/**
 * Runs a complete handshake initiated by `from` (a or b) and delivers the
 * initiator's first transport datagram(s) so the responder confirms.
 * Returns the datagrams the initiator flushed.
 */
export function handshake(p: Pair, initiator: 'a' | 'b' = 'a'): Uint8Array[] {
  const [ini, res, iniPeer, srcIni, srcRes] = initiator === 'a' ? [p.a, p.b, p.peerB, SRC_A, SRC_B] : [p.b, p.a, p.peerA, SRC_B, SRC_A];
  const init = iniPeer.initiateHandshake();
  if (init === undefined) throw new Error('no initiation');
  const out = new Uint8Array(2048);
  const r1 = expectKind(res.decapsulate(init, srcIni, out), 'handshake');
  if (r1.reply === undefined) throw new Error('no response');
  const r2 = expectKind(ini.decapsulate(r1.reply, srcRes, out), 'handshake');
  for (const d of r2.flush) res.decapsulate(d, srcIni, out);
  return r2.flush;
}
