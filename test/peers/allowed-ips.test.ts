import { describe, expect, it } from 'vitest';
import { AllowedIps } from '../../src/peers/allowed-ips.js';
import { formatCidr, parseCidr, parseIp, type Cidr } from '../../src/peers/cidr.js';
import { Rng } from '../../bench/lib/config-fuzz.js';

/** Deterministic PRNG (the config fuzzer's mulberry32) so a failure reproduces. */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

function keyOf(c: Cidr): string {
  return `${c.family}|${Array.from(c.bytes).join('.')}|${c.bits}`;
}

function contains(c: Cidr, addr: Uint8Array): boolean {
  for (let bit = 0; bit < c.bits; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((c.bytes[bit >> 3] & mask) !== (addr[bit >> 3] & mask)) return false;
  }
  return true;
}

/** The obviously-correct model: a list of owned prefixes, scanned linearly. */
class BruteForce<T> {
  readonly owners = new Map<string, { cidr: Cidr; value: T }>();
  insert(cidr: Cidr, value: T): void {
    this.owners.set(keyOf(cidr), { cidr, value });
  }
  remove(cidr: Cidr, value: T): boolean {
    const e = this.owners.get(keyOf(cidr));
    if (e === undefined || e.value !== value) return false;
    this.owners.delete(keyOf(cidr));
    return true;
  }
  removeValue(value: T): number {
    let n = 0;
    for (const [k, e] of this.owners) {
      if (e.value === value) {
        this.owners.delete(k);
        n++;
      }
    }
    return n;
  }
  lookup(addr: Uint8Array): T | undefined {
    const family = addr.length === 4 ? 4 : 6;
    let best: { cidr: Cidr; value: T } | undefined;
    for (const e of this.owners.values()) {
      if (e.cidr.family === family && contains(e.cidr, addr) && (best === undefined || e.cidr.bits > best.cidr.bits)) best = e;
    }
    return best?.value;
  }
  prefixesOf(value: T): string[] {
    return [...this.owners.values()].filter((e) => e.value === value).map((e) => formatCidr(e.cidr));
  }
}

function clearHostBits(bytes: Uint8Array, bits: number): Uint8Array {
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return bytes;
}

/**
 * Random prefixes drawn from a small pool of "bases" so they nest and share
 * long common prefixes (the interesting trie cases), plus fully random ones.
 */
function makeGen(random: () => number, family: 4 | 6, lengths?: readonly number[]) {
  const size = family === 4 ? 4 : 16;
  const max = size * 8;
  const bases: Uint8Array[] = [];
  for (let i = 0; i < 8; i++) bases.push(Uint8Array.from({ length: size }, () => (random() * 256) | 0));
  const address = (): Uint8Array => {
    const out = Uint8Array.from(bases[(random() * bases.length) | 0]);
    // Keep a random-length head of a base, randomise the tail.
    const keep = (random() * (max + 1)) | 0;
    for (let bit = keep; bit < max; bit++) {
      const mask = 0x80 >> (bit & 7);
      if (random() < 0.5) out[bit >> 3] ^= mask;
    }
    if (random() < 0.1) for (let i = 0; i < size; i++) out[i] = (random() * 256) | 0;
    return out;
  };
  const prefix = (): Cidr => {
    const r = random();
    const bits = lengths !== undefined ? lengths[(random() * lengths.length) | 0] : r < 0.05 ? 0 : r < 0.25 ? max : (random() * (max + 1)) | 0;
    return { family, bytes: clearHostBits(address(), bits), bits };
  };
  return { address, prefix };
}

function bytesAt(addr: Uint8Array, offset: number): Uint8Array {
  const buf = new Uint8Array(offset + addr.length + 7).fill(0xa5);
  buf.set(addr, offset);
  return buf;
}

