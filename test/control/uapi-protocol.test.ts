import { describe, expect, it } from 'vitest';
import { formatAddr, NetipSyntaxError, parseAddr, parseAddrPort, parseDecimal, parsePrefix } from '../../src/control/uapi-netip.js';
import { interfaceExists, isZeroKey, keyFromHex, keyToHex, parseSet, SetRequestParser, serializeGet, wipeSetRequest } from '../../src/control/uapi-protocol.js';
import { UapiError, type UapiSetRequest } from '../../src/control/uapi-types.js';

const key = (fill: number) => new Uint8Array(32).fill(fill);
const hex = (fill: number) => keyToHex(key(fill));

/** eth0 stands for an interface that exists, whatever this machine's are called. */
const zoneExists = (name: string) => name === 'eth0' || name === 'lo';

function ok(lines: string[]): UapiSetRequest {
  const r = parseSet(lines, { zoneExists });
  if (r instanceof UapiError) throw new Error(`unexpected error ${r.errno}: ${r.message}`);
  return r;
}

function errno(lines: string[]): number {
  const r = parseSet(lines, { zoneExists });
  if (!(r instanceof UapiError)) throw new Error('expected an error');
  return r.errno;
}

describe('serializeGet', () => {
  it('emits the fields in wireguard-go order and ends with errno=0 and a blank line', () => {
    const text = serializeGet({
      privateKey: key(1),
      listenPort: 51820,
      fwmark: 0,
      peers: [
        {
          publicKey: key(2),
          presharedKey: key(3),
          endpoint: { address: '192.0.2.1', port: 51820, family: 4 },
          persistentKeepalive: 25,
          lastHandshakeWallMs: 1_700_000_000_123,
          rxBytes: 1000,
          txBytes: 2000,
          allowedIPs: ['10.0.0.0/24', 'fd00::/64'],
        },
        {
          publicKey: key(4),
          persistentKeepalive: 0,
          lastHandshakeWallMs: 0,
          rxBytes: 0,
          txBytes: 0,
          allowedIPs: [],
          endpoint: { address: 'fd00::1', port: 7, family: 6 },
        },
      ],
    });
    expect(text).toBe(
      [
        `private_key=${hex(1)}`,
        'listen_port=51820',
        `public_key=${hex(2)}`,
        `preshared_key=${hex(3)}`,
        'protocol_version=1',
        'endpoint=192.0.2.1:51820',
        'last_handshake_time_sec=1700000000',
        'last_handshake_time_nsec=123000000',
        'tx_bytes=2000',
        'rx_bytes=1000',
        'persistent_keepalive_interval=25',
        'allowed_ip=10.0.0.0/24',
        'allowed_ip=fd00::/64',
        `public_key=${hex(4)}`,
        `preshared_key=${'0'.repeat(64)}`,
        'protocol_version=1',
        'endpoint=[fd00::1]:7',
        'last_handshake_time_sec=0',
        'last_handshake_time_nsec=0',
        'tx_bytes=0',
        'rx_bytes=0',
        'persistent_keepalive_interval=0',
        'errno=0',
        '',
        '',
      ].join('\n'),
    );
  });

  it('leaves out a missing or zero private key, a zero port and a zero fwmark; prints a set fwmark', () => {
    expect(serializeGet({ listenPort: 0, fwmark: 0, peers: [] })).toBe('errno=0\n\n');
    expect(serializeGet({ privateKey: key(0), listenPort: 0, fwmark: 0, peers: [] })).toBe('errno=0\n\n');
    expect(serializeGet({ listenPort: 0, fwmark: 51, peers: [] })).toBe('fwmark=51\nerrno=0\n\n');
  });
});

