/**
 * No value that could be key material comes back in any message. Before,
 * a key pasted into privateKeyFile or presharedKeyFile came back in
 * "cannot read key file .../<key>", a key used as a property name in
 * "unknown key" and "duplicate key", and metrics.listen quoted key-like text.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, couldBeKeyMaterial, loadConfig, parseConfig, redactKeyMaterial } from '../../src/config/index.js';
import { escapeAll, escapeControl, joinPath, quote } from '../../src/config/redact.js';
import { keyPair, tempDir, writeFile } from './helpers.js';

const me = keyPair();
const peer = keyPair();
const psk = Buffer.alloc(32, 9).toString('base64');

let dir: string;
let cleanup: () => void;
beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => cleanup());

/** The forms a key may be pasted in. */
function forms(b64: string): string[] {
  const bytes = Buffer.from(b64, 'base64');
  return [b64, bytes.toString('hex'), bytes.toString('base64url')];
}

/** Fails if any 12-character window of any form of any secret is in `text`. */
function expectNoKey(text: string, secrets: string[] = [me.priv, psk, peer.priv]): void {
  for (const s of secrets) {
    for (const form of forms(s)) {
      for (let i = 0; i + 12 <= form.length; i++) {
        expect(text.includes(form.slice(i, i + 12)), `window ${i} of a key in:\n${text}`).toBe(false);
      }
    }
  }
}

