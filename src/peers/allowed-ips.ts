import { parseCidr, type Cidr } from './cidr.js';
import { PrefixHash } from './prefix-hash.js';

/*
 * Cryptokey routing: a longest-prefix-match table from IP prefixes to the
 * peer that owns them, one binary trie per address family.
 *
 * The trie is path-compressed: a node exists only where a prefix ends or
 * where two stored prefixes diverge, so the depth is bounded by the number
 * of stored prefixes along one path (about log2(n) for scattered prefixes),
 * not by the address width, and a /128 costs one node rather than 128.
 *
 * Nodes live in one flat Int32Array per family rather than as objects: a
 * lookup with 10,000 peers is bound by cache misses, one per node visited,
 * and a 32-byte (IPv4) or 64-byte (IPv6) record keeps the whole trie a few
 * megabytes, about a fifth of the object version, so far more of it stays
 * in cache. Addresses are big-endian 32-bit words held as signed int32, so
 * the hot path is integer xor/and/shift and never allocates.
 *
 * While a family has at most HASHED_LENGTHS distinct prefix lengths, lookups
 * skip the trie and probe one exact-match hash per length, longest first
 * (see prefix-hash.ts); the trie stays the source of truth for everything
 * else and takes over when the lengths are many.
 */

const HASHED_LENGTHS = 6;

/** Node 0 is the null node, so a zero child or root means "none". */
const NONE = 0;

/** The mask of prefix bits of a `bits`-long prefix that fall in word `index`. */
function maskWord(bits: number, index: number): number {
  const inWord = bits - index * 32;
  if (inWord <= 0) return 0;
  if (inWord >= 32) return -1;
  return -1 << (32 - inWord);
}

/**
 * One family's node storage. Record layout, `nw` = words per address (1 or 4):
 *   [0, nw)      prefix words, host bits zero
 *   [nw, 2nw)    masks of the prefix bits in each word
 *   2nw          prefix length
 *   2nw + 1      1 when the node carries a value (values[node])
 *   2nw + 2, +3  children for next bit 0 and 1
 *   2nw + 4      parent (only removal walks upward)
 */
class Arena<T> {
  readonly family: 4 | 6;
  readonly nw: number;
  readonly stride: number;
  readonly oBits: number;
  readonly oVal: number;
  readonly oC0: number;
  readonly oParent: number;
  data: Int32Array;
  readonly values: (T | undefined)[] = [undefined];
  root = NONE;
  live = 0;
  /** Exact-match index per prefix length in use, longest first. */
  hashes: PrefixHash[] = [];
  /** Whether lookups use `hashes` (few distinct lengths) or walk the trie. */
  hashed = true;
  private readonly byLength = new Map<number, PrefixHash>();
  private top = 1;
  private readonly freeList: number[] = [];

  constructor(family: 4 | 6) {
    this.family = family;
    this.nw = family === 4 ? 1 : 4;
    this.stride = family === 4 ? 8 : 16;
    this.oBits = 2 * this.nw;
    this.oVal = this.oBits + 1;
    this.oC0 = this.oBits + 2;
    this.oParent = this.oBits + 4;
    this.data = new Int32Array(64 * this.stride);
  }

  word(n: number, i: number): number {
    return i < this.nw ? this.data[n * this.stride + i] : 0;
  }

  bits(n: number): number {
    return this.data[n * this.stride + this.oBits];
  }

  /** Bit `pos` (0 = most significant) of node `n`'s prefix. */
  bitAt(n: number, pos: number): number {
    return (this.word(n, pos >>> 5) >>> (31 - (pos & 31))) & 1;
  }

  child(n: number, bit: number): number {
    return this.data[n * this.stride + this.oC0 + bit];
  }

  setChild(n: number, bit: number, c: number): void {
    this.data[n * this.stride + this.oC0 + bit] = c;
  }

  parent(n: number): number {
    return this.data[n * this.stride + this.oParent];
  }

  setParent(n: number, p: number): void {
    this.data[n * this.stride + this.oParent] = p;
  }

  value(n: number): T | undefined {
    return this.values[n];
  }

  setValue(n: number, value: T | undefined): void {
    this.values[n] = value;
    this.data[n * this.stride + this.oVal] = value === undefined ? 0 : 1;
  }

  create(words: Int32Array, bits: number): number {
    let n = this.freeList.pop();
    if (n === undefined) {
      n = this.top++;
      if (n * this.stride >= this.data.length) {
        const bigger = new Int32Array(this.data.length * 2);
        bigger.set(this.data);
        this.data = bigger;
      }
    }
    const d = this.data;
    const base = n * this.stride;
    for (let i = 0; i < this.nw; i++) {
      const m = maskWord(bits, i);
      d[base + this.nw + i] = m;
      d[base + i] = words[i] & m;
    }
    d[base + this.oBits] = bits;
    d[base + this.oVal] = 0;
    d[base + this.oC0] = NONE;
    d[base + this.oC0 + 1] = NONE;
    d[base + this.oParent] = NONE;
    this.values[n] = undefined;
    this.live++;
    return n;
  }

