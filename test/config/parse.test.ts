import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig, type TunvpnConfig } from '../../src/config/index.js';
import { keyPair, tempDir, writeFile } from './helpers.js';

const me = keyPair();
const a = keyPair();
const b = keyPair();
const psk = Buffer.alloc(32, 7).toString('base64');

let dir: string;
let cleanup: () => void;
beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => cleanup());

function base(): Record<string, unknown> {
  return {
    interface: { privateKey: me.priv, addresses: ['10.62.0.1/24'] },
    peers: [{ publicKey: a.pub, allowedIPs: ['10.62.0.2/32'] }],
  };
}

async function parse(raw: unknown): Promise<TunvpnConfig> {
  return parseConfig(raw, { baseDir: dir });
}

/** The ConfigError parseConfig throws, with its issues as "path: message" lines. */
async function issuesOf(raw: unknown): Promise<{ err: ConfigError; lines: string[] }> {
  try {
    await parse(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.code).toBe('CONFIG_INVALID');
    return { err: e, lines: e.issues.map((i) => `${i.path}: ${i.message}`) };
  }
  throw new Error('expected a ConfigError');
}

async function expectIssue(raw: unknown, path: string, reason: RegExp): Promise<ConfigError> {
  const { err } = await issuesOf(raw);
  const hit = err.issues.find((i) => i.path === path && reason.test(i.message));
  expect(hit, `issue at ${path} matching ${reason}; got:\n${err.message}`).toBeDefined();
  // The message lists every issue, one per line.
  for (const i of err.issues) expect(err.message).toContain(i.path ? `${i.path}: ${i.message}` : i.message);
  return err;
}

