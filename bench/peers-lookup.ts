/**
 * Peer-table micro-benchmark: 10,000 peers x 4 allowed IPs (IPv4 /32 and
 * /24, IPv6 /128 and /64), random destinations that hit and miss.
 *
 * The table has two lengths per family, so lookups take the per-length hash
 * probes; a second pass adds a peer with many prefix lengths so they walk
 * the trie instead.
 *
 * Figures are given against a reference measured in the same run (a
 * Map.get on a 32-bit key read from the same packets), since the machine is
 * shared and absolute rates drift.
 *
 * Run: npx tsc -p tsconfig.json && node --expose-gc dist/bench/peers-lookup.js
 */
import { randomBytes } from 'node:crypto';
import { PeerTable } from '../src/peers/peer-table.js';

const PEERS = Number(process.env.PEERS ?? 10_000);
const PACKETS = 1 << 16; // distinct packets cycled through (a realistic working set, not one hot line)
const ROUNDS = 5;
const LOOKUPS_PER_ROUND = 4_000_000;

interface BenchPeer {
  readonly id: number;
}

/** Deterministic PRNG (mulberry32) so runs are comparable. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}
const rand = rng(20240601);

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g !== undefined) {
    g();
    g();
  }
}

function hex16(n: number): string {
  return (n & 0xffff).toString(16);
}

// Peer i owns 10.(i>>8).(i&255).1/32 shifted into 10.0.0.0/8, a distinct
// /24 in 100.64.0.0/10, fd00::<i>/128 and a distinct /64 under fd10::/16.
function allowedIPsFor(i: number): string[] {
  const v4host = 0x0a000000 | ((i * 2654435761) & 0x00ffffff);
  const v4net = 0x64400000 | (((i * 40503) & 0x3fff) << 8);
  const ip4 = (n: number): string => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  return [`${ip4(v4host)}/32`, `${ip4(v4net)}/24`, `fd00::${hex16(i >>> 16)}:${hex16(i)}/128`, `fd10:${hex16(i)}:${hex16(i >>> 16)}:${hex16(i * 7)}::/64`];
}

const keys: string[] = [];
const peerValues: BenchPeer[] = [];
const allowed: string[][] = [];
for (let i = 0; i < PEERS; i++) {
  keys.push(randomBytes(32).toString('base64'));
  peerValues.push({ id: i });
  allowed.push(allowedIPsFor(i));
}

gc();
const heapBefore = process.memoryUsage().heapUsed;
const t0 = process.hrtime.bigint();
const table = new PeerTable<BenchPeer>();
for (let i = 0; i < PEERS; i++) table.add(keys[i], peerValues[i], allowed[i]);
const insertMs = Number(process.hrtime.bigint() - t0) / 1e6;
gc();
const heapAfter = process.memoryUsage().heapUsed;

// Packets: half IPv4, half IPv6; about 60% hit a peer, 40% miss.
const packets: Uint8Array[] = [];
const lengths = new Uint32Array(PACKETS);
const slab = new Uint8Array(PACKETS * 64);
let expectHits = 0;
for (let n = 0; n < PACKETS; n++) {
  const p = slab.subarray(n * 64, n * 64 + 64);
  const i = rand() % PEERS;
  const hit = rand() % 10 < 6;
  if (n % 2 === 0) {
    p[0] = 0x45;
    lengths[n] = 60;
    const kind = rand() & 1;
    let addr: number;
    if (!hit)
      addr = 0xc0000000 | (rand() & 0x00ffffff); // 192/8: nobody's
    else if (kind === 0) addr = 0x0a000000 | ((i * 2654435761) & 0x00ffffff);
    else addr = 0x64400000 | (((i * 40503) & 0x3fff) << 8) | (rand() & 0xff);
    p[16] = addr >>> 24;
    p[17] = (addr >>> 16) & 0xff;
    p[18] = (addr >>> 8) & 0xff;
    p[19] = addr & 0xff;
  } else {
    p[0] = 0x60;
    lengths[n] = 64;
    const kind = rand() & 1;
    const d = 24;
    if (!hit) {
      p[d] = 0x20; // 2000::/8: nobody's
      for (let b = 1; b < 16; b++) p[d + b] = rand() & 0xff;
    } else if (kind === 0) {
      p[d] = 0xfd; // fd00::<i>
      p[d + 12] = (i >>> 24) & 0xff;
      p[d + 13] = (i >>> 16) & 0xff;
      p[d + 14] = (i >>> 8) & 0xff;
      p[d + 15] = i & 0xff;
    } else {
      p[d] = 0xfd; // fd10:<i>:<i>>>16>:<i*7>::/64, random interface id
      p[d + 1] = 0x10;
      p[d + 2] = (i >>> 8) & 0xff;
      p[d + 3] = i & 0xff;
      p[d + 4] = (i >>> 24) & 0xff;
      p[d + 5] = (i >>> 16) & 0xff;
      p[d + 6] = ((i * 7) >>> 8) & 0xff;
      p[d + 7] = (i * 7) & 0xff;
      for (let b = 8; b < 16; b++) p[d + b] = rand() & 0xff;
    }
  }
  if (hit) expectHits++;
  packets.push(p);
}

// Sanity: every packet meant to hit does, and hits the intended kind of peer.
let hits = 0;
for (let n = 0; n < PACKETS; n++) if (table.lookupDestination(packets[n], lengths[n]) !== undefined) hits++;
if (hits !== expectHits) throw new Error(`benchmark setup is wrong: ${hits} hits, expected ${expectHits}`);

// Reference: a hash lookup on a number read from the same packet bytes.
const ref = new Map<number, BenchPeer>();
for (let i = 0; i < PEERS; i++) ref.set(0x0a000000 | ((i * 2654435761) & 0x00ffffff) | 0, peerValues[i]);

const mask = PACKETS - 1;

function runTrie(count: number): number {
  let found = 0;
  for (let n = 0; n < count; n++) {
    const k = n & mask;
    if (table.lookupDestination(packets[k], lengths[k]) !== undefined) found++;
  }
  return found;
}

function runMap(count: number): number {
  let found = 0;
  for (let n = 0; n < count; n++) {
    const p = packets[n & mask];
    const key = (p[16] << 24) | (p[17] << 16) | (p[18] << 8) | p[19];
    if (ref.get(key) !== undefined) found++;
  }
  return found;
}

function time(fn: (count: number) => number, count: number): number {
  const start = process.hrtime.bigint();
  const found = fn(count);
  const ns = Number(process.hrtime.bigint() - start);
  if (found < 0) throw new Error('unreachable');
  return (count / ns) * 1e9;
}

// Warm up both so each is optimised before timing.
runTrie(1_000_000);
runMap(1_000_000);

const trieRates: number[] = [];
const mapRates: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  // Interleave so drift on a shared machine hits both alike.
  trieRates.push(time(runTrie, LOOKUPS_PER_ROUND));
  mapRates.push(time(runMap, LOOKUPS_PER_ROUND));
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const trieRate = median(trieRates);
const mapRate = median(mapRates);

// Allocation check: a million lookups with no GC in between should not move the heap.
gc();
const heapLookup0 = process.memoryUsage().heapUsed;
runTrie(1_000_000);
const allocatedPerLookup = (process.memoryUsage().heapUsed - heapLookup0) / 1_000_000;

// Same table with many distinct prefix lengths, which turns the per-length
// hash probes off and makes lookups walk the trie: the worst case.
const extraKey = randomBytes(32).toString('base64');
const extras: string[] = [];
for (let bits = 9; bits <= 17; bits++) extras.push(`198.18.0.0/${bits}`, `2001:db8::/${bits + 16}`);
table.add(extraKey, { id: -1 }, extras);
runTrie(1_000_000);
const walkRates: number[] = [];
const mapRates2: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  walkRates.push(time(runTrie, LOOKUPS_PER_ROUND));
  mapRates2.push(time(runMap, LOOKUPS_PER_ROUND));
}
const walkRate = median(walkRates);
const mapRate2 = median(mapRates2);
let hits2 = 0;
for (let n = 0; n < PACKETS; n++) if (table.lookupDestination(packets[n], lengths[n]) !== undefined) hits2++;
if (hits2 !== hits) throw new Error('trie walk disagrees with the hashed lookup');

const mib = (n: number): string => (n / (1 << 20)).toFixed(1);
const result = {
  peers: PEERS,
  prefixes: table.prefixCount,
  insertMs: Math.round(insertMs),
  heapDeltaMiB: Number(mib(heapAfter - heapBefore)),
  hitRatio: Number((hits / PACKETS).toFixed(3)),
  trieLookupsPerSec: Math.round(trieRate),
  trieNsPerLookup: Number((1e9 / trieRate).toFixed(1)),
  mapGetPerSec: Math.round(mapRate),
  ratioTrieToMap: Number((trieRate / mapRate).toFixed(3)),
  heapBytesPerLookup: Number(allocatedPerLookup.toFixed(4)),
  trieWalkLookupsPerSec: Math.round(walkRate),
  trieWalkNsPerLookup: Number((1e9 / walkRate).toFixed(1)),
  ratioTrieWalkToMap: Number((walkRate / mapRate2).toFixed(3)),
  gcExposed: typeof (globalThis as { gc?: unknown }).gc === 'function',
};
console.log(
  `peer table: ${PEERS} peers, ${result.prefixes} prefixes inserted in ${result.insertMs} ms, heap +${result.heapDeltaMiB} MiB\n` +
    `lookupDestination: ${(trieRate / 1e6).toFixed(2)} M/s (${result.trieNsPerLookup} ns), ` +
    `Map.get reference: ${(mapRate / 1e6).toFixed(2)} M/s, ratio ${result.ratioTrieToMap}\n` +
    `hit ratio ${result.hitRatio}, heap bytes per lookup ${result.heapBytesPerLookup}\n` +
    `many prefix lengths (trie walk): ${(walkRate / 1e6).toFixed(2)} M/s (${result.trieWalkNsPerLookup} ns), ` +
    `Map.get reference: ${(mapRate2 / 1e6).toFixed(2)} M/s, ratio ${result.ratioTrieWalkToMap}`,
);
console.log(JSON.stringify(result));
