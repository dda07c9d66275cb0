import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { warmPipeline } from '../../src/pipeline/warmup.js';
import { BACKENDS, backend } from '../protocol/helpers.js';

const log = createLogger({ level: 'silent' });
const now = (): number => performance.now();

describe('warmPipeline', () => {
  for (const name of BACKENDS) {
    it(`completes handshakes and carries packets both ways through two pipelines in memory (${name})`, async () => {
      const crypto = await backend(name);
      const r = await warmPipeline({ crypto, log, mtu: 1420, now, wallClock: Date.now, iterations: 64 });
      // 64 rounds each way: 56 single packets and 8 bursts of 32 (rounds
      // 7, 15, ... 63), 312 packets per direction. The IPv6 ones never reach
      // a TUN (side B routes no IPv6 to A: A's fail B's source check, B's
      // have no peer): 7 per burst (k = 4, 8, ... 28) and the first of
      // rounds 15, 31, 47, 63, so 60; nor do the 2 unrouted of rounds 7 and
      // 39, so 4. 312 - 64 = 248 each way.
      expect(r.packets).toBe(496);
      expect(r.ms).toBeGreaterThan(0);
    });
  }

  it('leaves nothing behind: no handle, no timer, no file descriptor', async () => {
    const crypto = await backend('sodium-native');
    // The first call loads what the module needs; compare the second.
    await warmPipeline({ crypto, log, mtu: 1420, now, wallClock: Date.now, iterations: 8 });
    const resources = process.getActiveResourcesInfo().sort();
    const fds = readdirSync('/proc/self/fd').length;
    const r = await warmPipeline({ crypto, log, mtu: 1420, now, wallClock: Date.now, iterations: 200 });
    expect(r.packets).toBeGreaterThan(1000);
    expect(process.getActiveResourcesInfo().sort()).toEqual(resources);
    expect(readdirSync('/proc/self/fd').length).toBe(fds);
  });

  it('imports nothing that can reach a real device or socket', () => {
    const source = readFileSync(new URL('../../src/pipeline/warmup.ts', import.meta.url), 'utf8');
    const imports = [...source.matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1]);
    expect(imports.length).toBeGreaterThan(5);
    for (const m of imports) {
      expect(m).not.toMatch(/^node:|native|tun-device|udp|dgram/);
      // Type-only imports of the seams are fine; their implementations are not.
      if (/datagram-transport|packet-device/.test(m)) expect(source).toMatch(new RegExp(`import type [^;]+'${m.replace(/[.]/g, '\\.')}'`));
    }
  });
});
