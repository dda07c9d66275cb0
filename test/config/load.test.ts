import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_PATH, describeSchema, loadConfig, resolveConfigPath } from '../../src/config/index.js';
import { keyPair, loadError, tempDir, writeFile } from './helpers.js';

const me = keyPair();
const peer = keyPair();

let dir: string;
let cleanup: () => void;
beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => cleanup());

describe('resolveConfigPath', () => {
  it('prefers --config, then TUNVPN_CONFIG, then the default, made absolute', () => {
    expect(resolveConfigPath({ config: '/a.json' }, { TUNVPN_CONFIG: '/b.json' })).toBe('/a.json');
    expect(resolveConfigPath({}, { TUNVPN_CONFIG: '/b.json' })).toBe('/b.json');
    expect(resolveConfigPath({ config: undefined }, { TUNVPN_CONFIG: '' })).toBe(DEFAULT_CONFIG_PATH);
    expect(resolveConfigPath({}, {})).toBe('/etc/tunvpn/tunvpn.json');
    expect(resolveConfigPath({ config: 'rel.json' }, {})).toBe(resolve('rel.json'));
  });
});

describe('loadConfig', () => {
  it('loads the example config (config/tunvpn.example.json) with its key files pointed at temp 0600 files', async () => {
    const example = JSON.parse(readFileSync(new URL('../../config/tunvpn.example.json', import.meta.url), 'utf8')) as {
      interface: Record<string, unknown>;
      peers: Record<string, unknown>[];
    };
    expect(example.interface.privateKeyFile).toBe('/etc/tunvpn/private.key');
    // Relative paths: also checks they resolve against the config's directory.
    example.interface.privateKeyFile = 'private.key';
    for (const p of example.peers) if (p.presharedKeyFile) p.presharedKeyFile = 'peer.psk';
    writeFile(dir, 'private.key', `${me.priv}\n`);
    writeFile(dir, 'peer.psk', `${Buffer.alloc(32, 1).toString('base64')}\n`);
    const path = writeFile(dir, 'tunvpn.json', JSON.stringify(example, null, 2));
    const cfg = await loadConfig(path);
    expect(cfg.path).toBe(path);
    expect(cfg.interface.name).toBe('tunvpn0');
    expect(cfg.peers.length).toBe(example.peers.length);
    expect(cfg.peers[0].presharedKey).toEqual(new Uint8Array(32).fill(1));
    expect(cfg.warnings).toEqual([]);
  });

  it('reports a JSON syntax error with line and column, without quoting the text', async () => {
    const secret = me.priv;
    const path = writeFile(dir, 'bad.json', `{\n  "interface": {\n    "privateKey": "${secret}"\n    "listenPort": 1\n  }\n}\n`);
    const err = await loadError(path);
    expect(err.issues).toHaveLength(1);
    expect(err.issues[0].message).toBe('JSON syntax error at line 4, column 5: expected "," or "}" after a property value');
    expect(err.message).toContain(path);
    expect(err.message).not.toContain(secret.slice(0, 8));
  });

  it('rejects duplicate JSON keys, trailing commas, comments, unterminated strings and empty files', async () => {
    const cases: [string, RegExp][] = [
      ['{"interface": {}, "interface": {}}', /line 1, column 19: duplicate key "interface"/],
      ['{"peers": [1,],}', /line 1, column 14: trailing comma before "\]"/],
      ['{"a": 1,}', /trailing comma before "}"/],
      ['// hi\n{}', /line 1, column 1: expected a value/],
      ['{"a": "b', /line 1, column 7: unterminated string/],
      ['', /the file is empty/],
      ['{} x', /unexpected text after the end/],
      ['{"a": 01}', /line 1, column 8: expected "," or "}"/],
      ['{"a": "\\q"}', /invalid escape/],
    ];
    for (const [text, want] of cases) {
      const err = await loadError(writeFile(dir, 'c.json', text));
      expect(err.issues[0].message, text).toMatch(want);
    }
  });

  it('reports a missing config file with its path', async () => {
    const err = await loadError(join(dir, 'nope.json'));
    expect(err.message).toMatch(/cannot read config file .*nope\.json: no such file/);
  });

  it('warns when a config holding an inline key is readable by others', async () => {
    const body = JSON.stringify({ interface: { privateKey: me.priv }, peers: [{ publicKey: peer.pub }] });
    const open = await loadConfig(writeFile(dir, 'open.json', body, 0o644));
    expect(open.warnings.join('\n')).toMatch(/holds a key inline and has mode 0644/);
    expect(open.warnings.join('\n')).not.toContain(me.priv.slice(0, 8));
    const closed = await loadConfig(writeFile(dir, 'closed.json', body, 0o600));
    expect(closed.warnings).toEqual([]);
  });

  it('decodes \\u escapes in strings', async () => {
    const path = writeFile(dir, 'esc.json', `{"interface": {"privateKey": "${me.priv}", "name": "tun\\u0030"}}`);
    expect((await loadConfig(path)).interface.name).toBe('tun0');
  });
});

describe('schema', () => {
  it('documents every field', () => {
    const fields = describeSchema();
    expect(fields.map((f) => f.path)).toEqual(
      expect.arrayContaining(['interface.name', 'interface.privateKeyFile', 'peers', 'peers[].publicKey', 'peers[].allowedIPs', 'log.level', 'crypto.backend']),
    );
    for (const f of fields) expect(f.doc.length, f.path).toBeGreaterThan(20);
  });
});
