/*
 * Exact-match index of the prefixes of one length: masked address words ->
 * trie node id, open addressing with linear probing in typed arrays.
 *
 * It accelerates longest-prefix match when a family has only a few distinct
 * prefix lengths (the usual case: /32 + /24, /128 + /64): probing each
 * length from longest to shortest costs a few probes into tables small
 * enough to stay in cache, where walking the trie costs one cache miss per
 * level (about 16 levels at 10,000 peers).
 */

const EMPTY = 0;

/** Mixes up to four 32-bit words into a 32-bit hash (murmur3-style finaliser). */
function mix(k0: number, k1: number, k2: number, k3: number): number {
  let h = Math.imul(k0 ^ 0x2545f491, 0x9e3779b1);
  h = Math.imul(h ^ k1 ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ k2 ^ (h >>> 13), 0xc2b2ae35);
  h = Math.imul(h ^ k3 ^ (h >>> 16), 0x27d4eb2f);
  return h ^ (h >>> 15);
}

export class PrefixHash {
  /** Words per key: 1 for IPv4, 4 for IPv6. */
  readonly nw: number;
  readonly bits: number;
  readonly m0: number;
  readonly m1: number;
  readonly m2: number;
  readonly m3: number;
  keys: Int32Array;
  nodes: Int32Array;
  slotMask: number;
  size = 0;

  constructor(nw: number, bits: number, masks: readonly number[]) {
    this.nw = nw;
    this.bits = bits;
    this.m0 = masks[0];
    this.m1 = masks[1];
    this.m2 = masks[2];
    this.m3 = masks[3];
    this.keys = new Int32Array(16 * nw);
    this.nodes = new Int32Array(16);
    this.slotMask = 15;
  }

  /** The node id for an IPv4 key (already masked), or 0. */
  find4(k0: number): number {
    const keys = this.keys;
    const nodes = this.nodes;
    const m = this.slotMask;
    let s = mix(k0, 0, 0, 0) & m;
    for (;;) {
      const n = nodes[s];
      if (n === EMPTY || keys[s] === k0) return n;
      s = (s + 1) & m;
    }
  }

  /** The node id for an IPv6 key (already masked), or 0. */
  find6(k0: number, k1: number, k2: number, k3: number): number {
    const keys = this.keys;
    const nodes = this.nodes;
    const m = this.slotMask;
    let s = mix(k0, k1, k2, k3) & m;
    for (;;) {
      const n = nodes[s];
      if (n === EMPTY) return EMPTY;
      const k = s * 4;
      if (keys[k] === k0 && keys[k + 1] === k1 && keys[k + 2] === k2 && keys[k + 3] === k3) return n;
      s = (s + 1) & m;
    }
  }

  /** Adds or overwrites the node id for a key (`words` already masked). */
  set(words: Int32Array, node: number): void {
    if ((this.size + 1) * 2 > this.nodes.length) this.grow();
    let s = this.slotOf(words);
    for (;;) {
      if (this.nodes[s] === EMPTY) {
        this.size++;
        break;
      }
      if (this.keyEquals(s, words)) break;
      s = (s + 1) & this.slotMask;
    }
    for (let i = 0; i < this.nw; i++) this.keys[s * this.nw + i] = words[i];
    this.nodes[s] = node;
  }

  delete(words: Int32Array): boolean {
    let s = this.slotOf(words);
    for (;;) {
      if (this.nodes[s] === EMPTY) return false;
      if (this.keyEquals(s, words)) break;
      s = (s + 1) & this.slotMask;
    }
    // Backward-shift deletion: pull later entries of the probe run into the
    // hole unless that would move them before their home slot.
    const m = this.slotMask;
    let hole = s;
    let j = s;
    for (;;) {
      j = (j + 1) & m;
      const n = this.nodes[j];
      if (n === EMPTY) break;
      const home = this.slotAt(j);
      const fromHoleToJ = (j - hole) & m;
      const fromHomeToJ = (j - home) & m;
      if (fromHomeToJ >= fromHoleToJ) {
        for (let i = 0; i < this.nw; i++) this.keys[hole * this.nw + i] = this.keys[j * this.nw + i];
        this.nodes[hole] = n;
        hole = j;
      }
    }
    this.nodes[hole] = EMPTY;
    this.size--;
    return true;
  }

  private keyEquals(s: number, words: Int32Array): boolean {
    for (let i = 0; i < this.nw; i++) if (this.keys[s * this.nw + i] !== words[i]) return false;
    return true;
  }

  private slotOf(words: Int32Array): number {
    return this.nw === 1 ? mix(words[0], 0, 0, 0) & this.slotMask : mix(words[0], words[1], words[2], words[3]) & this.slotMask;
  }

  private slotAt(s: number): number {
    const k = this.keys;
    const b = s * this.nw;
    return this.nw === 1 ? mix(k[b], 0, 0, 0) & this.slotMask : mix(k[b], k[b + 1], k[b + 2], k[b + 3]) & this.slotMask;
  }

  private grow(): void {
    const oldKeys = this.keys;
    const oldNodes = this.nodes;
    const cap = oldNodes.length * 2;
    this.keys = new Int32Array(cap * this.nw);
    this.nodes = new Int32Array(cap);
    this.slotMask = cap - 1;
    this.size = 0;
    const words = new Int32Array(4);
    for (let s = 0; s < oldNodes.length; s++) {
      if (oldNodes[s] === EMPTY) continue;
      for (let i = 0; i < this.nw; i++) words[i] = oldKeys[s * this.nw + i];
      this.set(words, oldNodes[s]);
    }
  }
}
