/**
 * Cooperative time slicing for long configuration changes. The daemon has
 * one thread, and it moves every packet: a 20,000-peer `set` or reload that
 * ran start to finish would stall every tunnel for its whole duration. Work
 * loops call `yielder.due()` per item and `await yielder.pause()` when it
 * says so; the pause is a setImmediate, which lets libuv's poll phase run
 * (TUN and UDP callbacks) before the loop goes on.
 */

/** Clock reads are cheap but not free: the clock is read once per this many due() calls. */
const CHECK_EVERY = 32;

export class Yielder {
  private deadline: number;
  private calls = 0;
  /** How many times the work gave way (for tests and logs). */
  pauses = 0;

  constructor(
    private readonly sliceMs = 5,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.deadline = now() + sliceMs;
  }

  /** True when the current slice is used up and the caller should `await pause()`. */
  due(): boolean {
    if (++this.calls < CHECK_EVERY) return false;
    this.calls = 0;
    return this.now() >= this.deadline;
  }

  /** Gives the event loop one turn, then starts a new slice. */
  async pause(): Promise<void> {
    this.pauses++;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.calls = 0;
    this.deadline = this.now() + this.sliceMs;
  }

  /** due() and pause() in one, for loops that do not care about the difference. */
  async tick(): Promise<void> {
    if (this.due()) await this.pause();
  }
}

/** A Yielder that never pauses (pure callers and tests that want one slice). */
export const NO_YIELD: Pick<Yielder, 'due' | 'pause' | 'tick'> = {
  due: () => false,
  pause: () => Promise.resolve(),
  tick: () => Promise.resolve(),
};
