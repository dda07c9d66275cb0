/** dns.resolveInterval: default, range, errors that name the field. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/index.js';
import { keyPair, tempDir } from './helpers.js';

const me = keyPair();
const a = keyPair();
let dir: string;
let cleanup: () => void;
beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => cleanup());

function raw(dns?: unknown): Record<string, unknown> {
  const r: Record<string, unknown> = {
    interface: { privateKey: me.priv },
    peers: [{ publicKey: a.pub, endpoint: 'vpn.example.org:51820', allowedIPs: ['10.62.0.2/32'] }],
  };
  if (dns !== undefined) r.dns = dns;
  return r;
}

async function issues(dns: unknown): Promise<string[]> {
  try {
    await parseConfig(raw(dns), { baseDir: dir });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error('expected a ConfigError');
}

describe('dns.resolveInterval', () => {
  it('defaults to 30 s; 0 (off) and 3600 are accepted', async () => {
    expect((await parseConfig(raw(), { baseDir: dir })).dns).toEqual({ resolveInterval: 30 });
    expect((await parseConfig(raw({ resolveInterval: 0 }), { baseDir: dir })).dns).toEqual({ resolveInterval: 0 });
    expect((await parseConfig(raw({ resolveInterval: 3600 }), { baseDir: dir })).dns).toEqual({ resolveInterval: 3600 });
  });

  it.each([
    [3601, /from 0 to 3600/],
    [-1, /from 0 to 3600/],
    [1.5, /integer/],
    ['30', /integer/],
  ])('%s is refused, naming the field', async (value, re) => {
    const lines = await issues({ resolveInterval: value });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^dns\.resolveInterval: /);
    expect(lines[0]).toMatch(re);
  });

  it('an unknown key in the section is refused', async () => {
    expect(await issues({ interval: 30 })).toEqual([expect.stringMatching(/^dns\.interval: .*unknown/i)]);
  });
});
