import { describe, expect, it } from 'vitest';
import { warmTransportPath } from '../../src/protocol/warmup.js';
import { BACKENDS, backend } from './helpers.js';

describe('warmTransportPath', () => {
  for (const name of BACKENDS) {
    it(`completes a handshake and carries every packet both ways in memory (${name})`, async () => {
      const crypto = await backend(name);
      const r = warmTransportPath(crypto, () => performance.now(), Date.now, 50);
      // 50 iterations, one packet each way: all of them decrypted as data.
      expect(r.packets).toBe(100);
      expect(r.ms).toBeGreaterThan(0);
    });
  }
});
