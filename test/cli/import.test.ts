import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runImport } from '../../src/cli/import.js';
import { convertWgQuick, interfaceNameFromPath } from '../../src/config/wgquick-convert.js';
import { parseWgQuick, WgQuickError } from '../../src/config/wgquick-parse.js';
import { parseConfig } from '../../src/config/index.js';
import { makeKeyPair } from '../../src/testbed/keys.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/wg-quick/', import.meta.url));
const fixture = (name: string) => join(FIXTURES, name);

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    done();
  }
}

async function tvImport(args: string[], stdin = '') {
  const stdout = new Collect();
  const stderr = new Collect();
  const code = await runImport(args, { stdin: Readable.from([Buffer.from(stdin)]), stdout, stderr, env: {} });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** The value of `Key = ...` on the first matching line of a fixture (case-insensitive). */
function fixtureValue(name: string, key: string, nth = 0): string {
  const re = new RegExp(`^\\s*${key}\\s*=\\s*(\\S+)`, 'gim');
  const matches = [...readFileSync(fixture(name), 'utf8').matchAll(re)];
  return matches[nth][1];
}

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'tvimp-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('parseWgQuick', () => {
  it('splits sections, ignores comments and blank lines, keeps line numbers', () => {
    const s = parseWgQuick('# top\n[Interface]\nPrivateKey = abc=  # c\n\n[ peer ]\nAllowedIPs=10.0.0.0/8\n');
    expect(s).toEqual([
      { kind: 'interface', line: 2, entries: [{ key: 'PrivateKey', lkey: 'privatekey', value: 'abc=', line: 3 }] },
      { kind: 'peer', line: 5, entries: [{ key: 'AllowedIPs', lkey: 'allowedips', value: '10.0.0.0/8', line: 6 }] },
    ]);
  });

  it.each([
    ['Key = 1\n', 1, /outside of any section/],
    ['[Interface]\njust words\n', 2, /expected "Key = Value"/],
    ['[Interface]\n= 3\n', 2, /missing key/],
    ['[Interface]\nBad Key = 3\n', 2, /invalid key/],
    ['[Foo]\n', 1, /unknown section/],
    ['[Interface]\n[Interface]\n', 2, /second \[Interface\]/],
    [`[Interface]\nA = ${'x'.repeat(5000)}\n`, 2, /longer than/],
  ])('rejects %j at line %d', (text, line, message) => {
    try {
      parseWgQuick(text);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(WgQuickError);
      expect((err as WgQuickError).line).toBe(line);
      expect((err as WgQuickError).message).toMatch(message);
    }
  });
});

