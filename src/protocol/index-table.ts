import { TunvpnError } from '../errors.js';

/**
 * Receiver-index table: maps the random 32-bit indices we hand out in
 * handshake messages to the object (handshake or session) they name.
 * Indices are random so they do not leak how many sessions exist, and never
 * collide with one in use.
 */
export class IndexTable<T> {
  private readonly map = new Map<number, T>();
  private readonly random32: () => number;

  /** `random32` returns a uniformly random unsigned 32-bit integer. */
  constructor(random32: () => number) {
    this.random32 = random32;
  }

  get size(): number {
    return this.map.size;
  }

  /** Reserves a fresh index for `value` and returns it. */
  allocate(value: T): number {
    if (this.map.size >= 0xffffffff) {
      throw new TunvpnError('INDEX_TABLE_FULL', 'receiver index table is full');
    }
    for (;;) {
      const index = this.random32() >>> 0;
      if (!this.map.has(index)) {
        this.map.set(index, value);
        return index;
      }
    }
  }

  /** Looks an index up; undefined when it is not (or no longer) in use. */
  get(index: number): T | undefined {
    return this.map.get(index >>> 0);
  }

  /** Points an existing index at a new value (a handshake becoming a session). */
  replace(index: number, value: T): void {
    const key = index >>> 0;
    if (!this.map.has(key)) {
      throw new TunvpnError('INDEX_NOT_FOUND', `receiver index ${key} is not allocated`);
    }
    this.map.set(key, value);
  }

  /** Releases an index; releasing an unknown index is a no-op. */
  free(index: number): void {
    this.map.delete(index >>> 0);
  }
}
