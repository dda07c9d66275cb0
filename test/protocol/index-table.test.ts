import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { IndexTable } from '../../src/protocol/index-table.js';

/** A random source that replays `values` and counts the draws. */
function scripted(values: number[]) {
  let draws = 0;
  const next = (): number => {
    const v = values[draws % values.length];
    draws++;
    return v;
  };
  return { next, draws: () => draws };
}

describe('IndexTable', () => {
  it('retries when the random source returns an index already in use', () => {
    const src = scripted([5, 5, 5, 9, 5, 9, 9, 12]);
    const t = new IndexTable<string>(src.next);
    expect(t.allocate('a')).toBe(5);
    expect(src.draws()).toBe(1);
    expect(t.allocate('b')).toBe(9);
    expect(src.draws()).toBe(4);
    expect(t.allocate('c')).toBe(12);
    expect(src.draws()).toBe(8);
    expect([t.get(5), t.get(9), t.get(12)]).toEqual(['a', 'b', 'c']);
    expect(t.size).toBe(3);
  });

  it('never hands out a colliding index from a source with a tiny range', () => {
    // 2000 allocations from 2048 possible values: collisions are certain, reuse must not happen.
    const t = new IndexTable<number>(() => randomInt(2048));
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) {
      const index = t.allocate(i);
      expect(seen.has(index)).toBe(false);
      seen.add(index);
      expect(t.get(index)).toBe(i);
    }
    expect(t.size).toBe(2000);
  });

  it('normalises indices to unsigned 32-bit', () => {
    const t = new IndexTable<string>(() => -1);
    const index = t.allocate('x');
    expect(index).toBe(0xffffffff);
    expect(t.get(-1)).toBe('x'); // the same 32 bits read back as a signed int
    expect(t.get(0xffffffff)).toBe('x');
  });

  it('frees, replaces and gets', () => {
    const src = scripted([1, 2, 1, 3]);
    const t = new IndexTable<string>(src.next);
    const i1 = t.allocate('hs1');
    const i2 = t.allocate('hs2');
    t.replace(i1, 'session1');
    expect(t.get(i1)).toBe('session1');
    expect(t.get(i2)).toBe('hs2');
    t.free(i1);
    expect(t.get(i1)).toBeUndefined();
    expect(t.size).toBe(1);
    t.free(i1); // freeing twice is harmless
    t.free(12345);
    expect(t.size).toBe(1);
    expect(() => t.replace(i1, 'late')).toThrow(expect.objectContaining({ code: 'INDEX_NOT_FOUND' }));
    expect(t.get(i1)).toBeUndefined();
    // A freed index may be handed out again.
    expect(t.allocate('hs3')).toBe(1);
    expect(t.get(1)).toBe('hs3');
    expect(t.get(77)).toBeUndefined();
  });
});