describe('convertWgQuick', () => {
  it('converts the hub config: every carried key, accumulated lists, notes for the rest', () => {
    const { config, privateKey, notes } = convertWgQuick(readFileSync(fixture('wg0.conf'), 'utf8'), 'wg0');
    expect(privateKey).toBe(fixtureValue('wg0.conf', 'PrivateKey'));
    expect(config.interface).toEqual({
      name: 'wg0',
      listenPort: 51820,
      addresses: ['10.62.0.1/24', 'fd62::1/64', '10.63.0.1/24'],
      mtu: 1420,
      hooks: {
        preUp: [],
        postUp: [['/bin/sh', '-c', 'iptables -A FORWARD -i %i -j ACCEPT']],
        preDown: [],
        postDown: [['/bin/sh', '-c', 'iptables -D FORWARD -i %i -j ACCEPT']],
      },
    });
    expect(config.peers).toEqual([
      {
        publicKey: fixtureValue('wg0.conf', 'PublicKey', 0),
        presharedKey: fixtureValue('wg0.conf', 'PresharedKey'),
        endpoint: '203.0.113.7:51820',
        allowedIPs: ['10.62.0.2/32', '10.61.2.0/24', 'fd62::2/128'],
        persistentKeepalive: 25,
      },
      { publicKey: fixtureValue('wg0.conf', 'PublicKey', 1), endpoint: 'vpn.example.org:51821', allowedIPs: ['10.62.0.3/32'] },
      { publicKey: fixtureValue('wg0.conf', 'PublicKey', 2), endpoint: '[2001:db8::4]:51820', allowedIPs: ['10.62.0.4/32'] },
    ]);
    expect(notes).toEqual([
      expect.stringMatching(/^line 8: DNS is not supported/),
      expect.stringMatching(/^line 9: PostUp imported as interface\.hooks\.postUp\[0\] = \["\/bin\/sh", "-c", <the line>\]/),
      expect.stringMatching(/^line 10: PostDown imported as interface\.hooks\.postDown\[0\]/),
      expect.stringMatching(/^line 11: SaveConfig is not supported/),
    ]);
  });

  it('gives listenPort 0 when there is no ListenPort; carries Table = off and FwMark over, saying what happens', () => {
    const { config, notes } = convertWgQuick(readFileSync(fixture('laptop.conf'), 'utf8'), 'laptop');
    expect(config.interface.listenPort).toBe(0);
    expect(config.interface.mtu).toBeUndefined();
    expect(config.peers[0].allowedIPs).toEqual(['0.0.0.0/0', '::/0']);
    expect(config.interface.table).toBe('off');
    expect(config.interface.fwmark).toBe(0x1234);
    expect(notes.join('\n')).toMatch(/line 1: no ListenPort/);
    expect(notes.join('\n')).toMatch(/line 4: Table = off: imported as table "off": tunvpn adds no routes for AllowedIPs/);
    expect(notes.join('\n')).not.toMatch(/adds no routes beyond the interface addresses|not supported/);
  });

  it('issue 16: Table auto (absent), main, a number; FwMark off, decimal, hex; bad values refused with the line', () => {
    const base = (extra: string, allowed = '0.0.0.0/0, ::/0'): string =>
      `[Interface]\nPrivateKey = ${fixtureValue('wg0.conf', 'PrivateKey')}\n${extra}\n[Peer]\nPublicKey = HxDgnSLlE3ikH2XLPf1iZe6LdNLQMVXaMbSzktteo30=\nAllowedIPs = ${allowed}\n`;
    const auto = convertWgQuick(base(''), 'ft0');
    expect(auto.config.interface.table).toBeUndefined();
    expect(auto.notes.join('\n')).toMatch(/a full tunnel, as wg-quick makes it: the default routes go to table 51820, the UDP sockets get fwmark 51820/);
    const marked = convertWgQuick(base('FwMark = 0x10\nTable = auto'), 'ft0');
    expect(marked.config.interface.fwmark).toBe(16);
    expect(marked.notes.join('\n')).toMatch(/table 16, the UDP sockets get fwmark 16/);
    expect(convertWgQuick(base('Table = main'), 'ft0').config.interface.table).toBe(254);
    const numbered = convertWgQuick(base('Table = 1234\nFwMark = 77'), 'ft0');
    expect(numbered.config.interface).toMatchObject({ table: 1234, fwmark: 77 });
    expect(numbered.notes.join('\n')).toMatch(/line 3: Table = 1234: every AllowedIPs route goes to table 1234/);
    expect(convertWgQuick(base('FwMark = off'), 'ft0').config.interface.fwmark).toBeUndefined();
    expect(convertWgQuick(base('', '10.0.0.0/8'), 'ft0').notes.join('\n')).not.toMatch(/full tunnel/);
    expect(() => convertWgQuick(base('Table = 255'), 'ft0')).toThrow(/line 3: Table: 255 is not a table/);
    expect(() => convertWgQuick(base('Table = vpn'), 'ft0')).toThrow(/line 3: Table: "vpn" is not off, auto, main or a table number/);
    expect(() => convertWgQuick(base('FwMark = 0x123456789'), 'ft0')).toThrow(/line 3: FwMark: "0x123456789" is not "off" or a number/);
  });

  it('reads CRLF files', () => {
    const { config } = convertWgQuick(readFileSync(fixture('crlf.conf'), 'utf8'), 'crlf');
    expect(config.interface.listenPort).toBe(51000);
    expect(config.peers[0].allowedIPs).toEqual(['10.9.0.0/16']);
  });

  it('notes repeated single-valued keys and host bits in allowed IPs', () => {
    const key = fixtureValue('wg0.conf', 'PrivateKey');
    const pub = fixtureValue('wg0.conf', 'PublicKey');
    const { config, notes } = convertWgQuick(
      `[Interface]\nPrivateKey=${key}\nListenPort=1\nListenPort=2\n[Peer]\nPublicKey=${pub}\nAllowedIPs=10.1.2.3/24\n`,
      'x',
    );
    expect(config.interface.listenPort).toBe(2);
    expect(config.peers[0].allowedIPs).toEqual(['10.1.2.0/24']);
    expect(notes).toContain('line 4: ListenPort repeats line 3; the last value wins');
    expect(notes.some((n) => /line 7: .*host bits/.test(n))).toBe(true);
  });

  const key = '8F9lL2cEHSxH/fUu+Y9nqWAkNzb1nRg7ZnT3rM0i5Vk=';
  it.each([
    ['no [Interface]', `[Peer]\nPublicKey=${key}\n`, 0, /no \[Interface\]/],
    ['no PrivateKey', '[Interface]\nListenPort=1\n', 1, /no PrivateKey/],
    ['a bad private key', '[Interface]\nPrivateKey=abc\n', 2, /PrivateKey: the private key is not base64/],
    ['a port too big', `[Interface]\nPrivateKey=${key}\nListenPort=70000\n`, 3, /out of range/],
    ['a non-numeric port', `[Interface]\nPrivateKey=${key}\nListenPort=http\n`, 3, /not a number/],
    ['a bad MTU', `[Interface]\nPrivateKey=${key}\nMTU=100\n`, 3, /out of range/],
    ['a bad address', `[Interface]\nPrivateKey=${key}\nAddress=10.0.0.300/24\n`, 3, /Address/],
    ['an unknown interface key', `[Interface]\nPrivateKey=${key}\nJc=4\n`, 3, /unknown key Jc in \[Interface\]/],
    ['a peer without PublicKey', `[Interface]\nPrivateKey=${key}\n[Peer]\nAllowedIPs=10.0.0.0/8\n`, 3, /no PublicKey/],
    ['a bad endpoint', `[Interface]\nPrivateKey=${key}\n[Peer]\nPublicKey=${key}\nEndpoint=nowhere\n`, 5, /Endpoint/],
    ['a bad allowed IP', `[Interface]\nPrivateKey=${key}\n[Peer]\nPublicKey=${key}\nAllowedIPs=10.0.0.0/40\n`, 5, /AllowedIPs/],
    ['a bad keepalive', `[Interface]\nPrivateKey=${key}\n[Peer]\nPublicKey=${key}\nPersistentKeepalive=70000\n`, 5, /out of range/],
    ['an unknown peer key', `[Interface]\nPrivateKey=${key}\n[Peer]\nPublicKey=${key}\nFoo=1\n`, 5, /unknown key Foo in \[Peer\]/],
    ['a duplicate peer', `[Interface]\nPrivateKey=${key}\n[Peer]\nPublicKey=${key}\n[Peer]\nPublicKey=${key}\n`, 5, /same PublicKey as the \[Peer\] on line 3/],
  ])('rejects %s with its line number', (_what, text, line, message) => {
    try {
      convertWgQuick(text, 'wg0');
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(WgQuickError);
      expect((err as WgQuickError).line).toBe(line);
      expect((err as WgQuickError).message).toMatch(message);
    }
  });

  it('never puts a key in an error message', () => {
    const secret = '8F9lL2cEHSxH/fUu+Y9nqWAkNzb1nRg7ZnT3rM0i5V'; // 42 chars: not a key, but key-like
    try {
      convertWgQuick(`[Interface]\nPrivateKey=${secret}\n`, 'wg0');
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain(secret);
    }
  });

  it('maps every hook line to ["/bin/sh", "-c", line] in order, %i kept, with a note each', () => {
    const { config, notes } = convertWgQuick(readFileSync(fixture('nat-gw.conf'), 'utf8'), 'natgw');
    expect(config.interface.hooks).toEqual({
      preUp: [['/bin/sh', '-c', 'sysctl -w net.ipv4.ip_forward=1']],
      postUp: [
        ['/bin/sh', '-c', "nft add table ip tv_%i; nft add chain ip tv_%i post '{ type nat hook postrouting priority 100; }'"],
        ['/bin/sh', '-c', 'nft add rule ip tv_%i post ip saddr 10.64.0.0/24 oifname != "%i" masquerade'],
        ['/bin/sh', '-c', 'echo lower-case key, a = sign and %i%i twice'],
      ],
      preDown: [['/bin/sh', '-c', 'logger -t wg "going down: %i"']],
      postDown: [['/bin/sh', '-c', 'nft delete table ip tv_%i']],
    });
    expect(notes).toEqual([
      expect.stringMatching(/^line 6: PreUp imported as interface\.hooks\.preUp\[0\]/),
      expect.stringMatching(/^line 7: PostUp imported as interface\.hooks\.postUp\[0\]/),
      expect.stringMatching(/^line 8: PostUp imported as interface\.hooks\.postUp\[1\]/),
      expect.stringMatching(/^line 9: PreDown imported as interface\.hooks\.preDown\[0\]/),
      expect.stringMatching(/^line 10: PostDown imported as interface\.hooks\.postDown\[0\]/),
      'line 11: PostDown is empty; nothing to run, left out',
      expect.stringMatching(/^line 12: postup imported as interface\.hooks\.postUp\[2\]/),
    ]);
    // No hook line: no hooks field at all.
    expect(convertWgQuick(readFileSync(fixture('crlf.conf'), 'utf8'), 'crlf').config.interface.hooks).toBeUndefined();
  });

  it('takes the interface name from the file name', () => {
    expect(interfaceNameFromPath('/etc/wireguard/wg0.conf')).toBe('wg0');
    expect(interfaceNameFromPath('site-b')).toBe('site-b');
    expect(() => convertWgQuick('', 'much-too-long-name')).toThrow(/use --name/);
  });
});

