/**
 * Protocol micro-benchmarks: transport encapsulate / decapsulate of a
 * 1420-byte packet and full handshakes per second, for both crypto backends.
 * Each backend's raw aeadSeal / aeadOpen of the same padded size is measured
 * in the same run, so the protocol overhead reads as a ratio that survives a
 * noisy shared machine.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/protocol.js [--quick]
 */
import { loadCrypto } from '../src/crypto/index.js';
import type { CryptoBackend, CryptoBackendName } from '../src/crypto/types.js';
import { WireGuardDevice } from '../src/protocol/device.js';
import type { ProtocolPeer } from '../src/protocol/device.js';

const QUICK = process.argv.includes('--quick');
const PACKET = 1420;
const PADDED = 1424;
const N = QUICK ? 20_000 : 200_000;
const HANDSHAKES = QUICK ? 200 : 2_000;
const SRC = { address: '192.0.2.1', port: 51820 };

function nsPer(n: number, fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / n;
}

/** Best of `rounds` runs, which is the least disturbed by other load. */
function best(rounds: number, n: number, fn: () => void): number {
  let b = Infinity;
  for (let i = 0; i < rounds; i++) b = Math.min(b, nsPer(n, fn));
  return b;
}

interface Pair {
  a: WireGuardDevice;
  b: WireGuardDevice;
  peerB: ProtocolPeer;
  peerA: ProtocolPeer;
  clock: { mono: number; wall: number };
}

function pair(crypto: CryptoBackend): Pair {
  const clock = { mono: 1e6, wall: 1.7e12 };
  const opts = { crypto, now: () => clock.mono, wallClock: () => clock.wall };
  const a = new WireGuardDevice({ ...opts, privateKey: crypto.generatePrivateKey() });
  const b = new WireGuardDevice({ ...opts, privateKey: crypto.generatePrivateKey() });
  const peerB = a.addPeer({ publicKey: b.publicKey });
  const peerA = b.addPeer({ publicKey: a.publicKey });
  return { a, b, peerB, peerA, clock };
}

function fullHandshake(p: Pair, out: Uint8Array): void {
  p.clock.mono += 6000;
  p.clock.wall += 6000;
  const init = p.peerB.initiateHandshake();
  if (!init) throw new Error('no initiation');
  const r1 = p.b.decapsulate(init, SRC, out);
  if (r1.kind !== 'handshake' || !r1.reply) throw new Error(`handshake failed: ${r1.kind}`);
  const r2 = p.a.decapsulate(r1.reply, SRC, out);
  if (r2.kind !== 'handshake') throw new Error(`response failed: ${r2.kind}`);
  for (const f of r2.flush) p.b.decapsulate(f, SRC, out);
}

async function benchBackend(name: CryptoBackendName): Promise<Record<string, number>> {
  const crypto = await loadCrypto(name);
  const key = new Uint8Array(32).fill(1);
  const nonce = new Uint8Array(12);
  const plain = new Uint8Array(PADDED).fill(0x45);
  const sealed = new Uint8Array(PADDED + 16);
  const opened = new Uint8Array(PADDED);
  const rounds = QUICK ? 2 : 5;

  const seal = best(rounds, N, () => {
    for (let i = 0; i < N; i++) {
      nonce[4] = i & 0xff;
      crypto.aeadSeal(sealed, plain, null, nonce, key);
    }
  });
  nonce[4] = 0;
  crypto.aeadSeal(sealed, plain, null, nonce, key);
  const open = best(rounds, N, () => {
    for (let i = 0; i < N; i++) crypto.aeadOpen(opened, sealed, null, nonce, key);
  });

  const p = pair(crypto);
  const out = new Uint8Array(65536);
  fullHandshake(p, out);
  const pkt = new Uint8Array(PACKET).fill(0x45);
  const dg = new Uint8Array(PACKET + 64);
  const encap = best(rounds, N, () => {
    for (let i = 0; i < N; i++) if (p.peerB.encapsulate(pkt, dg) === 0) throw new Error('no session');
  });

  // Decapsulation needs fresh counters: encrypt a small batch (untimed, kept
  // cache-sized like the reference loop), then time only its decryption.
  const BATCH = 64;
  const grams: Uint8Array[] = [];
  for (let i = 0; i < BATCH; i++) grams.push(new Uint8Array(PACKET + 64));
  const lens = new Int32Array(BATCH);
  const fill = (): void => {
    for (let i = 0; i < BATCH; i++) lens[i] = p.peerB.encapsulate(pkt, grams[i]);
  };
  const views = (): Uint8Array[] => grams.map((g, i) => g.subarray(0, lens[i]));
  let decap = Infinity;
  let replay = Infinity;
  for (let r = 0; r < rounds; r++) {
    let t = 0n;
    let tr = 0n;
    for (let done = 0; done < N; done += BATCH) {
      fill();
      const v = views();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < BATCH; i++) if (p.b.decapsulate(v[i], SRC, out).kind !== 'data') throw new Error('decap failed');
      const t1 = process.hrtime.bigint();
      // Replays are refused before decrypting: the cost of a replay flood.
      for (let i = 0; i < BATCH; i++) p.b.decapsulate(v[i], SRC, out);
      tr += process.hrtime.bigint() - t1;
      t += t1 - t0;
    }
    decap = Math.min(decap, Number(t) / N);
    replay = Math.min(replay, Number(tr) / N);
  }

  const hp = pair(crypto);
  fullHandshake(hp, out);
  const hsNs = best(QUICK ? 1 : 3, HANDSHAKES, () => {
    for (let i = 0; i < HANDSHAKES; i++) fullHandshake(hp, out);
  });
  return { seal, open, encap, decap, replay, handshakesPerSec: 1e9 / hsNs };
}

async function main(): Promise<void> {
  const rows: string[] = [];
  for (const name of ['sodium-native', 'libsodium-wrappers'] as const) {
    const r = await benchBackend(name);
    const us = (ns: number): string => (ns / 1000).toFixed(2);
    rows.push(
      `${name.padEnd(19)} seal ${us(r.seal)} µs  encapsulate ${us(r.encap)} µs (x${(r.encap / r.seal).toFixed(2)})  ` +
        `open ${us(r.open)} µs  decapsulate ${us(r.decap)} µs (x${(r.decap / r.open).toFixed(2)})  ` +
        `replayed drop ${us(r.replay)} µs  handshakes/s ${r.handshakesPerSec.toFixed(0)}`,
    );
  }
  console.log(`protocol bench: ${PACKET}-byte packets (padded ${PADDED}), N=${N}, handshake = initiation + response + confirm, both sides in-process`);
  for (const r of rows) console.log(r);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
