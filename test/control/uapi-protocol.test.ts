import { describe, expect, it } from 'vitest';
import { keyFromHex, keyToHex, parseSet, serializeGet } from '../../src/control/uapi-protocol.js';
import { UapiError, type UapiSetRequest } from '../../src/control/uapi-types.js';

const key = (fill: number) => new Uint8Array(32).fill(fill);
const hex = (fill: number) => keyToHex(key(fill));

function ok(lines: string[]): UapiSetRequest {
  const r = parseSet(lines);
  if (r instanceof UapiError) throw new Error(`unexpected error ${r.errno}: ${r.message}`);
  return r;
}

function errno(lines: string[]): number {
  const r = parseSet(lines);
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
        { publicKey: key(4), persistentKeepalive: 0, lastHandshakeWallMs: 0, rxBytes: 0, txBytes: 0, allowedIPs: [], endpoint: { address: 'fd00::1', port: 7, family: 6 } },
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

describe('parseSet', () => {
  it('parses interface keys; clamps the private key; a zero key clears', () => {
    const r = ok([`private_key=${'ff'.repeat(32)}`, 'listen_port=51821', 'fwmark=4294967295', 'replace_peers=true']);
    expect(r.privateKey?.[0]).toBe(0xf8);
    expect(r.privateKey?.[31]).toBe(0x7f);
    expect(r).toMatchObject({ listenPort: 51821, fwmark: 4294967295, replacePeers: true, peers: [] });
    expect(ok([`private_key=${'0'.repeat(64)}`]).privateKey).toBeNull();
    expect(ok([]).privateKey).toBeUndefined();
  });

  it('parses peer sections in order, as wg set sends them', () => {
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
    ]);
    expect(r.peers).toHaveLength(3);
    expect(r.peers[0]).toEqual({
      publicKey: key(2),
      presharedKey: key(3),
      endpoint: { host: 'fd00::7', port: 51820 },
      persistentKeepalive: 25,
      remove: false,
      updateOnly: false,
      replaceAllowedIPs: true,
      allowedIPs: ['10.1.2.0/24', 'fd00::/64'],
    });
    expect(r.peers[1]).toMatchObject({ updateOnly: true, presharedKey: null, endpoint: { host: '192.0.2.9', port: 1 } });
    expect(r.peers[2]).toMatchObject({ publicKey: key(5), remove: true, allowedIPs: [] });
  });

  it('replace_allowed_ips drops prefixes listed before it in the same section', () => {
    const r = ok([`public_key=${hex(2)}`, 'allowed_ip=10.0.0.0/8', 'replace_allowed_ips=true', 'allowed_ip=10.1.0.0/16']);
    expect(r.peers[0].allowedIPs).toEqual(['10.1.0.0/16']);
  });

  it('ignores what follows remove=true in a section, but still checks it', () => {
    const r = ok([`public_key=${hex(2)}`, 'remove=true', 'allowed_ip=10.0.0.0/8']);
    expect(r.peers[0]).toMatchObject({ remove: true, allowedIPs: [] });
    expect(errno([`public_key=${hex(2)}`, 'remove=true', 'allowed_ip=bogus/8'])).toBe(-22);
  });

  it.each([
    ['a line without "="', ['listen_port'], -71],
    ['an empty line', [''], -71],
    ['an unknown interface key', ['foo=bar'], -22],
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
    ['a fwmark over 32 bits', ['fwmark=4294967296'], -22],
    ['replace_peers=false', ['replace_peers=false'], -22],
    ['remove=yes', [`public_key=${hex(1)}`, 'remove=yes'], -22],
    ['update_only=1', [`public_key=${hex(1)}`, 'update_only=1'], -22],
    ['replace_allowed_ips=TRUE', [`public_key=${hex(1)}`, 'replace_allowed_ips=TRUE'], -22],
    ['a hostname endpoint', [`public_key=${hex(1)}`, 'endpoint=example.org:51820'], -22],
    ['an endpoint without port', [`public_key=${hex(1)}`, 'endpoint=192.0.2.1'], -22],
    ['an endpoint with port 0', [`public_key=${hex(1)}`, 'endpoint=192.0.2.1:0'], -22],
    ['an endpoint port too big', [`public_key=${hex(1)}`, 'endpoint=192.0.2.1:70000'], -22],
    ['an unbracketed IPv6 endpoint', [`public_key=${hex(1)}`, 'endpoint=fd00::1:51820'], -22],
    ['an unclosed bracket', [`public_key=${hex(1)}`, 'endpoint=[fd00::1:51820'], -22],
    ['an IPv6 endpoint with zone', [`public_key=${hex(1)}`, 'endpoint=[fe80::1%eth0]:1'], -22],
    ['an IPv4 address in brackets', [`public_key=${hex(1)}`, 'endpoint=[192.0.2.1]:1'], -22],
    ['keepalive over 65535', [`public_key=${hex(1)}`, 'persistent_keepalive_interval=65536'], -22],
    ['an allowed IP without length', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0.1'], -22],
    ['an allowed IP with /33', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0.1/33'], -22],
    ['an allowed IPv6 with /129', [`public_key=${hex(1)}`, 'allowed_ip=fd00::/129'], -22],
    ['an allowed IP that is not an address', [`public_key=${hex(1)}`, 'allowed_ip=10.0.0/8'], -22],
    ['an allowed IP with a zone', [`public_key=${hex(1)}`, 'allowed_ip=fe80::%1/64'], -22],
    ['protocol_version=2', [`public_key=${hex(1)}`, 'protocol_version=2'], -22],
  ])('rejects %s', (_name, lines, code) => {
    expect(errno(lines)).toBe(code);
  });

  it('keeps control characters out of error messages', () => {
    const r = parseSet(['\x1b[31mevil=1']);
    expect(r).toBeInstanceOf(UapiError);
    expect((r as UapiError).message).not.toContain('\x1b');
  });
});