async function errorOf(raw: unknown): Promise<ConfigError> {
  try {
    await parseConfig(raw, { baseDir: dir });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

/** The message and the issues (which the daemon logs as they are). */
function everything(err: ConfigError): string {
  return `${err.message}\n${JSON.stringify(err.issues)}\n${err.stack ?? ''}`;
}

describe('couldBeKeyMaterial', () => {
  it('is true for a key in base64, hex or base64url, alone or inside other text', () => {
    for (const f of forms(me.priv)) {
      for (const t of [f, `/etc/tunvpn/${f}`, `${f}.key`, `${f}:51820`, `x${f}y`, ` ${f}\n`]) expect(couldBeKeyMaterial(t), t).toBe(true);
    }
  });

  it('is false for the paths, names and addresses a config normally holds', () => {
    for (const t of [
      '/etc/tunvpn/private.key',
      '/etc/tunvpn/peer-b.psk',
      'site-b',
      'vpn.example.org:51820',
      '10.62.0.0/24',
      'fd00::1/128',
      'tunvpn0',
      'privateKeyFile',
    ]) {
      expect(couldBeKeyMaterial(t), t).toBe(false);
    }
  });

  it('scans a 50 MB string in linear time (the old regular expression overflowed the stack)', () => {
    const t0 = performance.now();
    expect(couldBeKeyMaterial('x'.repeat(50_000_000))).toBe(true);
    expect(couldBeKeyMaterial('x.'.repeat(25_000_000))).toBe(false);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('redactKeyMaterial replaces every key-like run and nothing else', () => {
    expect(redactKeyMaterial(`a ${me.priv} b ${psk}.c`)).toBe('a (not shown: looks like a key) b (not shown: looks like a key).c');
    expect(redactKeyMaterial('/etc/tunvpn/private.key: ok')).toBe('/etc/tunvpn/private.key: ok');
  });
});

describe('no key material in any config error', () => {
  it('a key pasted into privateKeyFile or presharedKeyFile: the file is named by its field', async () => {
    for (const f of forms(me.priv)) {
      for (const file of [f, `/etc/tunvpn/${f}`, `keys/${f}.key`]) {
        const err = await errorOf({ interface: { privateKeyFile: file }, peers: [{ publicKey: peer.pub, presharedKeyFile: file.replace(f, forms(psk)[0]) }] });
        expect(err.issues.map((i) => i.path)).toEqual(['interface.privateKeyFile', 'peers[0].presharedKeyFile']);
        expect(err.issues[0].message).toBe('cannot read key file (path not shown: it looks like a key, not a file name): no such file (ENOENT)');
        expectNoKey(everything(err));
      }
    }
  });

  it('a key-like key file path is not shown in the mode and content errors either', async () => {
    const name = Buffer.from(me.priv, 'base64').toString('base64url');
    writeFile(dir, name, `${me.priv}\n`, 0o644);
    const open = await errorOf({ interface: { privateKeyFile: name } });
    expect(open.issues[0].message).toBe(
      'key file (path not shown: it looks like a key, not a file name) has mode 0644: it must not be readable or writable by group or others (chmod 600 it)',
    );
    writeFile(dir, name, 'junk\n', 0o600);
    const bad = await errorOf({ interface: { privateKeyFile: name } });
    expect(bad.issues[0].message).toMatch(/^key file \(path not shown: it looks like a key, not a file name\): its content is not base64/);
    expectNoKey(everything(open) + everything(bad));
  });

  it('an ordinary key file path is still shown', async () => {
    const err = await errorOf({ interface: { privateKeyFile: 'nope/private.key' } });
    expect(err.issues[0].message).toBe(`cannot read key file ${dir}/nope/private.key: no such file (ENOENT)`);
  });

  it('a key used as a property name, at any level: the path says where, not what', async () => {
    for (const f of forms(me.priv)) {
      const err = await errorOf({ [f]: 1, interface: { privateKey: me.priv, [f]: 2 }, peers: [{ publicKey: peer.pub, [`${f}x`]: 3 }], log: { [psk]: 'info' } });
      expect(err.issues.map((i) => i.path)).toEqual([
        'interface.<hidden-key-like-name>',
        'peers[0].<hidden-key-like-name>',
        'log.<hidden-key-like-name>',
        '<hidden-key-like-name>',
      ]);
      for (const i of err.issues) expect(i.message).toMatch(/^unknown key \(its name is not shown: it looks like a key; known keys: /);
      expectNoKey(everything(err));
    }
  });

  it('a key used as a duplicated property name in the JSON text', async () => {
    const path = writeFile(dir, 'dup.json', `{"interface": {"privateKey": "${me.priv}"}, "${psk}": 1, "${psk}": 2}`);
    try {
      await loadConfig(path);
      throw new Error('expected a ConfigError');
    } catch (err) {
      const e = err as ConfigError;
      expect(e.issues[0].message).toMatch(/^JSON syntax error at line 1, column \d+: duplicate key \(value not shown: it looks like a key\)$/);
      expectNoKey(everything(e));
    }
  });

  it('key-like text in metrics.listen, endpoints, names, addresses, allowed IPs, log level', async () => {
    const k = me.priv;
    const hex = forms(k)[1];
    const cases: unknown[] = [
      { metrics: { listen: `${k}:9586` } },
      { metrics: { listen: `[${k}]:9586` } },
      { metrics: { listen: `${hex}:9586` } },
      { metrics: { listen: k } },
      { metrics: { listen: `x${k}.example:1` } },
      { peers: [{ publicKey: peer.pub, endpoint: `${k}:51820` }] },
      { peers: [{ publicKey: peer.pub, endpoint: `${hex}.example.org:1` }] },
      {
        peers: [
          { publicKey: peer.pub, name: k },
          { publicKey: keyPair().pub, name: k },
        ],
      },
      { peers: [{ publicKey: peer.pub, allowedIPs: [k, `${hex}/32`] }] },
      { peers: [{ publicKey: k }, { publicKey: k }] },
      { interface: { privateKey: me.priv, addresses: [`${k}/24`], name: k } },
      { log: { level: k }, crypto: { backend: hex } },
    ];
    for (const extra of cases) {
      const raw = { interface: { privateKey: me.priv }, ...(extra as Record<string, unknown>) };
      const err = await errorOf(raw);
      expectNoKey(everything(err));
    }
  });

  it('warnings hide key-like peer names too', async () => {
    const cfg = await parseConfig(
      {
        interface: { privateKey: me.priv },
        peers: [
          { publicKey: peer.pub, name: psk, allowedIPs: ['10.0.0.0/24'] },
          { publicKey: keyPair().pub, allowedIPs: ['10.0.0.0/24'] },
        ],
      },
      { baseDir: dir },
    );
    expect(cfg.warnings[0]).toMatch(/also an allowed IP of peers\[0\] \(\(value not shown: it looks like a key\)\)/);
    expectNoKey(cfg.warnings.join('\n'));
  });
});

describe('text from a config is shown on one line, without control characters', () => {
  it('escapeControl keeps newline and tab, escapes the rest; escapeAll escapes those too', () => {
    expect(escapeControl('a\u001b[2Jb\nc\td\u0000e\u007f\u009b\u202e')).toBe('a\\u001b[2Jb\nc\td\\u0000e\\u007f\\u009b\\u202e');
    expect(escapeAll('a\nb\tc')).toBe('a\\u000ab\\u0009c');
    expect(escapeControl(escapeControl('\u001b'))).toBe('\\u001b');
  });

  it('escapeControl lets colour (SGR) sequences through only when asked, and nothing else', () => {
    expect(escapeControl('\u001b[1;32mok\u001b[0m', true)).toBe('\u001b[1;32mok\u001b[0m');
    expect(escapeControl('\u001b[1;32mok\u001b[0m')).toBe('\\u001b[1;32mok\\u001b[0m');
    expect(escapeControl('\u001b[2J\u001b]0;title\u0007\u001b[10A', true)).toBe('\\u001b[2J\\u001b]0;title\\u0007\\u001b[10A');
  });

  it('quote escapes, uses JSON string syntax and cuts long values', () => {
    expect(quote('site-b')).toBe('"site-b"');
    expect(quote('a"b\\c\nd\u001b')).toBe('"a\\"b\\\\c\\nd\\u001b"');
    expect(quote('x.'.repeat(100))).toBe(`"${'x.'.repeat(32)}..." (200 characters)`);
  });

  it('a long bad value keeps its specific reason, quoted cut down', async () => {
    const bad = `10.0.0.1/${'9.'.repeat(35)}`;
    const err = await errorOf({ interface: { privateKey: me.priv, addresses: [bad] } });
    expect(err.issues[0]).toEqual({
      path: 'interface.addresses[0]',
      message: `"${bad.slice(0, 64)}..." (${bad.length} characters) has an invalid prefix length (0 to 32)`,
    });
  });

  it('joinPath keeps paths one token and unambiguous', () => {
    expect(joinPath('', 'interface')).toBe('interface');
    expect(joinPath('interface', 'name')).toBe('interface.name');
    expect(joinPath('interface', 'a.b')).toBe('interface["a.b"]');
    expect(joinPath('', '\r\nInjected: line')).toBe('["\\r\\nInjected: line"]');
    expect(joinPath('log', psk)).toBe('log.<hidden-key-like-name>');
  });

  it('a newline or ESC in a property name or value cannot forge a line of the message', async () => {
    const err = await errorOf({
      interface: { privateKey: me.priv, 'x\n  interface.name: fine': 1 },
      peers: [{ publicKey: peer.pub, allowedIPs: ['\n  forged: line\u001b[2J'] }],
    });
    const lines = err.message.split('\n');
    expect(lines).toHaveLength(err.issues.length + 1);
    expect(err.message).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(lines.slice(1).every((l) => /^ {2}\S/.test(l))).toBe(true);
  });
});
