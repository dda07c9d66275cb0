import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { publicKeyOf } from '../../src/testbed/keys.js';
import { describeIntegration } from '../helpers/netns.js';
import { tunvpn } from './helpers.js';

const KEY_LINE = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n$/;

/** Public key by node:crypto, independent of the code under test. */
function referencePub(privB64: string): string {
  return publicKeyOf(Buffer.from(privB64, 'base64')).toString('base64');
}

describe('tunvpn genkey / genpsk', () => {
  it('genkey prints a clamped 32-byte key as 44-char base64 and a newline', async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const r = await tunvpn(['genkey']);
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(KEY_LINE);
      const key = Buffer.from(r.stdout.trim(), 'base64');
      expect(key.length).toBe(32);
      expect(key[0] & 7).toBe(0);
      expect(key[31] & 0x80).toBe(0);
      expect(key[31] & 0x40).toBe(0x40);
      seen.add(r.stdout);
    }
    expect(seen.size).toBe(20);
  });

  it('genpsk prints 32 random bytes as base64 and a newline', async () => {
    const a = await tunvpn(['genpsk']);
    const b = await tunvpn(['genpsk']);
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(KEY_LINE);
    expect(a.stdout).not.toBe(b.stdout);
  });
});

describe('tunvpn pubkey', () => {
  it('derives the public key of a genkey key, accepting trailing whitespace and NULs', async () => {
    const priv = (await tunvpn(['genkey'])).stdout.trim();
    for (const input of [priv, `${priv}\n`, `${priv}\r\n \t\v\f\0\n\n`]) {
      const r = await tunvpn(['pubkey'], { stdin: input });
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${referencePub(priv)}\n`);
    }
  });

  it('rejects bad input like wg pubkey: message and exit status 1', async () => {
    const priv = (await tunvpn(['genkey'])).stdout.trim();
    const cases: [string, string][] = [
      ['', 'Key is not the correct length or format'],
      ['abc\n', 'Key is not the correct length or format'],
      [priv.slice(0, 43), 'Key is not the correct length or format'],
      [`${priv}x`, 'Trailing characters found after key'],
      [`${priv}\nextra\n`, 'Trailing characters found after key'],
      [`  ${priv}\n`, 'Trailing characters found after key'],
      [`${'!'.repeat(43)}=\n`, 'Key is not the correct length or format'],
      [`${priv.slice(0, 42)}B=\n`, 'Key is not the correct length or format'],
    ];
    for (const [input, message] of cases) {
      const r = await tunvpn(['pubkey'], { stdin: input });
      expect(r.code, JSON.stringify(input)).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(`tunvpn: ${message}\n`);
      expect(r.stderr).not.toContain(priv.slice(0, 8));
    }
  });
});

describeIntegration('tunvpn pubkey against wg', ['wg'], () => {
  it('gives the same public key as `wg pubkey` for keys made by `wg genkey`', async () => {
    for (let i = 0; i < 10; i++) {
      const priv = execFileSync('wg', ['genkey'], { encoding: 'utf8' });
      const want = execFileSync('wg', ['pubkey'], { input: priv, encoding: 'utf8' });
      const r = await tunvpn(['pubkey'], { stdin: priv });
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(want);
    }
  });

  it('fails on the same bad inputs as `wg pubkey`, with the same message and status', async () => {
    const priv = execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim();
    for (const input of ['', 'short', `${priv}x`, `  ${priv}`, `${priv.slice(0, 42)}B=`, `${priv}\n\0 \n`]) {
      let wgCode = 0;
      let wgErr = '';
      let wgOut = '';
      try {
        wgOut = execFileSync('wg', ['pubkey'], { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
      } catch (err) {
        const e = err as { status: number; stderr: string };
        wgCode = e.status;
        wgErr = e.stderr;
      }
      const r = await tunvpn(['pubkey'], { stdin: input });
      expect(r.code, JSON.stringify(input)).toBe(wgCode);
      expect(r.stdout).toBe(wgOut);
      expect(r.stderr.replace(/^tunvpn:/, 'wg:')).toBe(wgErr);
    }
  });

  it('makes keys `wg pubkey` accepts', async () => {
    const priv = (await tunvpn(['genkey'])).stdout;
    const want = execFileSync('wg', ['pubkey'], { input: priv, encoding: 'utf8' });
    expect((await tunvpn(['pubkey'], { stdin: priv })).stdout).toBe(want);
  });
});