describe('parseConfig: valid input', () => {
  it('fills defaults and converts keys, CIDRs and endpoints', async () => {
    const raw = base();
    (raw.peers as Record<string, unknown>[])[0].endpoint = '[2001:db8::7]:51821';
    (raw.peers as Record<string, unknown>[])[0].allowedIPs = ['10.62.0.2/32', 'fd62:0:0::/48', '10.1.2.3/16'];
    const cfg = await parse(raw);
    expect(cfg.interface.name).toBe('tunvpn0');
    expect(cfg.interface.listenPort).toBe(51820);
    expect(cfg.interface.mtu).toBe(1420);
    expect(cfg.interface.addresses).toEqual(['10.62.0.1/24']);
    expect(Buffer.from(cfg.interface.privateKey).toString('base64')).toBe(me.priv);
    expect(cfg.log.level).toBe('info');
    expect(cfg.crypto.backend).toBe('auto');
    expect(cfg.metrics).toEqual({});
    const withMetrics = await parse({ ...raw, metrics: { listen: '[::1]:9586' } });
    expect(withMetrics.metrics.listen).toEqual({ host: '::1', port: 9586 });
    expect(cfg.path).toBeUndefined();
    const [p] = cfg.peers;
    expect(p.publicKey).toBe(a.pub);
    expect(Buffer.from(p.publicKeyBytes).toString('base64')).toBe(a.pub);
    expect(p.endpoint).toEqual({ host: '2001:db8::7', port: 51821 });
    expect(p.allowedIPs).toEqual(['10.62.0.2/32', 'fd62::/48', '10.1.0.0/16']);
    expect(p.persistentKeepalive).toBe(0);
    expect(p.name).toBeUndefined();
    expect(p.presharedKey).toBeUndefined();
    expect('name' in p).toBe(false);
    expect(cfg.warnings.some((w) => w.startsWith('peers[0].allowedIPs[2]: host bits are set; using 10.1.0.0/16'))).toBe(true);
  });

  it('accepts an empty peer list, empty addresses and listenPort 0', async () => {
    const cfg = await parse({ interface: { privateKey: me.priv, listenPort: 0 } });
    expect(cfg.peers).toEqual([]);
    expect(cfg.interface.addresses).toEqual([]);
    expect(cfg.interface.listenPort).toBe(0);
  });

  it('accepts every endpoint form', async () => {
    const forms: [string, { host: string; port: number }][] = [
      ['203.0.113.7:51820', { host: '203.0.113.7', port: 51820 }],
      ['[fd00::1]:1', { host: 'fd00::1', port: 1 }],
      ['vpn.example.org:65535', { host: 'vpn.example.org', port: 65535 }],
      ['localhost:5000', { host: 'localhost', port: 5000 }],
    ];
    for (const [text, want] of forms) {
      const raw = base();
      (raw.peers as Record<string, unknown>[])[0].endpoint = text;
      expect((await parse(raw)).peers[0].endpoint, text).toEqual(want);
    }
  });

  it('reads key files relative to baseDir, including a preshared key file', async () => {
    writeFile(dir, 'private.key', `${me.priv}\n`);
    writeFile(dir, 'peer.psk', `${psk}\n`);
    const cfg = await parse({
      interface: { privateKeyFile: 'private.key' },
      peers: [
        { publicKey: a.pub, presharedKeyFile: 'peer.psk', name: 'a' },
        { publicKey: b.pub, presharedKey: psk },
      ],
    });
    expect(Buffer.from(cfg.interface.privateKey).toString('base64')).toBe(me.priv);
    expect(cfg.peers[0].presharedKey).toEqual(new Uint8Array(32).fill(7));
    expect(cfg.peers[1].presharedKey).toEqual(new Uint8Array(32).fill(7));
    expect(cfg.peers[0].name).toBe('a');
  });

  it('warns (does not fail) on an allowed IP claimed by two peers: the later peer gets it', async () => {
    const cfg = await parse({
      interface: { privateKey: me.priv },
      peers: [
        { name: 'first', publicKey: a.pub, allowedIPs: ['10.0.0.0/24'] },
        { name: 'second', publicKey: b.pub, allowedIPs: ['10.0.0.7/24', '10.0.1.0/24', '10.0.1.0/24'] },
      ],
    });
    expect(cfg.peers[1].allowedIPs).toEqual(['10.0.0.0/24', '10.0.1.0/24']);
    const conflict = cfg.warnings.find((w) => w.includes('conflict'));
    expect(conflict).toMatch(
      /^peers\[1\]\.allowedIPs\[0\]: conflict: 10\.0\.0\.0\/24 is also an allowed IP of peers\[0\] \("first"\); the later peer, peers\[1\] \("second"\), gets it/,
    );
    expect(cfg.warnings.some((w) => w.startsWith('peers[1].allowedIPs[2]: 10.0.1.0/24 is listed twice'))).toBe(true);
  });

  it('keeps host parts of interface addresses and canonicalises IPv6', async () => {
    const cfg = await parse({ interface: { privateKey: me.priv, addresses: ['10.62.0.1/24', 'FD62:0::1/64', '10.9.9.9'] } });
    expect(cfg.interface.addresses).toEqual(['10.62.0.1/24', 'fd62::1/64', '10.9.9.9/32']);
  });

  it('accepts a null optional field as absent', async () => {
    const raw = base();
    (raw.peers as Record<string, unknown>[])[0].endpoint = null;
    expect((await parse(raw)).peers[0].endpoint).toBeUndefined();
  });
});

