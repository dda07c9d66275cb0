/**
 * The reload memo (src/config/memo.ts) lives as long as the daemon, and a
 * JavaScript string cannot be wiped: it must hold no key text (strings). An inline
 * private key and inline preshared keys stay out of it, and leaving them
 * out changes nothing the load gives (the key is resolved by every load).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, loadConfigMemo } from '../../src/config/index.js';
import { keyPair, tempDir, writeFile } from './helpers.js';

const { dir, cleanup } = tempDir();
afterAll(cleanup);

const own = keyPair();
const rotated = keyPair();
const peers = Array.from({ length: 6 }, () => keyPair());
const psk = Buffer.alloc(32, 7).toString('base64');

function raw(privateKey: string, prefix = '10.1.3.0/24'): Record<string, unknown> {
  return {
    interface: { privateKey, addresses: ['10.0.0.1/24'] },
    peers: peers.map((p, i) => ({
      publicKey: p.pub,
      allowedIPs: [i === 3 ? prefix : `10.1.${i}.0/24`],
      ...(i === 1 ? { presharedKey: psk } : {}),
    })),
  };
}

/**
 * Every string reachable from the memo (Maps included). Typed arrays are
 * left out: the memo's PeerConfigs are the running config's own objects,
 * whose key buffers are wiped with that config, not copies.
 */
function dump(v: unknown, seen = new Set<unknown>()): string {
  if (typeof v !== 'object' || v === null) return String(v);
  if (seen.has(v)) return '';
  seen.add(v);
  if (v instanceof Map) return [...v].map(([k, x]) => `${dump(k, seen)}=${dump(x, seen)}`).join(',');
  if (ArrayBuffer.isView(v)) return '';
  return Object.entries(v)
    .map(([k, x]) => `${k}:${dump(x, seen)}`)
    .join(',');
}

describe('config memo: no key text', () => {
  it('keeps neither the inline private key nor an inline preshared key, in any form', async () => {
    const path = writeFile(dir, 'a.json', JSON.stringify(raw(own.priv)));
    const { memo } = await loadConfigMemo(path);
    expect(memo).toBeDefined();
    const text = dump(memo);
    expect(text).toContain(peers[0].pub); // it is the memo (public keys are in it)
    expect(text).not.toContain(own.priv);
    expect(text).not.toContain(psk);
    // The next load's memo neither (the incremental path makes it).
    writeFile(dir, 'a.json', JSON.stringify(raw(own.priv, '10.7.3.0/24')));
    const second = await loadConfigMemo(path, { memo });
    expect(second.incremental).toBe(true);
    const text2 = dump(second.memo);
    expect(text2).not.toContain(own.priv);
    expect(text2).not.toContain(psk);
  });

  it('a reload that changes only the inline private key takes the incremental path and gives the new key, as a full load does', async () => {
    const path = writeFile(dir, 'b.json', JSON.stringify(raw(own.priv)));
    const { memo } = await loadConfigMemo(path);
    writeFile(dir, 'b.json', JSON.stringify(raw(rotated.priv)));
    const next = await loadConfigMemo(path, { memo });
    expect(next.incremental).toBe(true);
    const full = await loadConfig(path);
    expect(Buffer.from(next.config.interface.privateKey).toString('base64')).toBe(rotated.priv);
    expect(next.config).toStrictEqual(full);
  });
});
