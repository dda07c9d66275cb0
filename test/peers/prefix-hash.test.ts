import { describe, expect, it } from 'vitest';
import { PrefixHash } from '../../src/peers/prefix-hash.js';

describe('PrefixHash', () => {
  for (const nw of [1, 4]) {
    it(`agrees with a Map through random sets and deletes (${nw} word keys)`, () => {
      let seed = 12345 + nw;
      const next = (): number => {
        seed = (Math.imul(seed, 1103515245) + 12345) | 0;
        return seed;
      };
      const table = new PrefixHash(nw, nw * 32, [-1, nw > 1 ? -1 : 0, nw > 1 ? -1 : 0, nw > 1 ? -1 : 0]);
      const model = new Map<string, number>();
      // A small key space forces long probe runs, overwrites and deletes in the middle of runs.
      const keyOf = (): Int32Array => {
        const k = new Int32Array(4);
        const v = (next() >>> 8) % 3000;
        k[0] = v * 0x10001;
        if (nw > 1) k[3] = v;
        return k;
      };
      const str = (k: Int32Array): string => Array.from(k.subarray(0, nw)).join(',');
      const find = (k: Int32Array): number => (nw === 1 ? table.find4(k[0]) : table.find6(k[0], k[1], k[2], k[3]));
      for (let op = 0; op < 30000; op++) {
        const k = keyOf();
        if ((next() >>> 4) % 3 === 0) {
          expect(table.delete(k)).toBe(model.delete(str(k)));
        } else {
          const node = ((next() >>> 4) % 1000) + 1;
          table.set(k, node);
          model.set(str(k), node);
        }
        if (op % 1000 === 0) {
          expect(table.size).toBe(model.size);
          for (let probe = 0; probe < 200; probe++) {
            const q = keyOf();
            expect(find(q)).toBe(model.get(str(q)) ?? 0);
          }
        }
      }
      for (const [s, node] of model) {
        const parts = s.split(',').map(Number);
        const k = new Int32Array(4);
        parts.forEach((p, i) => {
          k[i] = p;
        });
        expect(find(k)).toBe(node);
      }
    });
  }
});
