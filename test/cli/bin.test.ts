/**
 * The real process entry point: the compiled bin (test/global-setup.ts
 * builds dist/ before the tests), run with node as npm's shim would.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(root, 'dist', 'src', 'cli', 'main.js');

function runBin(path: string, args: string[], input = ''): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path, ...args], { input, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tunvpn-bin-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('compiled tunvpn bin', () => {
  it('exists with a node shebang', () => {
    expect(existsSync(bin), `${bin} (built by test/global-setup.ts)`).toBe(true);
    expect(readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('genkey | pubkey works across two real processes', () => {
    const priv = runBin(bin, ['genkey']);
    expect(priv.code).toBe(0);
    expect(priv.stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    const pub = runBin(bin, ['pubkey'], priv.stdout);
    expect(pub.code).toBe(0);
    expect(pub.stdout).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
    expect(pub.stdout).not.toBe(priv.stdout);
    expect(runBin(bin, ['pubkey'], 'junk').code).toBe(1);
  });

  it('exits with the dispatcher status: 2 for usage, 78 for a bad config', () => {
    const usage = runBin(bin, ['frobnicate']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("unknown command 'frobnicate'");
    const cfg = join(dir, 'bad.json');
    writeFileSync(cfg, '{"interface": {}}');
    const check = runBin(bin, ['check', '--config', cfg]);
    expect(check.code).toBe(78);
    expect(check.stderr).toContain('interface: one of privateKey or privateKeyFile is required');
  });

  it('runs through a symlink, as npm installs bins', () => {
    const link = join(dir, 'tunvpn');
    symlinkSync(bin, link);
    const r = runBin(link, ['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^tunvpn \d+\.\d+\.\d+\n$/);
  });

  it('is what package.json "bin" points at', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin?: Record<string, string> };
    expect(join(root, pkg.bin?.tunvpn ?? '')).toBe(bin);
  });
});
