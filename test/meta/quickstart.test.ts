/**
 * The README's Quick start has exactly two command lines, and .ci/run runs
 * the second (the test command) verbatim.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');

async function quickStartLines(): Promise<string[]> {
  const readme = await readFile(join(root, 'README.md'), 'utf8');
  const section = /## Quick start\n([\s\S]*?)\n## /.exec(readme + '\n## ')?.[1] ?? '';
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  return block.split('\n').filter((l) => l.trim() !== '');
}

describe('README Quick start', () => {
  it('has exactly two command lines: the demo and the tests', async () => {
    const lines = await quickStartLines();
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/npm run demo$/);
    expect(lines[1]).toMatch(/npm test$/);
  });

  it('.ci/run runs the test line verbatim', async () => {
    const [, testLine] = await quickStartLines();
    const ci = await readFile(join(root, '.ci', 'run'), 'utf8');
    expect(ci.split('\n')).toContain(testLine);
  });
});
