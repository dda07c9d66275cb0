/**
 * The TypeScript endpoint codec against the native addon's own encoder
 * and decoder (getaddrinfo / getnameinfo in udp.c): the same bytes for
 * every address form, the same text back, so the packet path could move
 * to TypeScript without changing a byte the native sockets read or write;
 * and a round trip through real native sockets on loopback.
 */
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ENDPOINT_SIZE,
  EndpointCodecError,
  decodeEndpoint,
  decodeSource,
  encodeEndpoint,
  encodeEndpointInto,
  sourceAt,
  sourceEquals,
} from '../../src/transport/endpoint-codec.js';
import { NativeUdpSocket, addonEndpointCodec, nativeUdpAvailable } from '../../src/transport/native-udp.js';

const ADDRESSES = [
  '0.0.0.0',
  '127.0.0.1',
  '192.0.2.7',
  '255.255.255.255',
  '::',
  '::1',
  '2001:db8::1',
  '2001:DB8:0:0:1:0:0:1',
  '2001:db8:0:1:1:1:1:1',
  'fd00:1:2:3:4:5:6:7',
  '1::',
  '1:0:0:2::3',
  '::ffff:10.1.2.3',
  '::FFFF:192.0.2.1',
  '::1.2.3.4',
  '::ffff:0:1.2.3.4',
  '64:ff9b::192.0.2.33',
  'fe80::1%lo',
  'fe80::1%1',
  'fe80::a:b:c:d%1',
  'ff02::1%lo',
];