  destroy(n: number): void {
    this.values[n] = undefined;
    this.data[n * this.stride + this.oVal] = 0;
    this.freeList.push(n);
    this.live--;
  }

  /** Records that node `n` now carries a value, in the index of its length. */
  indexAdd(n: number): void {
    const bits = this.bits(n);
    let table = this.byLength.get(bits);
    if (table === undefined) {
      const masks = [0, 1, 2, 3].map((i) => maskWord(bits, i));
      table = new PrefixHash(this.nw, bits, masks);
      this.byLength.set(bits, table);
      this.reindex();
    }
    table.set(this.keyWords(n), n);
  }

  indexRemove(n: number): void {
    const table = this.byLength.get(this.bits(n));
    if (table === undefined) return;
    table.delete(this.keyWords(n));
    if (table.size === 0) {
      this.byLength.delete(table.bits);
      this.reindex();
    }
  }

  private keyWords(n: number): Int32Array {
    const words = new Int32Array(4);
    for (let i = 0; i < this.nw; i++) words[i] = this.word(n, i);
    return words;
  }

  private reindex(): void {
    this.hashes = [...this.byLength.values()].sort((x, y) => y.bits - x.bits);
    this.hashed = this.hashes.length <= HASHED_LENGTHS;
  }

  reset(): void {
    this.byLength.clear();
    this.reindex();
    this.data = new Int32Array(64 * this.stride);
    this.values.length = 1;
    this.freeList.length = 0;
    this.top = 1;
    this.root = NONE;
    this.live = 0;
  }

  /** Length of the common prefix of node `n`'s key and `words`, capped at `limit`. */
  commonBits(n: number, words: Int32Array, limit: number): number {
    for (let i = 0; i < 4 && i * 32 < limit; i++) {
      const diff = this.word(n, i) ^ words[i];
      if (diff !== 0) return Math.min(limit, i * 32 + Math.clz32(diff));
    }
    return limit;
  }

  cidr(n: number): Cidr {
    const size = this.family === 4 ? 4 : 16;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = (this.word(n, i >>> 2) >>> (24 - (i & 3) * 8)) & 0xff;
    return { family: this.family, bytes, bits: this.bits(n) };
  }
}

function wordsBit(words: Int32Array, pos: number): number {
  return (words[pos >>> 5] >>> (31 - (pos & 31))) & 1;
}

function cidrWords(cidr: Cidr): Int32Array {
  const words = new Int32Array(4);
  const b = cidr.bytes;
  for (let i = 0; i < b.length; i += 4) {
    words[i >>> 2] = (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3];
  }
  return words;
}

/** Ownership sets hold handles: node id and family in one number. */
function handle(family: 4 | 6, n: number): number {
  return n * 2 + (family === 6 ? 1 : 0);
}

/**
 * WireGuard's allowed-IPs table. Each prefix has exactly one owner; inserting
 * a prefix another value owns moves it (as `wg set ... allowed-ips` does).
 * Values are compared by identity and must not be undefined.
 */
export class AllowedIps<T extends NonNullable<unknown>> {
  private readonly v4 = new Arena<T>(4);
  private readonly v6 = new Arena<T>(6);
  private readonly owned = new Map<T, Set<number>>();
  private count = 0;

  /** Number of prefixes stored (both families). */
  get size(): number {
    return this.count;
  }

  /** Trie nodes in use, branch nodes included: at most 2 * size - 1 per family. */
  get nodeCount(): number {
    return this.v4.live + this.v6.live;
  }

  /** Gives `cidr` to `value`, taking it from its previous owner if any. */
  insert(cidr: Cidr | string, value: T): void {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    const arena = this.arena(c.family);
    const n = this.findOrCreate(arena, cidrWords(c), c.bits);
    const previous = arena.value(n);
    if (previous === value) return;
    const h = handle(arena.family, n);
    arena.setValue(n, value);
    if (previous === undefined) {
      this.count++;
      arena.indexAdd(n);
    } else {
      this.disown(previous, h);
    }
    let set = this.owned.get(value);
    if (set === undefined) {
      set = new Set();
      this.owned.set(value, set);
    }
    set.add(h);
  }

