/**
 * 100,000 random and malformed datagrams into decapsulate, from a seeded
 * generator (reproducible): random bytes, valid messages truncated, extended
 * and bit-flipped, and well-sized messages of every type with random bodies.
 * Nothing may throw; every outcome is one of the typed results.
 */
import { describe, expect, it } from 'vitest';
import type { DecapResult, DropReason } from '../../src/protocol/device.js';
import { SRC_A, SRC_B, expectKind, handshake, makePair, packet } from './helpers.js';

const REASONS: ReadonlySet<DropReason> = new Set<DropReason>([
  'malformed',
  'unknown-index',
  'unknown-peer',
  'replay',
  'bad-auth',
  'bad-mac',
  'bad-cookie',
  'stale-timestamp',
  'handshake-flood',
  'rate-limited',
  'expired',
  'invalid-key',
  'unexpected-message',
]);

function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

describe('decapsulate fuzzing', () => {
  it('survives 100,000 random and malformed datagrams with typed results', async () => {
    const p = await makePair({ seed: 7 });
    handshake(p);
    const rnd = prng(0xc0ffee);
    const bytes = (n: number): Uint8Array => {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = rnd() & 0xff;
      return b;
    };

    // Valid templates, captured once.
    const out = new Uint8Array(4096);
    const transport: Uint8Array[] = [];
    for (let i = 0; i < 64; i++) {
      const buf = new Uint8Array(256);
      transport.push(buf.slice(0, p.peerB.encapsulate(packet(1 + (i % 100), i), buf)));
    }
    p.clock.advance(6000);
    const initiation = p.peerB.initiateHandshake() as Uint8Array;
    // A response to a fresh initiation from b, so it has the right shape and macs for a.
    p.clock.advance(6000);
    const initFromB = p.peerA.initiateHandshake() as Uint8Array;
    const resp = expectKind(p.a.decapsulate(initFromB, SRC_B, out), 'handshake').reply as Uint8Array;
    p.b.setUnderLoad(true);
    const cookieReply = expectKind(p.b.decapsulate(p.peerB.initiateHandshake() ?? initiation, SRC_A, out), 'handshake').reply as Uint8Array;
    p.b.setUnderLoad(false);
    const templates = [initiation, resp, cookieReply, ...transport];

    const counts = new Map<string, number>();
    const N = 100_000;
    let dataFromMutation = 0;
    for (let i = 0; i < N; i++) {
      const mode = rnd() % 7;
      let d: Uint8Array;
      let mutatedTransport = false;
      const t = templates[rnd() % templates.length];
      switch (mode) {
        case 0: // random bytes, random length
          d = bytes(rnd() % 300);
          break;
        case 1: // right size and type, random body
          d = bytes([148, 92, 64, 32 + (rnd() % 200)][rnd() % 4]);
          d[0] = 1 + (rnd() % 4);
          d[1] = d[2] = d[3] = 0;
          break;
        case 2: // truncated
          d = t.slice(0, rnd() % t.length);
          break;
        case 3: {
          // extended
          const ext = bytes(1 + (rnd() % 40));
          d = new Uint8Array(t.length + ext.length);
          d.set(t);
          d.set(ext, t.length);
          break;
        }
        case 4: {
          // 1-3 bit flips
          d = Uint8Array.from(t);
          const flips = 1 + (rnd() % 3);
          for (let f = 0; f < flips; f++) d[rnd() % d.length] ^= 1 << (rnd() % 8);
          mutatedTransport = t[0] === 4 && !d.every((x, j) => x === t[j]);
          break;
        }
        case 5: // a valid message replayed as is
          d = t;
          break;
        default: {
          // valid prefix, random tail of the same size
          d = Uint8Array.from(t);
          const from = rnd() % d.length;
          d.set(bytes(d.length - from), from);
          mutatedTransport = t[0] === 4 && from < d.length && !d.every((x, j) => x === t[j]);
        }
      }
      if (i % 1000 === 0) p.b.setUnderLoad(!p.b.isUnderLoad);
      const dev = rnd() % 2 === 0 ? p.b : p.a;
      let r: DecapResult;
      try {
        r = dev.decapsulate(d, rnd() % 2 ? SRC_A : SRC_B, out);
      } catch (err) {
        throw new Error(`decapsulate threw on input ${i} (mode ${mode}, ${Buffer.from(d).toString('hex')}): ${String(err)}`);
      }
      expect(['data', 'handshake', 'cookie', 'error']).toContain(r.kind);
      if (r.kind === 'error') expect(REASONS.has(r.code)).toBe(true);
      if (r.kind === 'data' && mutatedTransport) dataFromMutation++;
      const key = r.kind === 'error' ? r.code : r.kind;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      if (r.kind === 'handshake' || r.kind === 'data') {
        // Keep state bounded: forget what a successful message queued.
        p.peerA.takeOutbound();
        p.peerB.takeOutbound();
      }
    }
    if (process.env.FUZZ_VERBOSE) console.log(JSON.stringify([...counts]));
    // A modified transport message must never authenticate.
    expect(dataFromMutation).toBe(0);
    const total = [...counts.values()].reduce((x, y) => x + y, 0);
    expect(total).toBe(N);
    // The generator reached the interesting paths, not just the size check.
    for (const k of ['malformed', 'unknown-index', 'bad-mac', 'bad-auth', 'replay']) {
      expect(counts.get(k) ?? 0, `${k} in ${JSON.stringify([...counts])}`).toBeGreaterThan(0);
    }
  }, 120_000);
});
