/**
 * The loader's bounds: nesting depth, non-regular files, file size, value
 * count, issue count, and linear-time duplicate checks. Each case here
 * failed (stack overflow, hang, quadratic time, gigabytes) before the bound.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, openSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, MAX_CONFIG_BYTES, MAX_JSON_DEPTH, MAX_JSON_VALUES, MAX_REPORTED_ISSUES, parseConfig } from '../../src/config/index.js';
import { parseJson } from '../../src/config/json.js';
import { MAX_KEY_FILE_BYTES } from '../../src/config/secrets.js';
import { keyPair, loadError, tempDir, writeFile } from './helpers.js';

const me = keyPair();
const peer = keyPair();

let dir: string;
let cleanup: () => void;
beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => cleanup());

function sparse(path: string, size: number): string {
  const fd = openSync(path, 'w', 0o600);
  ftruncateSync(fd, size);
  closeSync(fd);
  return path;
}

/** CPU seconds (user + system) this process spends in `fn`: steadier than wall time on a shared machine. */
async function cpuSeconds(fn: () => Promise<unknown>): Promise<number> {
  const before = process.cpuUsage();
  await fn();
  const d = process.cpuUsage(before);
  return (d.user + d.system) / 1e6;
}

const goodBody = (extra = ''): string => `{"interface": {"privateKey": "${me.priv}"${extra}}, "peers": [{"publicKey": "${peer.pub}"}]}`;

describe('nesting depth (MAX_JSON_DEPTH)', () => {
  it('refuses 3,000 and 100,000 levels with a line and column, instead of overflowing the stack', async () => {
    for (const depth of [3000, 100_000]) {
      const arrays = writeFile(dir, 'deep-arrays.json', goodBody(`, "x": ${'['.repeat(depth)}${']'.repeat(depth)}`));
      const objects = writeFile(dir, 'deep-objects.json', `{"log": ${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`);
      for (const path of [arrays, objects]) {
        const err = await loadError(path);
        expect(err.issues).toHaveLength(1);
        expect(err.issues[0].message).toMatch(new RegExp(`^JSON syntax error at line 1, column \\d+: nesting deeper than ${MAX_JSON_DEPTH} levels`));
      }
    }
  });

  it('accepts exactly MAX_JSON_DEPTH levels and refuses one more, at the opening bracket', () => {
    const at = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
    expect(() => parseJson(at(MAX_JSON_DEPTH))).not.toThrow();
    expect(() => parseJson(at(MAX_JSON_DEPTH + 1))).toThrow(`line 1, column ${MAX_JSON_DEPTH + 1}: nesting deeper than ${MAX_JSON_DEPTH} levels`);
  });

  it('exits 78 from the compiled CLI (the units stop on 78 instead of restarting)', async () => {
    const { spawnSync } = await import('node:child_process');
    const bin = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');
    const path = writeFile(dir, 'deep.json', `{"peers": ${'['.repeat(5000)}${']'.repeat(5000)}}`);
    const r = spawnSync(process.execPath, [bin, 'check', '--config', path], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(78);
    expect(r.stderr).toMatch(/line 1, column \d+: nesting deeper than 64 levels/);
    expect(r.stderr).not.toContain('Maximum call stack');
  });
});

describe('non-regular files are refused before reading', () => {
  it('a FIFO as the config returns at once (it blocked forever), named as a FIFO', async () => {
    const fifo = join(dir, 'fifo.json');
    execFileSync('mkfifo', [fifo]);
    const err = await loadError(fifo, 3000);
    expect(err.issues[0].message).toBe(`config file ${fifo} is a FIFO (named pipe), not a regular file`);
  });

  it('a symlink to a FIFO, a directory, a character device, a socket and a symlink loop', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const link = join(dir, 'link.json');
    symlinkSync(fifo, link);
    const sub = join(dir, 'sub');
    mkdirSync(sub);
    const loop = join(dir, 'loop');
    symlinkSync(loop, loop);
    const sock = join(dir, 'sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      const cases: [string, RegExp][] = [
        [link, /is a FIFO \(named pipe\), not a regular file/],
        [sub, /is a directory, not a regular file/],
        ['/dev/zero', /is a character device, not a regular file/],
        ['/dev/null', /is a character device, not a regular file/],
        [sock, /cannot read config file .*: not a regular file: a socket or a device without a driver \(ENXIO\)/],
        [loop, /cannot read config file .*: too many levels of symbolic links \(ELOOP\)/],
      ];
      for (const [path, want] of cases) {
        const err = await loadError(path, 3000);
        expect(err.issues[0].message, path).toMatch(want);
      }
    } finally {
      server.close();
    }
  });

  it('a FIFO or a device as a key file, without waiting on it', async () => {
    const fifo = join(dir, 'key.fifo');
    execFileSync('mkfifo', ['-m', '0600', fifo]);
    for (const keyFile of [fifo, '/dev/zero']) {
      const path = writeFile(dir, 'c.json', JSON.stringify({ interface: { privateKeyFile: keyFile } }));
      const err = await loadError(path, 3000);
      expect(err.issues[0].path).toBe('interface.privateKeyFile');
      expect(err.issues[0].message).toMatch(/^key file .* is a (FIFO \(named pipe\)|character device), not a regular file$/);
    }
  });
});