describe('keys as hex', () => {
  it('round-trips and rejects anything but 64 hex digits', () => {
    const k = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
    expect(keyFromHex(keyToHex(k))).toEqual(k);
    expect(keyFromHex(keyToHex(k).toUpperCase())).toEqual(k);
    expect(keyFromHex('ab')).toBeUndefined();
    expect(keyFromHex('g'.repeat(64))).toBeUndefined();
    expect(keyFromHex('0'.repeat(66))).toBeUndefined();
  });
});

describe('serializeGet canonical forms', () => {
  const peer = (endpoint: { address: string; port: number; family: 4 | 6 }, allowedIPs: string[] = []) => ({
    publicKey: key(2),
    persistentKeepalive: 0,
    lastHandshakeWallMs: 0,
    rxBytes: 0,
    txBytes: 0,
    allowedIPs,
    endpoint,
  });
  const endpointLine = (text: string) => text.split('\n').find((l) => l.startsWith('endpoint='));

  it.each([
    ['FD00::A', 9, '[fd00::a]:9'],
    ['0:0::1', 5, '[::1]:5'],
    ['fd00:0:0:1:0:0:0:1', 1, '[fd00:0:0:1::1]:1'],
    ['fd00:0:0:1:1:0:0:1', 1, '[fd00::1:1:0:0:1]:1'],
    ['::FFFF:1.2.3.4', 7, '[::ffff:1.2.3.4]:7'],
    ['fe80::1%eth0', 51820, '[fe80::1%eth0]:51820'],
  ])('prints endpoint %s port %d as netip.AddrPort does: %s', (address, port, want) => {
    expect(endpointLine(serializeGet({ listenPort: 0, fwmark: 0, peers: [peer({ address, port, family: 6 })] }))).toBe(`endpoint=${want}`);
  });

  it('prints IPv4-mapped prefixes with a dotted tail, as Go does', () => {
    const text = serializeGet({ listenPort: 0, fwmark: 0, peers: [peer({ address: '192.0.2.1', port: 0, family: 4 }, ['::ffff:a00:0/104', '10.0.0.0/8'])] });
    expect(text).toContain('endpoint=192.0.2.1:0\n');
    expect(text).toContain('allowed_ip=::ffff:10.0.0.0/104\nallowed_ip=10.0.0.0/8\n');
  });
});

describe('Go netip text rules', () => {
  it.each([
    ['1.2.3.4', '1.2.3.4'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['0:0:0:0:0:0:0:0', '::'],
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['1:0:0:2:0:0:3:4', '1::2:0:0:3:4'],
    ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
    ['::1.2.3.4', '::102:304'],
    ['::ffff:1.2.3.4', '::ffff:1.2.3.4'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
    ['ABCD::EF%Lo', 'abcd::ef%Lo'],
    ['0001:02::', '1:2::'],
  ])('reads %s and prints %s', (text, want) => {
    expect(formatAddr(parseAddr(text))).toBe(want);
  });

  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '01.2.3.4',
    '1.2.3.256',
    '1..2.3',
    '1.2.3.4%eth0',
    '%eth0',
    'fe80::1%',
    '00000::1',
    '1::2::3',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7:8::',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:1.2.3.4',
    '::1.2.3',
    '1:',
    ':1',
    '::g',
    ' ::1',
  ])('refuses the address %j', (text) => {
    expect(() => parseAddr(text)).toThrow(NetipSyntaxError);
  });

  it('reads prefixes as current netip.ParsePrefix: no sign, no leading zero, no zone', () => {
    expect(parsePrefix('10.0.0.0/0').bits).toBe(0);
    expect(parsePrefix('::/128').bits).toBe(128);
    for (const bad of [
      '10.0.0.0/08',
      '10.0.0.0/+8',
      '10.0.0.0/-0',
      '10.0.0.0/33',
      '::/129',
      '10.0.0.0/',
      '10.0.0.0',
      '10.0.0.0/8/8',
      'fe80::%1/64',
      '10.0.0.0/ 8',
      '::/0128',
    ]) {
      expect(() => parsePrefix(bad), bad).toThrow(NetipSyntaxError);
    }
  });

  it('reads numbers as strconv.ParseUint: leading zeros of any length, nothing else', () => {
    expect(parseDecimal('0'.repeat(40) + '51820', 65535)).toBe(51820);
    expect(parseDecimal('00', 65535)).toBe(0);
    expect(parseDecimal('4294967295', 0xffffffff)).toBe(0xffffffff);
    for (const bad of ['', '+1', '-0', '1_0', '0x10', ' 1', '1 ', '65536', '1'.repeat(40)]) expect(parseDecimal(bad, 65535), bad).toBeUndefined();
  });

  it('reads address:port as netip.ParseAddrPort', () => {
    expect(parseAddrPort('1.2.3.4:0')).toMatchObject({ port: 0 });
    expect(formatAddr(parseAddrPort('[FE80::1%eth0]:000051820').addr)).toBe('fe80::1%eth0');
    for (const bad of ['1.2.3.4', '1.2.3.4:', ':5', '[]:5', '[::1]5', '[::1', '[1.2.3.4]:5', '::1:5', '1.2.3.4:+5', '1.2.3.4:65536', 'host:5']) {
      expect(() => parseAddrPort(bad), bad).toThrow(NetipSyntaxError);
    }
  });
});

