/**
 * Sliding anti-replay window over transport counters, RFC 6479 style: a
 * ring of 32-bit words. Moving the window forward clears whole words instead
 * of shifting bits, so an accepted packet costs O(1) however far it jumps.
 *
 * With REPLAY_WORDS words (a power of two) the window spans REPLAY_WINDOW
 * counters behind the greatest one seen: all the ring's bits but one word,
 * kept as slack for the word being filled (RFC 6479 section 2). 256 words
 * give 8160 counters, more than wireguard-go's 8128 (128 64-bit words minus
 * one): deep reordering (multi-core senders, bonded links) drops no more
 * here than there. The ring is 1 KiB per session and nothing on the packet
 * path allocates or loops over it, except a jump of more than a word, which
 * clears at most the whole ring once.
 */
export const REPLAY_WORDS = 256;
export const REPLAY_BITS = REPLAY_WORDS * 32;
export const REPLAY_WINDOW = REPLAY_BITS - 32; // 8160 counters
const WORD_MASK = REPLAY_WORDS - 1;

export class ReplayWindow {
  private readonly bitmap = new Uint32Array(REPLAY_WORDS);
  /** Greatest accepted counter, -1 before the first. */
  private greatest = -1;
  private readonly limit: number;

  /** Counters at or beyond `limit` (Reject-After-Messages) are refused. */
  constructor(limit: number) {
    this.limit = limit;
  }

  /** Whether `counter` would be accepted; does not record it (used before decrypting). */
  check(counter: number): boolean {
    if (!(counter < this.limit)) return false;
    if (counter > this.greatest) return true;
    if (this.greatest - counter >= REPLAY_WINDOW) return false;
    // Counters are integers below 2^53; `& WORD_MASK` keeps the low bits of
    // the block number exactly (ToInt32 wraps modulo 2^32, a multiple of the ring).
    const block = Math.floor(counter / 32);
    const bit = counter - block * 32;
    return (this.bitmap[block & WORD_MASK] & (1 << bit)) === 0;
  }

  /** Records `counter` if it is acceptable (call only after authentication). */
  accept(counter: number): boolean {
    if (!(counter < this.limit)) return false;
    const block = Math.floor(counter / 32);
    if (counter > this.greatest) {
      const current = Math.floor(this.greatest / 32);
      const advance = Math.min(block - current, REPLAY_WORDS);
      for (let i = 1; i <= advance; i++) this.bitmap[(current + i) & WORD_MASK] = 0;
      this.greatest = counter;
    } else if (this.greatest - counter >= REPLAY_WINDOW) {
      return false;
    }
    const word = block & WORD_MASK;
    const mask = 1 << (counter - block * 32);
    if ((this.bitmap[word] & mask) !== 0) return false;
    this.bitmap[word] |= mask;
    return true;
  }
}