describe('size limits', () => {
  it('refuses a config over 16 MiB before reading it, naming the limit', async () => {
    expect(MAX_CONFIG_BYTES).toBe(16 * 1024 * 1024);
    const huge = sparse(join(dir, 'huge.json'), 50 * 1024 * 1024);
    const before = process.memoryUsage().rss;
    const t0 = performance.now();
    const err = await loadError(huge);
    expect(performance.now() - t0).toBeLessThan(3000);
    // Not read: a read would need 50 MB more (a 50 MB config took 580 MB before).
    expect(process.memoryUsage().rss - before).toBeLessThan(20 * 1024 * 1024);
    expect(err.issues[0].message).toBe(`config file ${huge} is 52428800 bytes, larger than the limit of 16 MiB (16777216 bytes)`);
    const justOver = sparse(join(dir, 'over.json'), MAX_CONFIG_BYTES + 1);
    expect((await loadError(justOver)).issues[0].message).toMatch(/larger than the limit of 16 MiB/);
  });

  it('accepts a config of exactly the limit (the limit is on bytes, not on content)', async () => {
    const body = goodBody();
    const path = writeFile(dir, 'limit.json', body + ' '.repeat(MAX_CONFIG_BYTES - Buffer.byteLength(body)));
    const cfg = await loadConfig(path);
    expect(cfg.peers).toHaveLength(1);
  });

  it('refuses a key file over 4 KiB without reading it (a sparse 1 GiB file)', async () => {
    sparse(join(dir, 'huge.key'), 1 << 30);
    const path = writeFile(dir, 'c.json', JSON.stringify({ interface: { privateKeyFile: 'huge.key' } }));
    const err = await loadError(path);
    expect(err.issues[0]).toEqual({
      path: 'interface.privateKeyFile',
      message: `key file ${dir}/huge.key is 1073741824 bytes, larger than the limit of 4 KiB (${MAX_KEY_FILE_BYTES} bytes)`,
    });
  });

  it('refuses more than MAX_JSON_VALUES values with a line and column', async () => {
    const n = MAX_JSON_VALUES + 10;
    const path = writeFile(dir, 'many.json', `{"peers": [${Array(n).fill('{}').join(',')}]}`);
    let err: ConfigError | undefined;
    expect(await cpuSeconds(async () => (err = await loadError(path, 60_000)))).toBeLessThan(10);
    if (!err) throw new Error('no error');
    expect(err.issues[0].message).toMatch(new RegExp(`^JSON syntax error at line 1, column \\d+: more than ${MAX_JSON_VALUES} values`));
  });

  it('reports the first MAX_REPORTED_ISSUES problems and counts the rest', async () => {
    const raw = { interface: { privateKey: me.priv }, peers: [{ publicKey: peer.pub, allowedIPs: Array.from({ length: 5000 }, (_, i) => `bad-${i}`) }] };
    const err = await parseConfig(raw, { baseDir: dir }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.issues).toHaveLength(MAX_REPORTED_ISSUES);
    expect(e.omitted).toBe(5000 - MAX_REPORTED_ISSUES);
    const lines = e.message.split('\n');
    expect(lines[0]).toBe('invalid configuration (5000 problems):');
    expect(lines).toHaveLength(MAX_REPORTED_ISSUES + 2);
    expect(lines.at(-1)).toBe(`  ... and ${5000 - MAX_REPORTED_ISSUES} more problems not shown (the first ${MAX_REPORTED_ISSUES} are)`);
  });

  it('keeps the first MAX_REPORTED_ISSUES warnings and counts the rest', async () => {
    const list = Array.from({ length: 1000 }, (_, i) => `10.0.${i >> 8}.${i & 255}/32`);
    const raw = {
      interface: { privateKey: me.priv },
      peers: [
        { publicKey: peer.pub, allowedIPs: list },
        { publicKey: keyPair().pub, allowedIPs: list },
      ],
    };
    const cfg = await parseConfig(raw, { baseDir: dir });
    expect(cfg.warnings).toHaveLength(MAX_REPORTED_ISSUES + 1);
    expect(cfg.warnings.at(-1)).toBe(`... and ${1000 - MAX_REPORTED_ISSUES} more warnings not shown (the first ${MAX_REPORTED_ISSUES} are)`);
  });
});