describe('endpoint codec', () => {
  if (!nativeUdpAvailable()) {
    it('needs the native UDP addon to compare against', () => {
      if (process.env.CI === 'true') throw new Error('native UDP addon not built (build/Release/tunvpn_udp.node): run npx node-gyp rebuild');
    });
    return;
  }
  const addon = addonEndpointCodec();

  it('encodes every address form to the bytes the addon makes, and decodes them to the text it gives', () => {
    for (const a of ADDRESSES) {
      for (const port of [0, 1, 51820, 65535]) {
        const ours = encodeEndpoint(a, port);
        expect(ours, `${a} ${port}`).toEqual(addon.encode(a, port));
        expect(ours).toHaveLength(ENDPOINT_SIZE);
        const [address, p, family] = addon.decode(ours, 0);
        expect(decodeEndpoint(ours), a).toEqual({ address, port: p, family });
      }
    }
  });

  it('decodes random IPv6 addresses and scopes as getnameinfo prints them', () => {
    const enc = new Uint8Array(ENDPOINT_SIZE);
    for (let i = 0; i < 2000; i++) {
      enc.fill(0);
      enc[0] = 6;
      const r = randomBytes(16);
      // Runs of zero groups, so the "::" rule is exercised, and v4-compatible forms.
      for (let g = 0; g < 8; g++) if (r[g] % 3 === 0) r.fill(0, 2 * g, 2 * g + 2);
      if (i % 50 === 0) r.fill(0, 0, 12);
      enc.set(r, 8);
      enc[2] = i & 0xff;
      if (i % 7 === 0) {
        enc[8] = 0xfe;
        enc[9] = 0x80;
        enc[4] = 1; // lo: named
      }
      const [address, port, family] = addon.decode(enc, 0);
      expect(decodeEndpoint(enc), Buffer.from(enc).toString('hex')).toEqual({ address, port, family });
      // And back: the text encodes to the same bytes (an IPv4-mapped one to its IPv4 form).
      if (!(r.subarray(0, 10).every((b) => b === 0) && r[10] === 0xff && r[11] === 0xff)) expect(encodeEndpoint(address, port)).toEqual(enc);
    }
  });

  it('refuses what is not a numeric address, with EINVAL as the addon did', () => {
    for (const bad of ['', 'example.com', '300.1.1.1', '1.2.3.4.5', 'fe80::1%no-such-if0', '::g', '1:2:3:4:5:6:7:8:9', ' 1.2.3.4']) {
      expect(() => addon.encode(bad, 1), bad).toThrow();
      expect(() => encodeEndpoint(bad, 1), bad).toThrow(EndpointCodecError);
      expect(() => encodeEndpoint(bad, 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    }
    // getaddrinfo also took inet_aton's short forms; the codec takes only
    // the dotted quad. Nothing else ever reached it: the config and the
    // control socket parse endpoints strictly (isIPv4) before.
    for (const short of ['1.2.3', '127.1', '0x7f.0.0.1']) {
      expect(addon.encode(short, 1)[0], short).toBe(4);
      expect(() => encodeEndpoint(short, 1), short).toThrow(EndpointCodecError);
    }
    expect(() => encodeEndpoint('1.2.3.4', 65536)).toThrow(EndpointCodecError);
    expect(() => decodeEndpoint(new Uint8Array(ENDPOINT_SIZE))).toThrow(/not an encoded endpoint/);
    expect(() => decodeEndpoint(new Uint8Array(10))).toThrow(/out of range/);
  });

  it('encodes into a batch slot, compares and copies slots without touching the others', () => {
    const sources = new Uint8Array(3 * ENDPOINT_SIZE).fill(0xaa);
    encodeEndpointInto('10.0.0.1', 1000, sources, ENDPOINT_SIZE);
    expect(sources.subarray(0, ENDPOINT_SIZE).every((b) => b === 0xaa)).toBe(true);
    expect(sources.subarray(2 * ENDPOINT_SIZE).every((b) => b === 0xaa)).toBe(true);
    expect(sourceEquals(sources, 1, encodeEndpoint('10.0.0.1', 1000))).toBe(true);
    expect(sourceEquals(sources, 1, encodeEndpoint('10.0.0.1', 1001))).toBe(false);
    expect(sourceEquals(sources, 1, encodeEndpoint('::ffff:10.0.0.1', 1000))).toBe(true);
    const kept = sourceAt(sources, 1);
    sources.fill(0);
    expect(decodeEndpoint(kept)).toEqual({ address: '10.0.0.1', port: 1000, family: 4 });
  });
});

describe('endpoint codec through real native sockets', () => {
  const open: { close(): void }[] = [];
  afterEach(() => {
    for (const s of open.splice(0)) s.close();
  });

  for (const [family, lo] of [
    [4, '127.0.0.1'],
    [6, '::1'],
  ] as const) {
    it(`IPv${family}: a source the addon wrote decodes in TypeScript, and a destination TypeScript encoded is where the addon sends`, async () => {
      if (!nativeUdpAvailable()) {
        if (process.env.CI === 'true') throw new Error('native UDP addon not built');
        return;
      }
      const native = NativeUdpSocket.open({ family, address: lo, port: 0 });
      open.push(native);
      const peer = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
      open.push({ close: () => peer.close() });
      await new Promise<void>((resolve) => peer.bind(0, lo, () => resolve()));
      const peerPort = peer.address().port;
      const got = new Promise<{ source: Uint8Array; decoded: unknown }>((resolve) => {
        native.onDatagrams((_slots, _lengths, sources) => resolve({ source: sourceAt(sources, 0), decoded: decodeSource(sources, 0) }));
      });
      peer.send(Buffer.from('ping'), native.port, lo);
      const { source, decoded } = await got;
      expect(decoded).toEqual({ address: lo, port: peerPort, family });
      expect(source).toEqual(encodeEndpoint(lo, peerPort));
      const echoed = new Promise<{ msg: string; port: number }>((resolve) => peer.once('message', (m, r) => resolve({ msg: m.toString(), port: r.port })));
      expect(native.send(Buffer.from('pong'), 4, encodeEndpoint(lo, peerPort))).toBe(true);
      expect(await echoed).toEqual({ msg: 'pong', port: native.port });
    });
  }
});