describe('parseConfig: every rejection names the path and the reason', () => {
  const cases: [string, (raw: Record<string, unknown>) => void, string, RegExp][] = [
    ['unknown top-level key', (r) => (r.peer = []), 'peer', /unknown key.*did you mean "peers"/],
    ['unknown interface key', (r) => ((r.interface as Record<string, unknown>).privateKye = 'x'), 'interface.privateKye', /unknown key.*"privateKey"/],
    ['unknown peer key', (r) => (peer0(r).allowedIps = []), 'peers[0].allowedIps', /unknown key.*"allowedIPs"/],
    ['unknown log key', (r) => (r.log = { level: 'info', colour: true }), 'log.colour', /unknown key/],
    ['interface not an object', (r) => (r.interface = 'x'), 'interface', /must be an object/],
    ['peers not an array', (r) => (r.peers = {}), 'peers', /must be an array/],
    ['peer not an object', (r) => (r.peers = [42]), 'peers[0]', /must be an object/],
    ['bad interface name (too long)', (r) => (iface(r).name = 'averyveryverylongname'), 'interface.name', /longer than 15 bytes/],
    ['bad interface name (slash)', (r) => (iface(r).name = 'tun/0'), 'interface.name', /not a valid Linux interface name/],
    ['bad interface name (empty)', (r) => (iface(r).name = ''), 'interface.name', /must not be empty/],
    ['port too large', (r) => (iface(r).listenPort = 65536), 'interface.listenPort', /from 0 to 65535/],
    ['port negative', (r) => (iface(r).listenPort = -1), 'interface.listenPort', /from 0 to 65535/],
    ['port not integer', (r) => (iface(r).listenPort = 5.5), 'interface.listenPort', /integer/],
    ['port as string', (r) => (iface(r).listenPort = '51820'), 'interface.listenPort', /integer.*string/],
    ['mtu too small', (r) => (iface(r).mtu = 575), 'interface.mtu', /from 576 to 65535/],
    ['mtu too large', (r) => (iface(r).mtu = 65536), 'interface.mtu', /from 576 to 65535/],
    ['mtu below 1280 with IPv6', (r) => Object.assign(iface(r), { mtu: 1000, addresses: ['fd00::1/64'] }), 'interface.mtu', /at least 1280.*IPv6/],
    ['bad address', (r) => (iface(r).addresses = ['10.62.0.1/24', '10.62.0.300/24']), 'interface.addresses[1]', /not an IPv4 or IPv6 address/],
    ['bad address prefix', (r) => (iface(r).addresses = ['10.62.0.1/33']), 'interface.addresses[0]', /prefix length/],
    ['address not a string', (r) => (iface(r).addresses = [7]), 'interface.addresses[0]', /must be a CIDR address string/],
    ['addresses not an array', (r) => (iface(r).addresses = '10.0.0.1/24'), 'interface.addresses', /must be an array/],
    ['missing private key', (r) => delete iface(r).privateKey, 'interface', /one of privateKey or privateKeyFile is required/],
    ['both key and key file', (r) => (iface(r).privateKeyFile = 'k'), 'interface', /either privateKey or privateKeyFile, not both/],
    ['private key too short', (r) => (iface(r).privateKey = 'AAAA'), 'interface.privateKey', /not base64 of exactly 32 bytes \(4 characters/],
    ['private key bad char', (r) => (iface(r).privateKey = `${'A'.repeat(42)}!=`), 'interface.privateKey', /bad character or padding/],
    ['private key non-canonical', (r) => (iface(r).privateKey = `${'A'.repeat(42)}B=`), 'interface.privateKey', /bad character or padding/],
    ['private key not a string', (r) => (iface(r).privateKey = 12), 'interface.privateKey', /must be a string/],
    ['missing public key', (r) => delete peer0(r).publicKey, 'peers[0].publicKey', /is required/],
    ['public key 31 bytes', (r) => (peer0(r).publicKey = Buffer.alloc(31, 1).toString('base64')), 'peers[0].publicKey', /exactly 32 bytes/],
    ['public key 33 bytes', (r) => (peer0(r).publicKey = Buffer.alloc(33, 1).toString('base64')), 'peers[0].publicKey', /exactly 32 bytes/],
    ['bad preshared key', (r) => (peer0(r).presharedKey = 'nope'), 'peers[0].presharedKey', /exactly 32 bytes/],
    [
      'both psk and psk file',
      (r) => Object.assign(peer0(r), { presharedKey: psk, presharedKeyFile: 'x' }),
      'peers[0]',
      /either presharedKey or presharedKeyFile, not both/,
    ],
    ['bad allowed IP', (r) => (peer0(r).allowedIPs = ['10.0.0.0/8', 'banana']), 'peers[0].allowedIPs[1]', /not an IPv4 or IPv6 address/],
    ['bad allowed IP prefix', (r) => (peer0(r).allowedIPs = ['fd00::/129']), 'peers[0].allowedIPs[0]', /prefix length/],
    ['allowed IP with zone', (r) => (peer0(r).allowedIPs = ['fe80::1%eth0/128']), 'peers[0].allowedIPs[0]', /zone/],
    ['endpoint without port', (r) => (peer0(r).endpoint = '203.0.113.7'), 'peers[0].endpoint', /no port/],
    ['endpoint port 0', (r) => (peer0(r).endpoint = '203.0.113.7:0'), 'peers[0].endpoint', /invalid port/],
    ['endpoint port too big', (r) => (peer0(r).endpoint = '203.0.113.7:65536'), 'peers[0].endpoint', /invalid port/],
    ['endpoint IPv6 without brackets', (r) => (peer0(r).endpoint = 'fd00::1:51820'), 'peers[0].endpoint', /must be in brackets/],
    ['endpoint bad IPv6 in brackets', (r) => (peer0(r).endpoint = '[fd00::zz]:51820'), 'peers[0].endpoint', /not an IPv6 address/],
    ['endpoint bad IPv4', (r) => (peer0(r).endpoint = '10.0.0.256:51820'), 'peers[0].endpoint', /neither an IPv4 address nor a hostname/],
    ['endpoint bad hostname', (r) => (peer0(r).endpoint = 'bad_host!:51820'), 'peers[0].endpoint', /neither an IPv4 address nor a hostname/],
    ['endpoint not a string', (r) => (peer0(r).endpoint = 51820), 'peers[0].endpoint', /host:port/],
    ['keepalive too large', (r) => (peer0(r).persistentKeepalive = 65536), 'peers[0].persistentKeepalive', /from 0 to 65535/],
    ['keepalive negative', (r) => (peer0(r).persistentKeepalive = -5), 'peers[0].persistentKeepalive', /from 0 to 65535/],
    ['empty peer name', (r) => (peer0(r).name = ''), 'peers[0].name', /must not be empty/],
    ['bad log level', (r) => (r.log = { level: 'loud' }), 'log.level', /must be one of trace, debug, info, warn, error, fatal, silent/],
    ['bad crypto backend', (r) => (r.crypto = { backend: 'openssl' }), 'crypto.backend', /must be one of auto, sodium-native, libsodium-wrappers/],
    ['metrics on a host name', (r) => (r.metrics = { listen: 'localhost:9586' }), 'metrics.listen', /must be an IP address, not a name/],
    ['metrics without a port', (r) => (r.metrics = { listen: '127.0.0.1' }), 'metrics.listen', /has no port/],
    ['unknown metrics key', (r) => (r.metrics = { port: 9586 }), 'metrics.port', /unknown/i],
    [
      'duplicate public key',
      (r) => (r.peers = [{ publicKey: a.pub }, { publicKey: b.pub }, { publicKey: a.pub }]),
      'peers[2].publicKey',
      /duplicate public key \(same as peers\[0\]\.publicKey\)/,
    ],
    [
      'duplicate peer name',
      (r) =>
        (r.peers = [
          { publicKey: a.pub, name: 'x' },
          { publicKey: b.pub, name: 'x' },
        ]),
      'peers[1].name',
      /duplicate name "x" \(also peers\[0\]\.name\)/,
    ],
    ['peer is ourselves', (r) => (r.peers = [{ publicKey: a.pub }, { publicKey: me.pub }]), 'peers[1].publicKey', /our own public key/],
  ];

  function iface(r: Record<string, unknown>): Record<string, unknown> {
    return r.interface as Record<string, unknown>;
  }
  function peer0(r: Record<string, unknown>): Record<string, unknown> {
    return (r.peers as Record<string, unknown>[])[0];
  }

  for (const [name, mutate, path, reason] of cases) {
    it(name, async () => {
      const raw = base();
      mutate(raw);
      await expectIssue(raw, path, reason);
    });
  }

  it('rejects a non-object config', async () => {
    for (const raw of [null, [], 'x', 3]) await expectIssue(raw, '', /must be a JSON object/);
  });

  it('rejects a "__proto__" key as unknown instead of following it', async () => {
    const raw = JSON.parse(`{"interface":{"privateKey":"${me.priv}"},"__proto__":{"x":1}}`) as unknown;
    await expectIssue(raw, '__proto__', /unknown key/);
  });
});

describe('parseConfig: key files', () => {
  it('refuses a 0644 private key file, naming the path and the mode', async () => {
    const file = writeFile(dir, 'private.key', `${me.priv}\n`, 0o644);
    const err = await expectIssue({ interface: { privateKeyFile: 'private.key' } }, 'interface.privateKeyFile', /mode 0644/);
    expect(err.message).toContain(file);
    expect(err.message).toContain('chmod 600');
    expect(err.message).not.toContain(me.priv);
  });

  it('refuses group-writable (0620) and other-readable (0604) key files, preshared too', async () => {
    writeFile(dir, 'private.key', me.priv, 0o620);
    writeFile(dir, 'peer.psk', psk, 0o604);
    const { lines } = await issuesOf({ interface: { privateKeyFile: 'private.key' }, peers: [{ publicKey: a.pub, presharedKeyFile: 'peer.psk' }] });
    expect(lines).toEqual([
      expect.stringMatching(/^interface\.privateKeyFile: key file .*private\.key has mode 0620/),
      expect.stringMatching(/^peers\[0\]\.presharedKeyFile: key file .*peer\.psk has mode 0604/),
    ]);
  });

  it('reports a missing key file with its absolute path', async () => {
    const err = await expectIssue(
      { interface: { privateKeyFile: 'nope/private.key' } },
      'interface.privateKeyFile',
      /cannot read key file .*nope\/private\.key: no such file/,
    );
    expect(err.message).toContain(`${dir}/nope/private.key`);
  });

  it('reports a directory given as key file', async () => {
    await expectIssue({ interface: { privateKeyFile: '.' } }, 'interface.privateKeyFile', /not a regular file/);
  });

  it('reports a key file with bad content without printing the content', async () => {
    const secretish = `${me.priv.slice(0, 40)}`;
    writeFile(dir, 'private.key', `${secretish}\n`);
    const err = await expectIssue({ interface: { privateKeyFile: 'private.key' } }, 'interface.privateKeyFile', /not base64 of exactly 32 bytes/);
    expect(err.message).not.toContain(secretish.slice(0, 8));
  });

  it('follows an absolute key file path regardless of baseDir', async () => {
    const file = writeFile(dir, 'abs.key', me.priv);
    const cfg = await parseConfig({ interface: { privateKeyFile: file } }, { baseDir: '/nonexistent' });
    expect(Buffer.from(cfg.interface.privateKey).toString('base64')).toBe(me.priv);
  });
});

describe('parseConfig: all errors at once, and no secret in any message', () => {
  it('reports every problem in one error, in document order', async () => {
    const { err, lines } = await issuesOf({
      interface: { name: 'much-too-long-interface', privateKey: me.priv, privateKeyFile: 'x', listenPort: 70000, addresses: ['1.2.3.4/40'], mtu: 1 },
      peers: [
        { publicKey: 'short', allowedIPs: ['10.0.0.0/8', 'x'], endpoint: 'nope', extra: 1 },
        { publicKey: a.pub, presharedKey: 'bad', persistentKeepalive: 1e6 },
        { publicKey: a.pub },
      ],
      log: { level: 'chatty' },
      crypto: { backend: 'none' },
      bogus: true,
    });
    expect(err.issues.length).toBe(lines.length);
    const paths = err.issues.map((i) => i.path);
    expect(paths).toEqual([
      'interface.name',
      'interface.listenPort',
      'interface.addresses[0]',
      'interface.mtu',
      'interface',
      'peers[0].extra',
      'peers[0].publicKey',
      'peers[0].endpoint',
      'peers[0].allowedIPs[1]',
      'peers[1].presharedKey',
      'peers[1].persistentKeepalive',
      'peers[2].publicKey',
      'log.level',
      'crypto.backend',
      'bogus',
    ]);
    // Header plus one line per issue.
    expect(err.message.split('\n')).toHaveLength(err.issues.length + 1);
    expect(err.message.split('\n')[0]).toBe(`invalid configuration (${err.issues.length} problems):`);
  });

  it('never echoes a private or preshared key, valid or not, nor a prefix of one', async () => {
    const longBad = `${me.priv}AAAA`; // a real key with junk appended
    const secrets = [me.priv, longBad, psk];
    const attempts: unknown[] = [
      { interface: { privateKey: longBad } },
      { interface: { privateKey: me.priv, privateKeyFile: 'k' } },
      { interface: { privateKey: me.priv }, peers: [{ publicKey: me.pub }] },
      {
        interface: { privateKey: me.priv, name: me.priv, addresses: [me.priv] },
        peers: [
          { publicKey: a.pub, endpoint: `${psk}:1`, name: psk },
          { publicKey: b.pub, name: psk },
        ],
      },
      { interface: { privateKey: me.priv }, log: { level: me.priv } },
      { interface: { privateKey: me.priv }, peers: [{ publicKey: a.pub, presharedKey: `${psk.slice(0, 43)}` }] },
      { interface: { privateKey: me.priv }, peers: [{ publicKey: a.pub, presharedKey: psk, presharedKeyFile: 'p' }] },
      { interface: { privateKey: me.priv, privateKye: me.priv } },
      { interface: { privateKey: [me.priv] } },
      { interface: { privateKey: me.priv }, peers: [{ publicKey: a.pub, presharedKey: psk, allowedIPs: [psk] }] },
    ];
    for (const raw of attempts) {
      const { err } = await issuesOf(raw);
      for (const s of secrets) {
        expect(err.message).not.toContain(s.slice(0, 8));
        expect(err.stack ?? '').not.toContain(s.slice(0, 8));
      }
    }
  });
});