describe('duplicate checks are linear', () => {
  // Before: 100,000 allowed IPs on one peer took 10.6 s and 30,000 addresses
  // 8.2 s (Array.includes). Sizes here are chosen so that the quadratic
  // version needs 40 to 90 s of CPU while the linear one needs 1 to 3 s;
  // the bound (CPU time, not wall time: the machine is shared) sits between.
  it('one peer with 200,000 allowed IPs, with duplicates, in under 15 s of CPU', async () => {
    const list = Array.from({ length: 200_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);
    list.push(list[0], list[12345]);
    const raw = { interface: { privateKey: me.priv }, peers: [{ publicKey: peer.pub, allowedIPs: list }] };
    let cfg: Awaited<ReturnType<typeof parseConfig>> | undefined;
    expect(await cpuSeconds(async () => (cfg = await parseConfig(raw, { baseDir: dir })))).toBeLessThan(15);
    if (!cfg) throw new Error('no config');
    expect(cfg.peers[0].allowedIPs).toHaveLength(200_000);
    expect(cfg.warnings.filter((w) => / is listed twice for this peer/.test(w))).toHaveLength(2);
  }, 60_000);

  it('100,000 interface addresses, with duplicates, in under 15 s of CPU', async () => {
    const list = Array.from({ length: 100_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/8`);
    list.push(list[7]);
    const raw = { interface: { privateKey: me.priv, addresses: list } };
    let cfg: Awaited<ReturnType<typeof parseConfig>> | undefined;
    expect(await cpuSeconds(async () => (cfg = await parseConfig(raw, { baseDir: dir })))).toBeLessThan(15);
    if (!cfg) throw new Error('no config');
    expect(cfg.interface.addresses).toHaveLength(100_000);
    expect(cfg.warnings).toEqual([`interface.addresses[100000]: ${list[7]} is listed twice; using it once`]);
  }, 60_000);
});

describe('key files', () => {
  it('a file shared by many peers is read once, and each peer gets its own copy of the key', async () => {
    const psk = Buffer.alloc(32, 5).toString('base64');
    writeFile(dir, 'shared.psk', `${psk}\n`);
    const peers = Array.from({ length: 2000 }, () => ({ publicKey: keyPair().pub, presharedKeyFile: 'shared.psk' }));
    const cfg = await parseConfig({ interface: { privateKey: me.priv }, peers }, { baseDir: dir });
    expect(cfg.peers.every((p) => Buffer.from(p.presharedKey ?? []).toString('base64') === psk)).toBe(true);
    cfg.peers[0].presharedKey?.fill(0);
    expect(Buffer.from(cfg.peers[1].presharedKey ?? []).toString('base64')).toBe(psk);
  });
});
