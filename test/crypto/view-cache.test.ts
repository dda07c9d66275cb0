import { describe, expect, it } from 'vitest';
import { ViewCache } from '../../src/crypto/util.js';

describe('ViewCache', () => {
  it('gives the same view object back for the same slot and region, and a new one when either changes', () => {
    const c = new ViewCache();
    const slot = Buffer.alloc(64, 7);
    const a = c.of(slot, 16, 32);
    expect(a.byteOffset - slot.byteOffset).toBe(16);
    expect(a.length).toBe(32);
    expect(c.of(slot, 16, 32)).toBe(a);
    const b = c.of(slot, 16, 33);
    expect(b).not.toBe(a);
    expect(b.length).toBe(33);
    const d = c.of(slot, 0, 33);
    expect(d.byteOffset).toBe(slot.byteOffset);
    const other = Buffer.alloc(64);
    const e = c.of(other, 0, 33);
    expect(e).not.toBe(d);
    expect(e.buffer === other.buffer && e.byteOffset === other.byteOffset).toBe(true);
  });

  it('returns the slot itself for all of it, and the view shares its bytes', () => {
    const c = new ViewCache();
    const slot = new Uint8Array(8);
    expect(c.of(slot, 0, 8)).toBe(slot);
    const v = c.of(slot, 2, 3);
    v[0] = 9;
    expect(slot[2]).toBe(9);
  });
});