  /** Removes `cidr` if `value` owns it; returns whether anything was removed. */
  remove(cidr: Cidr | string, value: T): boolean {
    const c = typeof cidr === 'string' ? parseCidr(cidr) : cidr;
    const arena = this.arena(c.family);
    const n = this.findExact(arena, cidrWords(c), c.bits);
    if (n === NONE || arena.value(n) !== value) return false;
    this.disown(value, handle(arena.family, n));
    this.release(arena, n);
    return true;
  }

  /** Removes every prefix `value` owns; returns how many there were. */
  removeValue(value: T): number {
    const set = this.owned.get(value);
    if (set === undefined) return 0;
    this.owned.delete(value);
    for (const h of set) this.release(h & 1 ? this.v6 : this.v4, Math.floor(h / 2));
    return set.size;
  }

  /**
   * Removes at most `max` of the prefixes `value` owns and returns how many
   * it still owns: a caller removes a peer with 50,000 prefixes in slices
   * (all at once is about 50 ms on the packet thread), then removeValue().
   */
  removeSomeOf(value: T, max: number): number {
    const set = this.owned.get(value);
    if (set === undefined) return 0;
    let done = 0;
    for (const h of set) {
      if (done++ >= max) break;
      set.delete(h);
      this.release(h & 1 ? this.v6 : this.v4, Math.floor(h / 2));
    }
    if (set.size > 0) return set.size;
    this.owned.delete(value);
    return 0;
  }

  /** The prefixes `value` owns, IPv4 first, each family in address order. */
  prefixesOf(value: T): Cidr[] {
    const set = this.owned.get(value);
    if (set === undefined) return [];
    const cidrs = [...set].map((h) => (h & 1 ? this.v6 : this.v4).cidr(Math.floor(h / 2)));
    cidrs.sort(compareCidrs);
    return cidrs;
  }

  /** Every (prefix, owner) pair, IPv4 first, each family in address order. */
  *entries(): IterableIterator<[Cidr, T]> {
    for (const arena of [this.v4, this.v6]) {
      // Pre-order, 0-branch first: shorter prefixes before the ones they contain.
      const stack: number[] = [];
      if (arena.root !== NONE) stack.push(arena.root);
      for (let n = stack.pop(); n !== undefined; n = stack.pop()) {
        const value = arena.value(n);
        if (value !== undefined) yield [arena.cidr(n), value];
        if (arena.child(n, 1) !== NONE) stack.push(arena.child(n, 1));
        if (arena.child(n, 0) !== NONE) stack.push(arena.child(n, 0));
      }
    }
  }

  /** Drops everything. */
  clear(): void {
    this.v4.reset();
    this.v6.reset();
    this.owned.clear();
    this.count = 0;
  }

  /**
   * Longest-prefix match of the address at `bytes[offset..]` (4 bytes for
   * family 4, 16 for family 6). Reads a packet buffer in place: the IPv4
   * destination is at offset 16 and source at 12, IPv6 at 24 and 8. The
   * caller guarantees the bytes are there.
   */
  lookup(bytes: Uint8Array, offset: number, family: 4 | 6): T | undefined {
    return family === 4 ? this.lookup4(bytes, offset) : this.lookup6(bytes, offset);
  }

  lookup4(bytes: Uint8Array, offset: number): T | undefined {
    const a = (bytes[offset] << 24) | (bytes[offset + 1] << 16) | (bytes[offset + 2] << 8) | bytes[offset + 3];
    const arena = this.v4;
    if (arena.hashed) {
      const hashes = arena.hashes;
      for (let i = 0; i < hashes.length; i++) {
        const table = hashes[i];
        const hit = table.find4(a & table.m0);
        if (hit !== NONE) return arena.values[hit];
      }
      return undefined;
    }
    const d = arena.data;
    let n = arena.root;
    let found = NONE;
    // Layout offsets are spelled out (see Arena) so this loop is plain array reads.
    while (n !== NONE) {
      const b = n * 8;
      if (((a ^ d[b]) & d[b + 1]) !== 0) break;
      if (d[b + 3] !== 0) found = n;
      const bits = d[b + 2];
      if (bits === 32) break;
      // Shifting the next bit into the sign position tests it without a mask.
      n = a << bits < 0 ? d[b + 5] : d[b + 4];
    }
    return found === NONE ? undefined : arena.values[found];
  }