describe('AllowedIps', () => {
  it('does longest-prefix match on simple IPv4 and IPv6 cases', () => {
    const t = new AllowedIps<string>();
    t.insert('0.0.0.0/0', 'default');
    t.insert('10.0.0.0/8', 'ten');
    t.insert('10.1.0.0/16', 'ten-one');
    t.insert('10.1.2.3/32', 'host');
    t.insert('::/0', 'v6default');
    t.insert('fd00::/64', 'fd');
    t.insert('fd00::1/128', 'fdhost');
    const v4 = (s: string) => t.lookup(parseIp(s), 0, 4);
    const v6 = (s: string) => t.lookup(parseIp(s), 0, 6);
    expect(v4('10.1.2.3')).toBe('host');
    expect(v4('10.1.2.4')).toBe('ten-one');
    expect(v4('10.2.0.0')).toBe('ten');
    expect(v4('11.0.0.0')).toBe('default');
    expect(v4('255.255.255.255')).toBe('default');
    expect(v6('fd00::1')).toBe('fdhost');
    expect(v6('fd00::2')).toBe('fd');
    expect(v6('fd00:0:0:1::1')).toBe('v6default');
    expect(t.size).toBe(7);
    // Families are separate tables.
    t.remove('0.0.0.0/0', 'default');
    expect(v4('11.0.0.0')).toBeUndefined();
    expect(v6('2001:db8::')).toBe('v6default');
  });

  it('moves a prefix to a new owner and only removes a prefix for its owner', () => {
    const t = new AllowedIps<string>();
    t.insert('10.0.0.0/24', 'a');
    t.insert('10.0.0.0/24', 'b');
    expect(t.size).toBe(1);
    expect(t.lookup(parseIp('10.0.0.9'), 0, 4)).toBe('b');
    expect(t.prefixesOf('a')).toEqual([]);
    expect(t.prefixesOf('b').map(formatCidr)).toEqual(['10.0.0.0/24']);
    expect(t.remove('10.0.0.0/24', 'a')).toBe(false);
    expect(t.lookup(parseIp('10.0.0.9'), 0, 4)).toBe('b');
    expect(t.remove('10.0.0.0/24', 'b')).toBe(true);
    expect(t.lookup(parseIp('10.0.0.9'), 0, 4)).toBeUndefined();
    expect(t.size).toBe(0);
    expect(t.remove('10.0.0.0/24', 'b')).toBe(false);
  });

  it('reads addresses in place from a packet buffer at an offset', () => {
    const t = new AllowedIps<string>();
    t.insert('192.0.2.0/24', 'p4');
    t.insert('2001:db8::/32', 'p6');
    expect(t.lookup(bytesAt(parseIp('192.0.2.77'), 16), 16, 4)).toBe('p4');
    expect(t.lookup4(bytesAt(parseIp('192.0.3.77'), 16), 16)).toBeUndefined();
    expect(t.lookup(bytesAt(parseIp('2001:db8:ffff::1'), 24), 24, 6)).toBe('p6');
    expect(t.lookup6(bytesAt(parseIp('2001:db9::1'), 24), 24)).toBeUndefined();
  });

  it('lists entries in order and removes all prefixes of a value', () => {
    const t = new AllowedIps<string>();
    for (const c of ['10.0.0.0/8', '10.0.0.0/16', 'fd00::/8', '1.2.3.4/32', '0.0.0.0/0']) t.insert(c, 'x');
    t.insert('10.9.0.0/16', 'y');
    expect([...t.entries()].map(([c, v]) => `${formatCidr(c)}=${v}`)).toEqual([
      '0.0.0.0/0=x',
      '1.2.3.4/32=x',
      '10.0.0.0/8=x',
      '10.0.0.0/16=x',
      '10.9.0.0/16=y',
      'fd00::/8=x',
    ]);
    expect(t.prefixesOf('x').map(formatCidr)).toEqual(['0.0.0.0/0', '1.2.3.4/32', '10.0.0.0/8', '10.0.0.0/16', 'fd00::/8']);
    expect(t.removeValue('x')).toBe(5);
    expect(t.size).toBe(1);
    expect([...t.entries()].map(([c]) => formatCidr(c))).toEqual(['10.9.0.0/16']);
    expect(t.lookup(parseIp('10.9.1.1'), 0, 4)).toBe('y');
    expect(t.lookup(parseIp('10.8.1.1'), 0, 4)).toBeUndefined();
    expect(t.removeValue('x')).toBe(0);
  });

  it('handles /0, /32 and /128 at the extremes of the address space', () => {
    const t = new AllowedIps<string>();
    t.insert('255.255.255.255/32', 'top');
    t.insert('0.0.0.0/32', 'bottom');
    t.insert('128.0.0.0/1', 'half');
    t.insert('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'top6');
    t.insert('::/128', 'bottom6');
    t.insert('::/0', 'all6');
    expect(t.lookup(parseIp('255.255.255.255'), 0, 4)).toBe('top');
    expect(t.lookup(parseIp('255.255.255.254'), 0, 4)).toBe('half');
    expect(t.lookup(parseIp('0.0.0.0'), 0, 4)).toBe('bottom');
    expect(t.lookup(parseIp('0.0.0.1'), 0, 4)).toBeUndefined();
    expect(t.lookup(parseIp('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 0, 6)).toBe('top6');
    expect(t.lookup(parseIp('ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe'), 0, 6)).toBe('all6');
    expect(t.lookup(parseIp('::'), 0, 6)).toBe('bottom6');
    expect(t.lookup(parseIp('::1'), 0, 6)).toBe('all6');
  });

  // Few distinct lengths take the hashed lookup path, many take the trie walk;
  // "mixed" crosses the threshold both ways as prefixes come and go.
  const pools: Record<string, Record<4 | 6, readonly number[] | undefined>> = {
    'all lengths': { 4: undefined, 6: undefined },
    'few lengths': { 4: [0, 16, 24, 32], 6: [0, 48, 64, 128] },
    mixed: { 4: [0, 1, 7, 8, 9, 23, 24, 31, 32], 6: [0, 1, 32, 33, 63, 64, 65, 127, 128] },
  };
  for (const [pool, byFamily] of Object.entries(pools))
    for (const family of [4, 6] as const) {
      it(`matches a brute-force matcher on random IPv${family} prefixes (${pool}), moves and removals`, () => {
        const random = rng(family * 7919 + 17 + pool.length);
        const values = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
        for (let round = 0; round < 12; round++) {
          const gen = makeGen(random, family, byFamily[family]);
          const t = new AllowedIps<string>();
          const model = new BruteForce<string>();
          const inserted: Cidr[] = [];
          const check = (): void => {
            for (let n = 0; n < 300; n++) {
              const addr = random() < 0.5 && inserted.length > 0 ? randomInside(random, inserted[(random() * inserted.length) | 0]) : gen.address();
              const offset = family === 4 ? 16 : 24;
              expect(t.lookup(bytesAt(addr, offset), offset, family)).toBe(model.lookup(addr));
            }
            expect(t.size).toBe(model.owners.size);
            // Path compression: no chains of valueless single-child nodes.
            expect(t.nodeCount).toBeLessThanOrEqual(Math.max(0, 2 * t.size - 1));
          };
          for (let op = 0; op < 400; op++) {
            const r = random();
            const value = values[(random() * values.length) | 0];
            if (r < 0.6 || inserted.length === 0) {
              // Often re-insert a known prefix to exercise moves between owners.
              const cidr = random() < 0.25 && inserted.length > 0 ? inserted[(random() * inserted.length) | 0] : gen.prefix();
              inserted.push(cidr);
              t.insert(cidr, value);
              model.insert(cidr, value);
            } else if (r < 0.95) {
              const cidr = inserted[(random() * inserted.length) | 0];
              // Try both the right and (likely) wrong owner.
              expect(t.remove(cidr, value)).toBe(model.remove(cidr, value));
            } else {
              expect(t.removeValue(value)).toBe(model.removeValue(value));
            }
            if (op % 50 === 49) check();
          }
          check();
          for (const v of values) expect(t.prefixesOf(v).map(formatCidr).sort()).toEqual(model.prefixesOf(v).sort());
          const entries = [...t.entries()].map(([c, v]) => `${formatCidr(c)}=${v}`).sort();
          expect(entries).toEqual([...model.owners.values()].map((e) => `${formatCidr(e.cidr)}=${e.value}`).sort());
          // Emptying the table leaves nothing behind.
          for (const v of values) t.removeValue(v);
          expect(t.size).toBe(0);
          expect(t.nodeCount).toBe(0);
          expect([...t.entries()]).toEqual([]);
          expect(t.lookup(gen.address(), 0, family)).toBeUndefined();
        }
      });
    }

  it('accepts parsed Cidr objects as well as text', () => {
    const t = new AllowedIps<object>();
    const peer = {};
    t.insert(parseCidr('10.0.0.1/32'), peer);
    expect(t.lookup(parseIp('10.0.0.1'), 0, 4)).toBe(peer);
    expect(t.remove('10.0.0.1', peer)).toBe(true);
  });
});

function randomInside(random: () => number, c: Cidr): Uint8Array {
  const out = Uint8Array.from(c.bytes);
  for (let bit = c.bits; bit < out.length * 8; bit++) {
    if (random() < 0.5) out[bit >> 3] |= 0x80 >> (bit & 7);
  }
  return out;
}

describe('AllowedIps.removeSomeOf (a peer with 50,000 prefixes leaves in slices)', () => {
  it('removes at most max per call, leaves the rest routed, and forgets the value at the end', () => {
    const t = new AllowedIps<string>();
    for (let i = 0; i < 5000; i++) t.insert(`10.${(i >> 8) & 255}.${i & 255}.0/24`, 'a');
    t.insert('10.200.0.0/16', 'b');
    const addr = (i: number) => Uint8Array.from([10, (i >> 8) & 255, i & 255, 7]);
    let left = 5000;
    let calls = 0;
    while (left > 0) {
      const next = t.removeSomeOf('a', 1000);
      expect(next).toBe(Math.max(0, left - 1000));
      left = next;
      calls++;
      // What is left still routes to 'a'; what went routes nowhere.
      const routed = Array.from({ length: 5000 }, (_, i) => t.lookup(addr(i), 0, 4)).filter((v) => v === 'a').length;
      expect(routed).toBe(left);
      expect(t.size).toBe(left + 1);
    }
    expect(calls).toBe(5);
    expect(t.prefixesOf('a')).toEqual([]);
    expect(t.removeSomeOf('a', 1000)).toBe(0);
    expect(t.lookup(Uint8Array.from([10, 200, 1, 1]), 0, 4)).toBe('b');
    expect(t.nodeCount).toBe(1);
  });
});
