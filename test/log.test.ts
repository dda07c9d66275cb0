import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';

function capture(pretty: boolean): { log: ReturnType<typeof createLogger>; text: () => string } {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  return { log: createLogger({ level: 'info', pretty, destination: out }), text: () => text };
}

describe('logger', () => {
  it('writes JSON lines and censors secret field names even if passed by mistake', async () => {
    const { log, text } = capture(false);
    log.info({ privateKey: 'AAAA-secret', peer: { presharedKey: 'BBBB-secret' }, publicKey: 'pub' }, 'started');
    await new Promise((r) => setImmediate(r));
    const rec = JSON.parse(text().trim()) as Record<string, unknown>;
    expect(rec.msg).toBe('started');
    expect(rec.publicKey).toBe('pub');
    expect(text()).not.toContain('secret');
    expect(text()).toContain('[redacted]');
  });

  it('pretty-prints for a TTY, with the same censoring', async () => {
    const { log, text } = capture(true);
    log.warn({ privateKey: 'AAAA-secret' }, 'careful');
    await new Promise((r) => setTimeout(r, 20));
    expect(text()).toMatch(/WARN.*careful/);
    expect(text()).not.toContain('AAAA-secret');
    expect(() => JSON.parse(text())).toThrow();
  });

  it('drops records below the level', async () => {
    const { log, text } = capture(false);
    log.debug('not shown');
    await new Promise((r) => setImmediate(r));
    expect(text()).toBe('');
  });
});
