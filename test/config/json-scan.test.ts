/**
 * parseJson's fast path (scan, then JSON.parse) against the strict parser
 * on texts dense in quotes, backslashes and escaped quotes: the scan skips
 * strings with indexOf and must end each one exactly where the strict
 * parser does, or a colon inside a string would be counted as a name (or
 * one outside missed) and a duplicate key could slip through.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../bench/lib/config-fuzz.js';
import { parseJson, parseJsonStrictly, scanJson } from '../../src/config/json.js';

const ATOMS = ['"', '\\', '\\"', '\\\\', '\\\\\\"', 'a', ':', ',', '{', '}', '[', ']', ' ', '1', '"k":', '"k":1,"k":2', '\\u0041', '\n', '"x"', 'null'];

function outcome(parse: (t: string, o: { expectObject: boolean }) => unknown, text: string): string {
  try {
    return JSON.stringify(parse(text, { expectObject: true }));
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

function countNames(v: unknown): number {
  if (typeof v !== 'object' || v === null) return 0;
  if (Array.isArray(v)) return v.reduce((n: number, e: unknown) => n + countNames(e), 0);
  return Object.entries(v).reduce((n, [, e]) => n + 1 + countNames(e), 0);
}

describe('parseJson fast path: strings skipped exactly', () => {
  it('gives the strict parser’s value or error on 30,000 escape-heavy texts', () => {
    const g = new Rng(20261201);
    const rnd = (): number => g.next();
    let valid = 0;
    for (let i = 0; i < 30_000; i++) {
      let text: string;
      if (i % 2 === 0) {
        text = '{';
        const n = Math.floor(rnd() * 30);
        for (let k = 0; k < n; k++) text += ATOMS[Math.floor(rnd() * ATOMS.length)];
        if (rnd() < 0.7) text += '}';
      } else {
        // Well-formed JSON whose strings hold the same hazards (JSON.stringify escapes them).
        text = JSON.stringify({ [`${ATOMS[i % ATOMS.length]}${i}`]: { s: ATOMS.slice(0, i % 11).join(''), a: [ATOMS[i % 7], ':'] }, t: '\\"' });
      }
      const strict = outcome(parseJsonStrictly, text);
      expect(outcome(parseJson, text), text).toBe(strict);
      if (!strict.startsWith('error')) {
        valid++;
        // Valid text (so no duplicate key): the scan counts exactly its names, so the fast path
        // is taken, not the strict parser after a miscount (which would be right, but slow).
        expect(scanJson(text, true)?.names, text).toBe(countNames(JSON.parse(text)));
      }
    }
    // Both kinds were exercised.
    expect(valid).toBeGreaterThan(15_000);
    expect(valid).toBeLessThan(30_000);
  });
});