describe('parseSet', () => {
  it('parses interface lines into device operations in request order; clamps the private key; a zero key clears', () => {
    const r = ok([`private_key=${'ff'.repeat(32)}`, 'listen_port=51821', 'fwmark=4294967295', 'replace_peers=true', 'listen_port=0']);
    const first = r.device[0];
    expect(first.kind === 'private-key' && first.key !== null ? [first.key[0], first.key[31]] : undefined).toEqual([0xf8, 0x7f]);
    expect(r.device.slice(1)).toEqual([
      { kind: 'listen-port', port: 51821 },
      { kind: 'fwmark', mark: 4294967295 },
      { kind: 'replace-peers' },
      { kind: 'listen-port', port: 0 },
    ]);
    expect(r.peers).toEqual([]);
    expect(ok([`private_key=${'0'.repeat(64)}`]).device).toEqual([{ kind: 'private-key', key: null }]);
    expect(ok([])).toEqual({ device: [], peers: [] });
  });

  it('parses peer sections and their lines in order, as wg set sends them', () => {
    const r = ok([
      `public_key=${hex(2)}`,
      `preshared_key=${hex(3)}`,
      'endpoint=[fd00::7]:51820',
      'persistent_keepalive_interval=25',
      'replace_allowed_ips=true',
      'allowed_ip=10.1.2.3/24',
      'allowed_ip=fd00::1/64',
      'protocol_version=1',
      `public_key=${hex(4)}`,
      'update_only=true',
      `preshared_key=${'0'.repeat(64)}`,
      'endpoint=192.0.2.9:1',
      `public_key=${hex(5)}`,
      'remove=true',
      `public_key=${hex(2)}`,
      'allowed_ip=10.9.0.0/16',
    ]);
    expect(r.device).toEqual([]);
    expect(r.peers).toEqual([
      {
        publicKey: key(2),
        ops: [
          { kind: 'preshared-key', key: key(3) },
          { kind: 'endpoint', endpoint: { host: 'fd00::7', port: 51820 } },
          { kind: 'persistent-keepalive', seconds: 25 },
          { kind: 'replace-allowed-ips' },
          { kind: 'allowed-ip', cidr: '10.1.2.0/24' },
          { kind: 'allowed-ip', cidr: 'fd00::/64' },
        ],
      },
      {
        publicKey: key(4),
        ops: [{ kind: 'update-only' }, { kind: 'preshared-key', key: null }, { kind: 'endpoint', endpoint: { host: '192.0.2.9', port: 1 } }],
      },
      { publicKey: key(5), ops: [{ kind: 'remove' }] },
      // The same key again: a second section, applied after the others.
      { publicKey: key(2), ops: [{ kind: 'allowed-ip', cidr: '10.9.0.0/16' }] },
    ]);
  });

  it('keeps an allowed_ip before replace_allowed_ips, remove or update_only in its place (issue 17 item 5)', () => {
    const r = ok([
      `public_key=${hex(2)}`,
      'allowed_ip=10.0.0.0/8',
      'replace_allowed_ips=true',
      'allowed_ip=10.1.0.0/16',
      `public_key=${hex(3)}`,
      'allowed_ip=10.2.0.0/16',
      'remove=true',
      'allowed_ip=10.3.0.0/16',
    ]);
    expect(r.peers[0].ops.map((o) => o.kind)).toEqual(['allowed-ip', 'replace-allowed-ips', 'allowed-ip']);
    expect(r.peers[1].ops).toEqual([{ kind: 'allowed-ip', cidr: '10.2.0.0/16' }, { kind: 'remove' }, { kind: 'allowed-ip', cidr: '10.3.0.0/16' }]);
  });

  it('checks what follows remove=true in a section', () => {
    expect(errno([`public_key=${hex(2)}`, 'remove=true', 'allowed_ip=bogus/8'])).toBe(-22);
  });

  it('accepts what wireguard-go accepts (issue 17 item 9, issue 12 item 4)', () => {
    const peerOps = (lines: string[]) => ok([`public_key=${hex(1)}`, ...lines]).peers[0].ops;
    expect(ok([`listen_port=${'0'.repeat(30)}51820`]).device).toEqual([{ kind: 'listen-port', port: 51820 }]);
    expect(ok([`fwmark=${'0'.repeat(25)}7`]).device).toEqual([{ kind: 'fwmark', mark: 7 }]);
    expect(peerOps([`persistent_keepalive_interval=${'0'.repeat(21)}25`])).toEqual([{ kind: 'persistent-keepalive', seconds: 25 }]);
    expect(
      peerOps([
        'endpoint=192.0.2.1:0',
        'endpoint=[FD00::A]:09',
        'endpoint=[0:0::1]:5',
        'endpoint=[fe80::1%eth0]:51820',
        'endpoint=[fe80::1%2]:1',
        'endpoint=[::FFFF:192.0.2.1]:3',
      ]),
    ).toEqual(
      [
        { host: '192.0.2.1', port: 0 },
        { host: 'fd00::a', port: 9 },
        { host: '::1', port: 5 },
        { host: 'fe80::1%eth0', port: 51820 },
        { host: 'fe80::1%2', port: 1 },
        { host: '::ffff:192.0.2.1', port: 3 },
      ].map((endpoint) => ({ kind: 'endpoint', endpoint })),
    );
    expect(peerOps(['allowed_ip=10.1.2.3/0', 'allowed_ip=FD00:0::1:2/127', 'allowed_ip=::ffff:10.1.2.3/104', 'allowed_ip=0001::/16'])).toEqual(
      ['0.0.0.0/0', 'fd00::1:2/127', '::ffff:a00:0/104', '1::/16'].map((cidr) => ({ kind: 'allowed-ip', cidr })),
    );
    expect(peerOps([`preshared_key=${'AB'.repeat(32)}`])).toEqual([{ kind: 'preshared-key', key: new Uint8Array(32).fill(0xab) }]);
  });

  it.each([
    ['a line without "="', ['listen_port'], -71],
    ['an empty line', [''], -71],
    ['an unknown interface key', ['foo=bar'], -22],
    ['an empty key', ['=1'], -22],
    ['a peer key before public_key', ['allowed_ip=10.0.0.0/8'], -22],
    ['an interface key inside a peer section', [`public_key=${hex(1)}`, 'listen_port=1'], -22],
    ['an unknown peer key', [`public_key=${hex(1)}`, 'foo=1'], -22],
    ['a short private key', ['private_key=abcd'], -22],
    ['a non-hex public key', [`public_key=${'z'.repeat(64)}`], -22],
    ['a bad preshared key', [`public_key=${hex(1)}`, 'preshared_key=00'], -22],
    ['a port over 65535', ['listen_port=65536'], -22],
    ['a negative port', ['listen_port=-1'], -22],
    ['a port with a sign', ['listen_port=+1'], -22],
    ['an empty port', ['listen_port='], -22],
    ['a port in hex', ['listen_port=0x10'], -22],
    ['a port with an underscore', ['listen_port=5_1'], -22],
    ['a fwmark over 32 bits', ['fwmark=4294967296'], -22],
    ['a huge number', [`fwmark=${'9'.repeat(30)}`], -22],
    ['replace_peers=false', ['replace_peers=false'], -22],
    ['remove=yes', [`public_key=${hex(1)}`, 'remove=yes'], -22],
    ['update_only=1', [`public_key=${hex(1)}`, 'update_only=1'], -22],
    ['replace_allowed_ips=TRUE', [`public_key=${hex(1)}`, 'replace_allowed_ips=TRUE'], -22],
    ['a hostname endpoint', [`public_key=${hex(1)}`, 'endpoint=example.org:51820'], -22],
    ['an endpoint without port', [`public_key=${hex(1)}`, 'endpoint=192.0.2.1'], -22],
    ['an endpoint port too big', [`public_key=${hex(1)}`, 'endpoint=192.0.2.1:70000'], -22],
    ['an unbracketed IPv6 endpoint', [`public_key=${hex(1)}`, 'endpoint=fd00::1:51820'], -22],
    ['an unclosed bracket', [`public_key=${hex(1)}`, 'endpoint=[fd00::1:51820'], -22],
    ['an IPv4 address in brackets', [`public_key=${hex(1)}`, 'endpoint=[192.0.2.1]:1'], -22],
    ['an IPv4 endpoint with a leading zero', [`public_key=${hex(1)}`, 'endpoint=192.0.2.01:1'], -22],
    ['an empty zone', [`public_key=${hex(1)}`, 'endpoint=[fe80::1%]:1'], -22],
    ['a zone that cannot be an interface name', [`public_key=${hex(1)}`, 'endpoint=[fe80::1%a/b]:1'], -22],
    ['a zone too long for an interface name', [`public_key=${hex(1)}`, 'endpoint=[fe80::1%abcdefghijklmnop]:1'], -22],
    ['a zone index over 32 bits', [`public_key=${hex(1)}`, 'endpoint=[fe80::1%4294967296]:1'], -22],
    ['a zone naming no interface', [`public_key=${hex(1)}`, 'endpoint=[fe80::1%nosuch0]:1'], -22],
    ['keepalive over 65535', [`public_key=${hex(1)}`, 'persistent_keepalive_interval=65536'], -22],
    ['an allowed IP without length', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0.1'], -22],
    ['an allowed IP with /33', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0.1/33'], -22],
    ['an allowed IP with /08 (Go rejects leading zeros)', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0.0/08'], -22],
    ['an allowed IP with /+8', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0.0/+8'], -22],
    ['an allowed IPv6 with /129', [`public_key=${hex(1)}`, 'allowed_ip=fd00::/129'], -22],
    ['an allowed IP that is not an address', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0/8'], -22],
    ['an allowed IP with a leading zero', [`public_key=${hex(1)}`, 'allowed_ip=010.0.0.0/8'], -22],
    ['an allowed IP with a zone', [`public_key=${hex(1)}`, 'allowed_ip=fe80::%1/64'], -22],
    ['an allowed IPv6 with a five-digit group', [`public_key=${hex(1)}`, 'allowed_ip=00000::/64'], -22],
    ['protocol_version=2', [`public_key=${hex(1)}`, 'protocol_version=2'], -22],
    ['protocol_version=01', [`public_key=${hex(1)}`, 'protocol_version=01'], -22],
  ])('rejects %s', (_name, lines, code) => {
    expect(errno(lines)).toBe(code);
  });

  it('looks a zone name up among the interfaces of our namespace, as wireguard-go does', () => {
    expect(interfaceExists('lo')).toBe(true);
    expect(interfaceExists('tvnosuch0')).toBe(false);
    const peer = `public_key=${hex(1)}`;
    expect(parseSet([peer, 'endpoint=[fe80::1%lo]:5'])).not.toBeInstanceOf(UapiError);
    expect((parseSet([peer, 'endpoint=[fe80::1%tvnosuch0]:5']) as UapiError).errno).toBe(-22);
    // An index is taken as it is, as wireguard-go takes it.
    expect(parseSet([peer, 'endpoint=[fe80::1%4000]:5'])).not.toBeInstanceOf(UapiError);
  });

  it('keeps control characters and anything that could be key material out of error messages', () => {
    const r = parseSet(['\x1b[31mevil=1']);
    expect(r).toBeInstanceOf(UapiError);
    expect((r as UapiError).message).not.toContain('\x1b');
    const secret = 'ab'.repeat(32);
    for (const lines of [
      [`${secret}=1`],
      [`public_key=${hex(1)}`, `${secret}=1`],
      [`private_key=${secret.slice(2)}`],
      [`public_key=${hex(1)}`, `endpoint=${secret}`],
    ]) {
      const e = parseSet(lines) as UapiError;
      expect(e).toBeInstanceOf(UapiError);
      expect(e.message).not.toContain(secret.slice(0, 16));
    }
    expect((parseSet(['listen_prot=1']) as UapiError).message).toContain('"listen_prot"');
  });

  it('zeroes the keys it parsed when the request turns out invalid, and wipeSetRequest zeroes the rest', () => {
    const parser = new SetRequestParser();
    expect(parser.feed(`private_key=${'11'.repeat(32)}`)).toBe(true);
    expect(parser.feed(`public_key=${hex(2)}`)).toBe(true);
    expect(parser.feed(`preshared_key=${hex(3)}`)).toBe(true);
    const partial = (parser as unknown as { req: UapiSetRequest }).req;
    expect(parser.feed('bogus=1')).toBe(false);
    const priv = partial.device[0];
    const psk = partial.peers[0].ops[0];
    expect(priv.kind === 'private-key' && priv.key !== null && isZeroKey(priv.key)).toBe(true);
    expect(psk.kind === 'preshared-key' && psk.key !== null && isZeroKey(psk.key)).toBe(true);

    const good = ok([`private_key=${'22'.repeat(32)}`, `public_key=${hex(2)}`, `preshared_key=${hex(3)}`]);
    wipeSetRequest(good);
    const [p2, k2] = [good.device[0], good.peers[0].ops[0]];
    expect(p2.kind === 'private-key' && p2.key !== null && isZeroKey(p2.key)).toBe(true);
    expect(k2.kind === 'preshared-key' && k2.key !== null && isZeroKey(k2.key)).toBe(true);
    // Public keys are not secret and stay.
    expect(good.peers[0].publicKey).toEqual(key(2));
  });

  it('parses a large request in time linear in its size', () => {
    const lines = (n: number) => {
      const out = [`public_key=${hex(1)}`];
      for (let i = 0; i < n; i++) out.push(`allowed_ip=10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);
      return out;
    };
    const time = (n: number) => {
      const l = lines(n);
      const t0 = performance.now();
      expect(ok(l).peers[0].ops).toHaveLength(n);
      return performance.now() - t0;
    };
    time(20_000);
    const small = Math.min(time(25_000), time(25_000));
    const big = Math.min(time(200_000), time(200_000));
    // 8x the lines; quadratic work would take 64x. Generous for a shared machine.
    expect(big / small).toBeLessThan(25);
  });
});