  lookup6(bytes: Uint8Array, offset: number): T | undefined {
    const o = offset;
    const a0 = (bytes[o] << 24) | (bytes[o + 1] << 16) | (bytes[o + 2] << 8) | bytes[o + 3];
    const a1 = (bytes[o + 4] << 24) | (bytes[o + 5] << 16) | (bytes[o + 6] << 8) | bytes[o + 7];
    const a2 = (bytes[o + 8] << 24) | (bytes[o + 9] << 16) | (bytes[o + 10] << 8) | bytes[o + 11];
    const a3 = (bytes[o + 12] << 24) | (bytes[o + 13] << 16) | (bytes[o + 14] << 8) | bytes[o + 15];
    const arena = this.v6;
    if (arena.hashed) {
      const hashes = arena.hashes;
      for (let i = 0; i < hashes.length; i++) {
        const t = hashes[i];
        const hit = t.find6(a0 & t.m0, a1 & t.m1, a2 & t.m2, a3 & t.m3);
        if (hit !== NONE) return arena.values[hit];
      }
      return undefined;
    }
    const d = arena.data;
    let n = arena.root;
    let found = NONE;
    while (n !== NONE) {
      const b = n * 16;
      if ((((a0 ^ d[b]) & d[b + 4]) | ((a1 ^ d[b + 1]) & d[b + 5]) | ((a2 ^ d[b + 2]) & d[b + 6]) | ((a3 ^ d[b + 3]) & d[b + 7])) !== 0) {
        break;
      }
      if (d[b + 9] !== 0) found = n;
      const bits = d[b + 8];
      if (bits === 128) break;
      const word = bits < 64 ? (bits < 32 ? a0 : a1) : bits < 96 ? a2 : a3;
      n = word << (bits & 31) < 0 ? d[b + 11] : d[b + 10];
    }
    return found === NONE ? undefined : arena.values[found];
  }

  private arena(family: 4 | 6): Arena<T> {
    return family === 4 ? this.v4 : this.v6;
  }

  private disown(value: T, h: number): void {
    const set = this.owned.get(value);
    if (set === undefined) return;
    set.delete(h);
    if (set.size === 0) this.owned.delete(value);
  }

  /** Puts `child` where `old` hung under `parent` (or at the root). */
  private relink(arena: Arena<T>, parent: number, old: number, child: number): void {
    if (child !== NONE) arena.setParent(child, parent);
    if (parent === NONE) {
      arena.root = child;
    } else if (old !== NONE && arena.child(parent, 0) === old) {
      arena.setChild(parent, 0, child);
    } else if (old !== NONE && arena.child(parent, 1) === old) {
      arena.setChild(parent, 1, child);
    } else {
      arena.setChild(parent, child !== NONE ? arena.bitAt(child, arena.bits(parent)) : 0, child);
    }
  }

  private findExact(arena: Arena<T>, words: Int32Array, bits: number): number {
    let n = arena.root;
    while (n !== NONE && arena.bits(n) <= bits) {
      const nb = arena.bits(n);
      if (arena.commonBits(n, words, nb) !== nb) return NONE;
      if (nb === bits) return n;
      n = arena.child(n, wordsBit(words, nb));
    }
    return NONE;
  }

  private findOrCreate(arena: Arena<T>, words: Int32Array, bits: number): number {
    let parent = NONE;
    let n = arena.root;
    for (;;) {
      if (n === NONE) {
        const leaf = arena.create(words, bits);
        this.relink(arena, parent, NONE, leaf);
        return leaf;
      }
      const nb = arena.bits(n);
      const common = arena.commonBits(n, words, Math.min(nb, bits));
      if (common === nb) {
        if (nb === bits) return n;
        parent = n;
        n = arena.child(n, wordsBit(words, nb));
        continue;
      }
      // The new prefix leaves this node's path above it: splice a node in.
      if (common === bits) {
        const fresh = arena.create(words, bits);
        this.relink(arena, parent, n, fresh);
        this.relink(arena, fresh, NONE, n);
        return fresh;
      }
      const branch = arena.create(words, common);
      const leaf = arena.create(words, bits);
      this.relink(arena, parent, n, branch);
      this.relink(arena, branch, NONE, n);
      this.relink(arena, branch, NONE, leaf);
      return leaf;
    }
  }

  private release(arena: Arena<T>, n: number): void {
    arena.indexRemove(n);
    arena.setValue(n, undefined);
    this.count--;
    this.compact(arena, n);
  }

  /** Removes nodes that no longer carry a value or separate two subtrees. */
  private compact(arena: Arena<T>, start: number): void {
    let n = start;
    while (n !== NONE && arena.value(n) === undefined && (arena.child(n, 0) === NONE || arena.child(n, 1) === NONE)) {
      const c0 = arena.child(n, 0);
      const child = c0 !== NONE ? c0 : arena.child(n, 1);
      const parent = arena.parent(n);
      this.relink(arena, parent, n, child);
      arena.destroy(n);
      n = parent;
    }
  }
}

function compareCidrs(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.bytes.length; i++) {
    if (a.bytes[i] !== b.bytes[i]) return a.bytes[i] - b.bytes[i];
  }
  return a.bits - b.bits;
}