describe('tunvpn import', () => {
  it('prints a config that the config loader accepts with the same values (round trip)', async () => {
    const r = await tvImport([fixture('wg0.conf')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/wg0\.conf: line 9: PostUp imported as interface\.hooks\.postUp\[0\].*bash.*%i is kept/);
    expect(r.stderr).toMatch(/output contains the private key/);
    const raw = JSON.parse(r.stdout) as unknown;
    const cfg = await parseConfig(raw, { baseDir: tmp });
    expect(cfg.interface.name).toBe('wg0');
    expect(Buffer.from(cfg.interface.privateKey).toString('base64')).toBe(fixtureValue('wg0.conf', 'PrivateKey'));
    expect(cfg.interface.listenPort).toBe(51820);
    expect(cfg.interface.addresses).toEqual(['10.62.0.1/24', 'fd62::1/64', '10.63.0.1/24']);
    expect(cfg.interface.mtu).toBe(1420);
    expect(cfg.interface.hooks?.postUp).toEqual([['/bin/sh', '-c', 'iptables -A FORWARD -i %i -j ACCEPT']]);
    expect(cfg.interface.hooks?.postDown).toEqual([['/bin/sh', '-c', 'iptables -D FORWARD -i %i -j ACCEPT']]);
    expect(cfg.peers.map((p) => p.publicKey)).toEqual([0, 1, 2].map((i) => fixtureValue('wg0.conf', 'PublicKey', i)));
    expect(Buffer.from(cfg.peers[0].presharedKey ?? new Uint8Array()).toString('base64')).toBe(fixtureValue('wg0.conf', 'PresharedKey'));
    expect(cfg.peers[0].endpoint).toEqual({ host: '203.0.113.7', port: 51820 });
    expect(cfg.peers[1].endpoint).toEqual({ host: 'vpn.example.org', port: 51821 });
    expect(cfg.peers[2].endpoint).toEqual({ host: '2001:db8::4', port: 51820 });
    expect(cfg.peers[0].allowedIPs).toEqual(['10.62.0.2/32', '10.61.2.0/24', 'fd62::2/128']);
    expect(cfg.peers.map((p) => p.persistentKeepalive)).toEqual([25, 0, 0]);
  });

  it('round-trips the laptop and CRLF fixtures too', async () => {
    for (const [file, name] of [
      ['laptop.conf', 'laptop'],
      ['crlf.conf', 'crlf'],
    ] as const) {
      const r = await tvImport([fixture(file)]);
      expect(r.code).toBe(0);
      const cfg = await parseConfig(JSON.parse(r.stdout) as unknown, { baseDir: tmp });
      expect(cfg.interface.name).toBe(name);
      expect(cfg.peers).toHaveLength(1);
    }
  });

  it('--private-key-file writes the key 0600, references it, and never overwrites', async () => {
    const keyPath = join(tmp, 'wg0.key');
    const r = await tvImport([fixture('wg0.conf'), '--private-key-file', keyPath]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { interface: Record<string, unknown> };
    expect(out.interface.privateKeyFile).toBe(keyPath);
    expect(out.interface.privateKey).toBeUndefined();
    expect(r.stdout).not.toContain(fixtureValue('wg0.conf', 'PrivateKey'));
    expect(readFileSync(keyPath, 'utf8')).toBe(`${fixtureValue('wg0.conf', 'PrivateKey')}\n`);
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(r.stderr).toMatch(/contains preshared keys/);
    const cfg = await parseConfig(out, { baseDir: tmp });
    expect(Buffer.from(cfg.interface.privateKey).toString('base64')).toBe(fixtureValue('wg0.conf', 'PrivateKey'));
    const again = await tvImport([fixture('wg0.conf'), '--private-key-file', keyPath]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/cannot write the private key/);
  });

  it('reads stdin with --name', async () => {
    const r = await tvImport(['-', '--name', 'tv9'], readFileSync(fixture('laptop.conf'), 'utf8'));
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { interface: { name: string } }).interface.name).toBe('tv9');
    await expect(tvImport(['-'])).rejects.toThrow(/--name is required/);
  });

  it('exits 78 with the line number on malformed input, printing nothing on stdout', async () => {
    const bad = await tvImport([fixture('bad-key.conf')]);
    expect(bad.code).toBe(78);
    expect(bad.stderr).toMatch(/bad-key\.conf: line 6: PublicKey: the public key is not base64/);
    expect(bad.stdout).toBe('');
    const unknown = await tvImport([fixture('bad-unknown.conf')]);
    expect(unknown.code).toBe(78);
    expect(unknown.stderr).toMatch(/line 3: unknown key Jc/);
  });

  it('exits 1 when the file cannot be read, and 2-style usage errors without FILE', async () => {
    const r = await tvImport([join(tmp, 'absent.conf')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot read/);
    await expect(tvImport([])).rejects.toThrow(/missing FILE/);
    expect((await tvImport(['--help'])).stdout).toContain('Usage: tunvpn import');
  });

  it('imports hooks that the config loader accepts and `check` would pass, and says how it mapped them', async () => {
    const r = await tvImport([fixture('nat-gw.conf')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/nat-gw\.conf: line 7: PostUp imported as interface\.hooks\.postUp\[0\] = \["\/bin\/sh", "-c", <the line>\]/);
    const raw = JSON.parse(r.stdout) as { interface: { hooks: unknown } };
    const cfg = await parseConfig(raw, { baseDir: tmp });
    expect(cfg.interface.hooks?.postUp[1]).toEqual(['/bin/sh', '-c', 'nft add rule ip tv_%i post ip saddr 10.64.0.0/24 oifname != "%i" masquerade']);
    expect(cfg.interface.hooks?.postDown).toEqual([['/bin/sh', '-c', 'nft delete table ip tv_%i']]);
  });

  it('agrees with wg-quick about what goes to wg', async () => {
    // `wg-quick strip` keeps exactly the keys wg understands; our import must carry the same values.
    let stripped: string;
    try {
      stripped = (await promisify(execFile)('wg-quick', ['strip', fixture('wg0.conf')])).stdout;
    } catch {
      console.warn('wg-quick strip unavailable; comparison skipped');
      return;
    }
    const r = await tvImport([fixture('wg0.conf')]);
    const out = JSON.parse(r.stdout) as { peers: { publicKey: string; allowedIPs: string[] }[] };
    const wgPeers = stripped.split(/\[Peer\]/i).slice(1);
    expect(wgPeers).toHaveLength(out.peers.length);
    out.peers.forEach((p, i) => {
      expect(wgPeers[i]).toContain(p.publicKey);
      for (const cidr of p.allowedIPs) expect(wgPeers[i]).toContain(cidr);
    });
    // What wg-quick keeps of [Interface] is what we carry, minus Address/MTU (wg-quick's own).
    expect(stripped).not.toMatch(/PostUp|DNS|SaveConfig/);
  });
});

describe('tunvpn import: hostile input', () => {
  it('refuses a FIFO or a device before reading it (readFile on a FIFO blocked forever)', async () => {
    const { execFileSync } = await import('node:child_process');
    const fifo = join(tmp, 'wg-fifo.conf');
    execFileSync('mkfifo', [fifo]);
    for (const file of [fifo, '/dev/zero']) {
      const t0 = performance.now();
      const r = await tvImport([file, '--name', 'wg0']);
      expect(performance.now() - t0).toBeLessThan(3000);
      expect(r.code).toBe(78);
      expect(r.stderr).toMatch(/is a (FIFO \(named pipe\)|character device), not a regular file/);
    }
  });

  it('never echoes a key quoted by a parse error or a note', async () => {
    const priv = makeKeyPair().privateKey;
    const inputs = [`[${priv}]\n`, `[Interface]\nPrivateKey = ${priv}\nListenPort = ${priv}\n`, `[Interface]\n${priv.replace(/[^A-Za-z0-9]/g, 'A')} = 1\n`];
    for (const text of inputs) {
      const r = await tvImport(['-', '--name', 'wg0'], text);
      expect(r.code).toBe(78);
      expect(r.stderr).not.toContain(priv.slice(0, 12));
      expect(r.stderr).not.toContain(priv.replace(/[^A-Za-z0-9]/g, 'A').slice(0, 12));
    }
  });
});
