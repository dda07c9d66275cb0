/**
 * Unit tests of the TUN offload code (src/tun/native/offload.c) through the
 * addon's two test hooks: offloadRead (what an offload-mode read hands to
 * JavaScript for a virtio_net_hdr + packet: checksum completion, TSO
 * cutting) and offloadCoalesce (what an offload-mode writeBatch writes:
 * GRO of consecutive TCP segments into one NEEDS_CSUM + GSO super-packet).
 * Every packet and checksum is built and verified in JavaScript
 * (test/tun/tcp-packet.ts); nothing touches a device.
 */
import { describe, expect, it } from 'vitest';
import { loadNativeTun } from '../../src/tun/native-binding.js';
import { buildUdp4 } from './ip-packet.js';
import {
  buildIcmp4,
  buildIcmp6,
  buildSegments,
  buildTcp,
  buildUdp6,
  F_NEEDS_CSUM,
  fixIpv4HeaderChecksum,
  GSO_ECN,
  GSO_TCPV4,
  GSO_TCPV6,
  GSO_UDP,
  GSO_UDP_L4,
  ipv4HeaderOk,
  l4ChecksumOk,
  onesSum,
  parseTcp,
  parseVnetHeader,
  pattern,
  pseudoSum,
  type SegmentsSpec,
  TCP_ACK,
  TCP_CWR,
  TCP_ECE,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  TCP_URG,
  type TcpSpec,
  tsOption,
  vnetHeader,
} from './tcp-packet.js';

const tun = loadNativeTun();

type Entry = [Buffer, Buffer];

/** Fails with the first differing byte instead of dumping two 64 KiB buffers. */
function expectBytes(actual: Uint8Array, expected: Uint8Array, what = 'packet'): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.length);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.length);
  if (a.equals(e)) return;
  let i = 0;
  while (i < a.length && i < e.length && a[i] === e[i]) i++;
  expect.fail(
    `${what}: ${a.length} bytes (expected ${e.length}), first difference at byte ${i}: ` +
      `${a.subarray(i, i + 8).toString('hex')} vs expected ${e.subarray(i, i + 8).toString('hex')}`,
  );
}

function copies(pkts: readonly Uint8Array[]): Buffer[] {
  return pkts.map((p) => Buffer.from(p));
}

/** offloadCoalesce on copies (it rewrites the heads of runs in place). */
function coalesce(pkts: readonly Uint8Array[]): Entry[] {
  return tun.offloadCoalesce(copies(pkts));
}

function read(h: Uint8Array, pkt: Uint8Array, slot = 65535): Buffer[] | null {
  return tun.offloadRead(h, pkt, slot);
}

/** What offloadRead handed over, failing here if it dropped the packet (null). */
function kept(out: Buffer[] | null, what = 'offloadRead'): Buffer[] {
  if (out === null) throw new Error(`${what}: dropped the packet`);
  return out;
}

const ZERO_HDR = Buffer.alloc(10);

function expectSingle(entry: Entry, pkt: Uint8Array, what = 'single'): void {
  expectBytes(entry[0], ZERO_HDR, `${what}: virtio header`);
  expectBytes(entry[1], pkt, what);
}

/** The super-packet a run of segments must become, computed here. */
function expectedSuper(segs: Buffer[]): Buffer {
  const first = parseTcp(segs[0]);
  const payload = Buffer.concat(segs.map((s) => parseTcp(s).payload));
  const p = Buffer.concat([segs[0].subarray(0, first.hdr), payload]);
  if (first.v6) {
    p.writeUInt16BE(p.length - 40, 4);
  } else {
    p.writeUInt16BE(p.length, 2);
    fixIpv4HeaderChecksum(p);
  }
  if (segs.some((s) => parseTcp(s).flags & TCP_PSH)) p[first.iph + 13] |= TCP_PSH;
  p.writeUInt16BE(pseudoSum(p, 6, p.length - first.iph), first.iph + 16);
  return p;
}

/**
 * A coalesced entry of `segs`: the exact virtio header, the exact
 * super-packet, a valid IPv4 header checksum, a checksum field that
 * completes to a valid TCP checksum, and offloadRead of the entry giving
 * back the original segments byte for byte.
 */
function expectMerged(entry: Entry, segs: Buffer[], what = 'merged'): void {
  const [hdr, pkt] = entry;
  const first = parseTcp(segs[0]);
  expect(parseVnetHeader(hdr), `${what}: virtio header`).toEqual({
    flags: F_NEEDS_CSUM,
    gsoType: first.v6 ? GSO_TCPV6 : GSO_TCPV4,
    hdrLen: first.hdr,
    gsoSize: first.payload.length,
    csumStart: first.iph,
    csumOffset: 16,
  });
  expectBytes(pkt, expectedSuper(segs), what);
  if (!first.v6) expect(ipv4HeaderOk(pkt), `${what}: IPv4 header checksum`).toBe(true);
  // Completing the partial checksum as the kernel does gives a valid one.
  const done = Buffer.from(pkt);
  done.writeUInt16BE(~onesSum(done.subarray(first.iph)) & 0xffff, first.iph + 16);
  expect(l4ChecksumOk(done), `${what}: completed TCP checksum`).toBe(true);
  // Cutting it again (as the kernel would on TSO) gives back the segments.
  const back = kept(read(hdr, pkt), `${what}: offloadRead of the entry`);
  expect(back, `${what}: offloadRead of the entry`).not.toBeNull();
  expect(back.length, `${what}: segments cut back`).toBe(segs.length);
  back.forEach((s, i) => {
    expectBytes(s, segs[i], `${what}: segment ${i} cut back`);
  });
}

/** Checks the output against groups of input indexes, in write order. */
function expectPlan(out: Entry[], pkts: Buffer[], groups: number[][]): void {
  expect(out.length, `entries (expected ${JSON.stringify(groups)}; got sizes ${JSON.stringify(out.map((e) => e[1].length))})`).toBe(groups.length);
  groups.forEach((g, k) => {
    if (g.length === 1) expectSingle(out[k], pkts[g[0]], `entry ${k} (packet ${g[0]})`);
    else
      expectMerged(
        out[k],
        g.map((i) => pkts[i]),
        `entry ${k} (packets ${g[0]}..${g[g.length - 1]})`,
      );
  });
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

const TS = tsOption(0x01020304, 0x0a0b0c0d);
const V6 = { src: 'fd00:1::1', dst: 'fd00:2::2' };

// ------------------------------------------------------------ offloadRead

describe('offloadRead, gso_type NONE', () => {
  it('hands over the packet unchanged without NEEDS_CSUM (even a wrong checksum)', () => {
    const p = buildTcp({ payload: pattern(100), badChecksum: true });
    const out = kept(read(vnetHeader(), p));
    expect(out).not.toBeNull();
    expect(out.length).toBe(1);
    expectBytes(out[0], p);
  });

  it('completes a TCP checksum from the pseudo-header sum (IPv4, IPv6, odd length, IPv4 options)', () => {
    const cases: TcpSpec[] = [
      { payload: pattern(1000, 3), options: TS },
      { payload: pattern(777, 9) },
      { ...V6, payload: pattern(1201, 5), options: TS },
      { payload: pattern(51), ipOptions: Uint8Array.of(1, 1, 1, 0) },
      { payload: new Uint8Array(0), flags: TCP_SYN },
    ];
    for (const spec of cases) {
      const good = buildTcp(spec);
      const t = parseTcp(good);
      expect(l4ChecksumOk(good)).toBe(true);
      const partial = Buffer.from(good);
      partial.writeUInt16BE(pseudoSum(good, 6, good.length - t.iph), t.iph + 16);
      const out = kept(read(vnetHeader({ flags: F_NEEDS_CSUM, csumStart: t.iph, csumOffset: 16 }), partial));
      expect(out).not.toBeNull();
      expect(out.length).toBe(1);
      expectBytes(out[0], good, `TCP ${good.length} bytes`);
    }
  });

  it('completes a UDP checksum (IPv4 and IPv6)', () => {
    for (const good of [buildUdp4('10.1.0.1', 5000, '10.1.0.2', 51820, pattern(333, 1)), buildUdp6('fd00::1', 5000, 'fd00::2', 51820, pattern(148, 2))]) {
      const iph = good[0] >> 4 === 6 ? 40 : 20;
      expect(l4ChecksumOk(good, 17)).toBe(true);
      const partial = Buffer.from(good);
      partial.writeUInt16BE(pseudoSum(good, 17, good.length - iph), iph + 6);
      const out = kept(read(vnetHeader({ flags: F_NEEDS_CSUM, csumStart: iph, csumOffset: 6 }), partial));
      expect(out).not.toBeNull();
      expectBytes(out[0], good, 'UDP');
    }
  });

  /** A packet whose transport checksum comes out 0: two payload bytes are chosen for it. */
  function zeroSumPacket(proto: 6 | 17): { partial: Buffer; csumAt: number } {
    const p = proto === 17 ? buildUdp4('10.1.0.1', 5000, '10.1.0.2', 6000, Buffer.alloc(20)) : buildTcp({ payload: Buffer.alloc(20) });
    const csumAt = proto === 17 ? 26 : 36;
    const dataAt = p.length - 2;
    p.writeUInt16BE(0, csumAt);
    p.writeUInt16BE(0, dataAt);
    const s = onesSum(p.subarray(20), pseudoSum(p, proto, p.length - 20));
    p.writeUInt16BE(~s & 0xffff, dataAt); // the sum is now 0xffff: checksum 0
    expect(onesSum(p.subarray(20), pseudoSum(p, proto, p.length - 20))).toBe(0xffff);
    p.writeUInt16BE(pseudoSum(p, proto, p.length - 20), csumAt);
    return { partial: p, csumAt };
  }

  it('writes a UDP checksum of 0 as 0xffff, and leaves a TCP checksum of 0 as 0', () => {
    const udp = zeroSumPacket(17);
    const u = kept(read(vnetHeader({ flags: F_NEEDS_CSUM, csumStart: 20, csumOffset: 6 }), udp.partial));
    expect(u).not.toBeNull();
    expect(u[0].readUInt16BE(udp.csumAt)).toBe(0xffff);
    expect(l4ChecksumOk(u[0], 17)).toBe(true);

    const tcp = zeroSumPacket(6);
    const t = kept(read(vnetHeader({ flags: F_NEEDS_CSUM, csumStart: 20, csumOffset: 16 }), tcp.partial));
    expect(t).not.toBeNull();
    expect(t[0].readUInt16BE(tcp.csumAt)).toBe(0);
    expect(l4ChecksumOk(t[0], 6)).toBe(true);
  });

  it('drops a packet whose checksum start or field lies outside it', () => {
    const p = buildTcp({ payload: pattern(10) }); // 50 bytes
    const at = (csumStart: number, csumOffset: number): Buffer[] | null => read(vnetHeader({ flags: F_NEEDS_CSUM, csumStart, csumOffset }), p);
    expect(at(50, 0)).toBeNull(); // start at the end
    expect(at(60000, 16)).toBeNull();
    expect(at(20, 29)).toBeNull(); // field would be bytes 49..50
    expect(at(49, 0)).toBeNull(); // one byte left for a two-byte field
    expect(at(20, 0xffff)).toBeNull();
    // The last two bytes are still a valid place for the field: it gets
    // the complement of the sum over csum_start.. taken with it in place.
    const edge = kept(at(20, 28));
    expect(edge).not.toBeNull();
    expectBytes(edge[0].subarray(0, 48), p.subarray(0, 48), 'bytes before the field');
    expect(edge[0].readUInt16BE(48)).toBe(~onesSum(p.subarray(20)) & 0xffff);
    // Without NEEDS_CSUM the offsets are ignored.
    expect(read(vnetHeader({ csumStart: 60000, csumOffset: 60000 }), p)).not.toBeNull();
  });

  it('drops a packet larger than a slot', () => {
    const p = buildTcp({ payload: pattern(100) });
    expect(read(vnetHeader(), p, p.length - 1)).toBeNull();
    expect(read(vnetHeader(), p, p.length)).not.toBeNull();
  });
});

describe('offloadRead, TSO super-packets', () => {
  /** A super-packet as the kernel hands it over: partial checksum, NEEDS_CSUM. */
  function superPacket(spec: TcpSpec): Buffer {
    const p = buildTcp(spec);
    const t = parseTcp(p);
    p.writeUInt16BE(pseudoSum(p, 6, p.length - t.iph), t.iph + 16);
    return p;
  }

  function tsoHeader(p: Buffer, gsoSize: number, gsoType?: number): Uint8Array {
    const t = parseTcp(p);
    return vnetHeader({
      flags: F_NEEDS_CSUM,
      gsoType: gsoType ?? (t.v6 ? GSO_TCPV6 : GSO_TCPV4),
      hdrLen: t.hdr,
      gsoSize,
      csumStart: t.iph,
      csumOffset: 16,
    });
  }

  for (const [name, base] of [
    ['IPv4', {}],
    ['IPv6', V6],
  ] as const) {
    it(`cuts a ${name} super-packet into gso_size segments with their own lengths, IDs, seqs and checksums`, () => {
      const spec: SegmentsSpec = {
        ...base,
        seq: 0xfffff000, // wraps within the packet
        id: 0xfffe, // wraps too (IPv4)
        ack: 0x11223344,
        window: 1234,
        options: TS,
        sizes: [1448, 1448, 1448, 1448, 1000],
        streamSeed: 17,
        flags: TCP_ACK,
        lastFlags: TCP_ACK | TCP_PSH,
      };
      const expected = buildSegments(spec);
      const sup = superPacket({ ...spec, flags: TCP_ACK | TCP_PSH, payload: pattern(6792, 17) });
      const out = kept(read(tsoHeader(sup, 1448), sup));
      expect(out).not.toBeNull();
      expect(out.length).toBe(5);
      out.forEach((s, i) => {
        expectBytes(s, expected[i], `segment ${i}`);
        const t = parseTcp(s);
        expect(t.ipLength).toBe(name === 'IPv4' ? s.length : s.length - 40);
        if (name === 'IPv4') {
          expect(ipv4HeaderOk(s)).toBe(true);
          expect(t.id).toBe((0xfffe + i) & 0xffff);
        }
        expect(l4ChecksumOk(s)).toBe(true);
        expect(t.seq).toBe((0xfffff000 + i * 1448) >>> 0);
      });
    });
  }

  it('puts FIN and PSH on the last segment only, CWR on the first only, and keeps ECE on all', () => {
    for (const base of [{}, V6]) {
      const sup = superPacket({
        ...base,
        flags: TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR | TCP_ECE,
        payload: pattern(300),
      });
      const out = kept(read(tsoHeader(sup, 100), sup));
      expect(out).not.toBeNull();
      expect(out.map((s) => parseTcp(s).flags)).toEqual([TCP_ACK | TCP_CWR | TCP_ECE, TCP_ACK | TCP_ECE, TCP_ACK | TCP_PSH | TCP_FIN | TCP_ECE]);
      for (const s of out) expect(l4ChecksumOk(s)).toBe(true);
    }
  });

  it('gives a super-packet no longer than gso_size back as one segment with all its flags', () => {
    const flags = TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR;
    const good = buildTcp({ flags, payload: pattern(500), options: TS });
    const sup = superPacket({ flags, payload: pattern(500), options: TS });
    const out = kept(read(tsoHeader(sup, 1448), sup));
    expect(out).not.toBeNull();
    expect(out.length).toBe(1);
    expectBytes(out[0], good);
  });

  it('cuts a last short segment and an exact multiple correctly', () => {
    const short = superPacket({ payload: pattern(250) });
    const a = kept(read(tsoHeader(short, 100), short));
    expect(a.map((s) => parseTcp(s).payload.length)).toEqual([100, 100, 50]);
    expect(a.map((s) => parseTcp(s).payload)).toEqual([pattern(250).subarray(0, 100), pattern(250).subarray(100, 200), pattern(250).subarray(200)]);
    const exact = superPacket({ payload: pattern(300), flags: TCP_ACK | TCP_PSH });
    const b = kept(read(tsoHeader(exact, 100), exact));
    expect(b.map((s) => parseTcp(s).payload.length)).toEqual([100, 100, 100]);
    expect(b.map((s) => parseTcp(s).flags)).toEqual([TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH]);
    // gso_size 1: one byte per segment.
    const tiny = superPacket({ payload: pattern(5), seq: 7 });
    const c = kept(read(tsoHeader(tiny, 1), tiny));
    expect(c.map((s) => parseTcp(s).seq)).toEqual([7, 8, 9, 10, 11]);
    for (const s of [...a, ...b, ...c]) {
      expect(ipv4HeaderOk(s)).toBe(true);
      expect(l4ChecksumOk(s)).toBe(true);
    }
  });

  it('copies IPv4 options into every segment with a valid header checksum', () => {
    const ipOptions = Uint8Array.of(0x94, 4, 0, 0); // router alert
    const spec: SegmentsSpec = { ipOptions, sizes: [200, 200, 100], id: 42, options: TS };
    const expected = buildSegments(spec);
    const sup = superPacket({ ipOptions, id: 42, options: TS, payload: pattern(500) });
    const out = kept(read(tsoHeader(sup, 200), sup));
    expect(out).not.toBeNull();
    expect(out.length).toBe(3);
    out.forEach((s, i) => {
      expectBytes(s, expected[i], `segment ${i}`);
      expect(ipv4HeaderOk(s)).toBe(true);
    });
  });

  it('accepts the ECN bit in gso_type', () => {
    const sup = superPacket({ payload: pattern(300) });
    const out = read(tsoHeader(sup, 100, GSO_TCPV4 | GSO_ECN), sup);
    expect(out?.length).toBe(3);
    const sup6 = superPacket({ ...V6, payload: pattern(300) });
    expect(read(tsoHeader(sup6, 100, GSO_TCPV6 | GSO_ECN), sup6)?.length).toBe(3);
  });

  it('drops the super-packet when a segment does not fit in a slot', () => {
    const sup = superPacket({ payload: pattern(4000), options: TS }); // 52 header bytes
    expect(read(tsoHeader(sup, 1448), sup, 52 + 1448)?.length).toBe(3);
    expect(read(tsoHeader(sup, 1448), sup, 52 + 1447)).toBeNull();
    expect(read(tsoHeader(sup, 2000), sup, 1500)).toBeNull();
    // The room needed is the largest segment's, not gso_size's.
    const small = superPacket({ payload: pattern(150) }); // 40 header bytes
    expect(read(tsoHeader(small, 1000), small, 190)?.length).toBe(1);
    expect(read(tsoHeader(small, 1000), small, 189)).toBeNull();
  });

  it('drops unknown or mismatched gso types', () => {
    const v4 = superPacket({ payload: pattern(300) });
    const v6 = superPacket({ ...V6, payload: pattern(300) });
    for (const type of [2, GSO_UDP, GSO_UDP_L4, 6, 0x7f, GSO_ECN]) {
      expect(read(tsoHeader(v4, 100, type), v4), `gso_type ${type}`).toBeNull();
    }
    expect(read(tsoHeader(v4, 100, GSO_TCPV6), v4)).toBeNull();
    expect(read(tsoHeader(v6, 100, GSO_TCPV4), v6)).toBeNull();
    // TCPV4 on a UDP packet
    const udp = buildUdp4('10.0.0.1', 1, '10.0.0.2', 2, pattern(300));
    expect(read(vnetHeader({ gsoType: GSO_TCPV4, gsoSize: 100, csumStart: 20, csumOffset: 6 }), udp)).toBeNull();
    expect(read(vnetHeader({ gsoType: GSO_TCPV6, gsoSize: 100 }), buildUdp6('fd00::1', 1, 'fd00::2', 2, pattern(300)))).toBeNull();
  });

  it('drops truncated or malformed super-packets', () => {
    const v4 = superPacket({ payload: pattern(300), options: TS });
    const v6 = superPacket({ ...V6, payload: pattern(300) });
    const h4 = tsoHeader(v4, 100);
    const h6 = tsoHeader(v6, 100);
    expect(read(h4, new Uint8Array(0))).toBeNull();
    expect(read(h4, v4.subarray(0, 19))).toBeNull(); // not even an IPv4 header
    expect(read(h4, v4.subarray(0, 39))).toBeNull(); // TCP header cut
    expect(read(h4, v4.subarray(0, 51))).toBeNull(); // TCP options cut
    expect(read(h4, v4.subarray(0, 52))).toBeNull(); // headers only, no payload
    expect(read(h6, v6.subarray(0, 39))).toBeNull();
    expect(read(h6, v6.subarray(0, 59))).toBeNull();
    expect(read(h6, v6.subarray(0, 60))).toBeNull();
    expect(read(tsoHeader(v4, 0), v4)).toBeNull(); // gso_size 0

    const mangle = (p: Buffer, f: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(p);
      f(b);
      return b;
    };
    expect(
      read(
        h4,
        mangle(v4, (b) => (b[0] = 0x44)),
      ),
    ).toBeNull(); // IHL 4
    expect(
      read(
        h4,
        mangle(v4, (b) => (b[0] = 0x65)),
      ),
    ).toBeNull(); // version 6 under TCPV4
    expect(
      read(
        h4,
        mangle(v4, (b) => (b[32] = 0x40)),
      ),
    ).toBeNull(); // data offset 4
    expect(
      read(
        h4,
        mangle(v4, (b) => (b[32] = 0xf0)),
      ),
    ).not.toBeNull(); // data offset 15 (60 bytes): still inside
    const shortPayload = superPacket({ payload: pattern(20) }); // 60 bytes
    expect(
      read(
        tsoHeader(shortPayload, 100),
        mangle(shortPayload, (b) => (b[32] = 0xf0)),
      ),
    ).toBeNull(); // header past the end
    expect(
      read(
        h6,
        mangle(v6, (b) => (b[6] = 17)),
      ),
    ).toBeNull(); // next header UDP
    expect(
      read(
        h6,
        mangle(v6, (b) => (b[0] = 0x45)),
      ),
    ).toBeNull(); // version 4 under TCPV6
  });
});

// ------------------------------------------------------- offloadCoalesce

describe('offloadCoalesce', () => {
  for (const [name, base] of [
    ['IPv4', {}],
    ['IPv6', V6],
  ] as const) {
    it(`coalesces consecutive ${name} segments into one super-packet that cuts back to the originals`, () => {
      const segs = buildSegments({
        ...base,
        sizes: [1448, 1448, 1448, 1448, 1448, 1448, 1448, 900],
        options: TS,
        seq: 0x7000_0000,
        id: 300,
        lastFlags: TCP_ACK | TCP_PSH,
        streamSeed: 99,
      });
      const out = coalesce(segs);
      expect(out.length).toBe(1);
      expectMerged(out[0], segs);
      const hdrLen = name === 'IPv4' ? 52 : 72;
      const iph = name === 'IPv4' ? 20 : 40;
      // The exact header bytes, little-endian.
      expectBytes(out[0][0], Buffer.from([1, name === 'IPv4' ? 1 : 4, hdrLen, 0, 1448 & 0xff, 1448 >> 8, iph, 0, 16, 0]), 'virtio header bytes');
      const p = parseTcp(out[0][1]);
      expect(out[0][1].length).toBe(hdrLen + 7 * 1448 + 900);
      expect(p.ipLength).toBe(name === 'IPv4' ? out[0][1].length : out[0][1].length - 40);
      expect(p.flags).toBe(TCP_ACK | TCP_PSH);
      expect(p.seq).toBe(0x7000_0000);
      if (name === 'IPv4') {
        expect(p.id).toBe(300);
        expect(ipv4HeaderOk(out[0][1])).toBe(true);
      }
    });
  }

  it('stores the folded pseudo-header sum (length = total TCP length) in the TCP checksum field', () => {
    // 10.0.0.1 -> 10.0.0.2, TCP length 20 + 3 * 100 = 320:
    // 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + 320 = 0x1549
    const segs = buildSegments({ sizes: [100, 100, 100] });
    const out = coalesce(segs);
    expect(out.length).toBe(1);
    expect(out[0][1].readUInt16BE(36)).toBe(0x1549);
    // IPv6 fd00:1::1 -> fd00:2::2, TCP length 20 + 200 = 220:
    // 0xfd00 + 1 + 1 + 0xfd00 + 2 + 2 + 6 + 220 = 0x1fae8 -> 0xfae9
    const six = coalesce(buildSegments({ ...V6, sizes: [100, 100] }));
    expect(six.length).toBe(1);
    expect(six[0][1].readUInt16BE(56)).toBe(0xfae9);
  });

  it('rewrites the head packet buffer in place and leaves the others alone', () => {
    const segs = buildSegments({ sizes: [100, 100, 100] });
    const input = copies(segs);
    const out = tun.offloadCoalesce(input);
    expectBytes(input[0], out[0][1].subarray(0, 140), 'rewritten head');
    expectBytes(input[1], segs[1], 'second');
    expectBytes(input[2], segs[2], 'third');
  });

  it('returns nothing for an empty batch and a single entry for one segment', () => {
    expect(tun.offloadCoalesce([])).toEqual([]);
    const one = buildTcp({ payload: pattern(100) });
    expectPlan(coalesce([one]), [one], [[0]]);
  });

  it('ends a run on a shorter segment and starts the next run after it', () => {
    const segs = buildSegments({ sizes: [100, 100, 50, 100, 100], options: TS });
    expectPlan(coalesce(segs), segs, [
      [0, 1, 2],
      [3, 4],
    ]);
  });

  it('ends a run on PSH (set in the head), and a PSH head stays alone', () => {
    const segs = buildSegments({ sizes: [100, 100, 100, 100, 100] });
    segs[2] = buildTcp({ ...parseSpec(segs[2]), flags: TCP_ACK | TCP_PSH });
    segs[3] = buildTcp({ ...parseSpec(segs[3]), flags: TCP_ACK | TCP_PSH });
    const out = coalesce(segs);
    expectPlan(out, segs, [[0, 1, 2], [3], [4]]);
    expect(parseTcp(out[0][1]).flags).toBe(TCP_ACK | TCP_PSH);
  });

  it('does not merge a segment larger than the first', () => {
    const segs = buildSegments({ sizes: [100, 200, 200] });
    expectPlan(coalesce(segs), segs, [[0], [1, 2]]);
  });

  it('merges across a sequence number wrap', () => {
    const segs = buildSegments({ seq: 0xffffff00, sizes: [200, 200, 200], id: 0xffff });
    expectPlan(coalesce(segs), segs, [[0, 1, 2]]);
  });

  /** The spec that rebuilds a segment made by buildSegments (default addresses). */
  function parseSpec(p: Buffer, base: TcpSpec = {}): TcpSpec {
    const t = parseTcp(p);
    const opts = p.subarray(t.iph + 20, t.hdr);
    return { ...base, seq: t.seq, ack: t.ack, id: t.id, flags: t.flags, window: t.window, options: opts, payload: t.payload };
  }

  describe('keeps apart segments that differ', () => {
    const variants: [string, TcpSpec, TcpSpec?][] = [
      ['a sequence gap', { seq: 1000 + 200 + 1 }],
      ['a retransmission', { seq: 1000 }],
      ['a different ACK', { ack: 5001 }],
      ['a different window', { window: 503 }],
      ['different TCP options', { options: tsOption(0x01020305, 0x0a0b0c0d) }],
      ['an extra TCP option', { options: Buffer.concat([TS, Uint8Array.of(1, 1, 1, 1)]) }],
      ['no TCP options', { options: new Uint8Array(0) }],
      ['a different TTL', { ttl: 63 }],
      ['a different TOS', { tos: 0x10 }],
      ['an ECN mark', { tos: 0x03 }],
      ['no DF', { df: false }],
      ['a bad TCP checksum', { badChecksum: true }],
      ['SYN', { flags: TCP_SYN | TCP_ACK }],
      ['FIN', { flags: TCP_FIN | TCP_ACK }],
      ['RST', { flags: TCP_RST | TCP_ACK }],
      ['URG', { flags: TCP_URG | TCP_ACK, urgent: 10 }],
      ['ECE', { flags: TCP_ECE | TCP_ACK }],
      ['CWR', { flags: TCP_CWR | TCP_ACK }],
      ['no ACK flag', { flags: 0 }],
      ['a different hop limit (IPv6)', { hopLimit: 63 }, V6],
      ['a different flow label (IPv6)', { flowLabel: 0x54321 }, V6],
      ['a different traffic class (IPv6)', { trafficClass: 0x20 }, V6],
    ];
    for (const [name, change, base] of variants) {
      it(name, () => {
        const b: TcpSpec = { options: TS, ...base };
        const segs = buildSegments({ ...b, sizes: [200, 200, 200, 200] });
        // the second segment differs: it is not merged into the first...
        const odd = buildTcp({ ...parseSpec(segs[1], b), ...change });
        const pkts = [segs[0], odd];
        expectPlan(coalesce(pkts), pkts, [[0], [1]]);
        // ...and a first, differing one does not swallow the rest (a change
        // of seq alone is no difference in the first segment).
        if (change.seq !== undefined) return;
        const lead = buildTcp({ ...parseSpec(segs[0], b), ...change });
        const after = [lead, segs[1], segs[2], segs[3]];
        const out = coalesce(after);
        expect(out.length).toBeGreaterThanOrEqual(2);
        expectSingle(out[0], lead, 'differing lead');
        expectMerged(out[1], [segs[1], segs[2], segs[3]], 'the rest');
      });
    }
  });

  it('a bad checksum in the head or in the middle splits the run around it', () => {
    const segs = buildSegments({ sizes: [100, 100, 100, 100] });
    const bad = (i: number): Buffer => buildTcp({ ...parseSpec(segs[i]), badChecksum: true });
    const head = [bad(0), segs[1], segs[2], segs[3]];
    expectPlan(coalesce(head), head, [[0], [1, 2, 3]]);
    const mid = [segs[0], segs[1], bad(2), segs[3]];
    expectPlan(coalesce(mid), mid, [[0, 1], [2], [3]]);
    const last = [segs[0], segs[1], segs[2], bad(3)];
    expectPlan(coalesce(last), last, [[0, 1, 2], [3]]);
  });

  it('a bad IPv4 header checksum in the head or a follower keeps that packet out of the run', () => {
    const segs = buildSegments({ sizes: [100, 100, 100] });
    const badIp = (i: number): Buffer => {
      const p = Buffer.from(segs[i]);
      p[10] ^= 0x5a; // header checksum off, TCP checksum still right
      return p;
    };
    const head = [badIp(0), segs[1], segs[2]];
    expectPlan(coalesce(head), head, [[0], [1, 2]]);
    const follower = [segs[0], badIp(1), segs[2]];
    expectPlan(coalesce(follower), follower, [[0], [1], [2]]);
  });

  it('passes zero-payload ACKs through, closing the run before them', () => {
    const acks = [0, 1, 2].map((i) => buildTcp({ seq: 1000, ack: 5000 + i * 100, options: TS }));
    expectPlan(coalesce(acks), acks, [[0], [1], [2]]);
    const segs = buildSegments({ sizes: [100, 100, 100, 100], options: TS });
    const mixed = [segs[0], segs[1], buildTcp({ seq: 1200, options: TS }), segs[2], segs[3]];
    expectPlan(coalesce(mixed), mixed, [[0, 1], [2], [3, 4]]);
  });

  it('never merges IPv4 packets with options, fragments, or a length that does not match', () => {
    const ipOptions = Uint8Array.of(1, 1, 1, 0);
    const withOpts = buildSegments({ ipOptions, sizes: [100, 100, 100] });
    expectPlan(coalesce(withOpts), withOpts, [[0], [1], [2]]);
    const mf = buildSegments({ mf: true, sizes: [100, 100, 100] });
    expectPlan(coalesce(mf), mf, [[0], [1], [2]]);
    const offset = buildSegments({ fragOffset: 1, sizes: [100, 100, 100] });
    expectPlan(coalesce(offset), offset, [[0], [1], [2]]);
    // a trailing byte beyond the IP length
    const padded = buildSegments({ sizes: [100, 100, 100] }).map((p) => Buffer.concat([p, Buffer.of(0)]));
    expectPlan(coalesce(padded), padded, [[0], [1], [2]]);
    const padded6 = buildSegments({ ...V6, sizes: [100, 100, 100] }).map((p) => Buffer.concat([p, Buffer.of(0)]));
    expectPlan(coalesce(padded6), padded6, [[0], [1], [2]]);
  });

  it('keeps a flow in order when a packet of it that cannot be parsed for merging arrives', () => {
    // Segments 0 and 1 of a flow are held for merging; a later packet of the
    // same connection that parse_tcp rejects (IPv4 options, a fragment) is a
    // non-mergeable packet of that open flow and must not overtake them.
    const segs = buildSegments({ sizes: [100, 100, 100] });
    for (const [name, late] of [
      ['IPv4 options', buildTcp({ ...parseSpec(segs[2]), ipOptions: Uint8Array.of(1, 1, 1, 0) })],
      ['a fragment (MF)', buildTcp({ ...parseSpec(segs[2]), mf: true })],
    ] as const) {
      const pkts = [segs[0], segs[1], late];
      const out = coalesce(pkts);
      expect(out.length).toBe(2);
      const lateAt = out.findIndex(([h, p]) => h.equals(ZERO_HDR) && p.equals(late));
      expect(lateAt, `the later packet with ${name} is written after the held segments 0 and 1`).toBe(1);
      expectPlan(out, pkts, [[0, 1], [2]]);
    }
  });

  it('merges interleaved flows separately, in the order they were opened', () => {
    const a = buildSegments({ sizes: [100, 100, 100], srcPort: 1111, streamSeed: 1 });
    const b = buildSegments({ sizes: [300, 300, 300], srcPort: 2222, streamSeed: 2 });
    const c = buildSegments({ ...V6, sizes: [500, 500, 500], streamSeed: 3 });
    // the reverse direction of flow a is a flow of its own
    const r = buildSegments({
      src: '10.0.0.2',
      dst: '10.0.0.1',
      srcPort: 443,
      dstPort: 1111,
      seq: 5000,
      ack: 1000,
      sizes: [200, 200, 200],
      streamSeed: 4,
    });
    const pkts = [a[0], b[0], c[0], r[0], a[1], b[1], c[1], r[1], a[2], b[2], c[2], r[2]];
    expectPlan(coalesce(pkts), pkts, [
      [0, 4, 8],
      [1, 5, 9],
      [2, 6, 10],
      [3, 7, 11],
    ]);
  });

  it('closes an open flow before a non-mergeable packet of it, leaving other flows open', () => {
    const a = buildSegments({ sizes: [100, 100, 100, 100], srcPort: 1111 });
    const b = buildSegments({ sizes: [100, 100, 100], srcPort: 2222 });
    const fin = buildTcp({ srcPort: 1111, seq: 1200, flags: TCP_FIN | TCP_ACK });
    const pkts = [a[0], b[0], a[1], fin, b[1], b[2]];
    // a's run is written before its FIN; b stays open across it and is
    // written at the end.
    expectPlan(coalesce(pkts), pkts, [[0, 2], [3], [1, 4, 5]]);
  });

  it('caps a run at 64 segments', () => {
    const segs = buildSegments({ sizes: Array<number>(70).fill(100), id: 0 });
    expectPlan(coalesce(segs), segs, [range(0, 64), range(64, 70)]);
    const v6 = buildSegments({ ...V6, sizes: Array<number>(130).fill(10) });
    expectPlan(coalesce(v6), v6, [range(0, 64), range(64, 128), [128, 129]]);
  });

  it('caps a super-packet at 65535 bytes', () => {
    // IPv4, 40 header bytes: 40 + 44 * 1460 + 1255 = 65535 exactly
    const fits = buildSegments({ sizes: [...Array<number>(44).fill(1460), 1255] });
    const out = coalesce(fits);
    expectPlan(out, fits, [range(0, 45)]);
    expect(out[0][1].length).toBe(65535);
    const over = buildSegments({ sizes: [...Array<number>(44).fill(1460), 1256] });
    expectPlan(coalesce(over), over, [range(0, 44), [44]]);
    // IPv6 with timestamps, 72 header bytes: 72 + 44 * 1460 + 1223 = 65535
    const fits6 = buildSegments({ ...V6, options: TS, sizes: [...Array<number>(44).fill(1460), 1223] });
    const out6 = coalesce(fits6);
    expectPlan(out6, fits6, [range(0, 45)]);
    expect(out6[0][1].length).toBe(65535);
    const over6 = buildSegments({ ...V6, options: TS, sizes: [...Array<number>(46).fill(1460)] });
    expectPlan(coalesce(over6), over6, [range(0, 44), [44, 45]]);
  });

  it('handles more than 16 flows: the oldest is closed, intact, to make room', () => {
    // 20 flows, three segments each, one flow after the other.
    const flows = range(0, 20).map((f) => buildSegments({ srcPort: 10000 + f, sizes: [100, 100, 100], streamSeed: f }));
    const pkts = flows.flat();
    expectPlan(
      coalesce(pkts),
      pkts,
      range(0, 20).map((f) => [3 * f, 3 * f + 1, 3 * f + 2]),
    );
  });

  it('16 flows open at once all merge; a 17th in round robin forces every flow out before its next segment', () => {
    const make = (n: number): Buffer[][] => range(0, n).map((f) => buildSegments({ srcPort: 20000 + f, sizes: [100, 100], streamSeed: f }));
    // round robin: segment 0 of every flow, then segment 1 of every flow
    const sixteen = make(16);
    const p16 = [...sixteen.map((s) => s[0]), ...sixteen.map((s) => s[1])];
    expectPlan(
      coalesce(p16),
      p16,
      range(0, 16).map((f) => [f, 16 + f]),
    );
    const seventeen = make(17);
    const p17 = [...seventeen.map((s) => s[0]), ...seventeen.map((s) => s[1])];
    const out = coalesce(p17);
    // every packet written once, unchanged, each flow's segments in order
    expect(out.length).toBe(34);
    for (const [h] of out) expectBytes(h, ZERO_HDR, 'virtio header');
    const pos = (p: Buffer): number => out.findIndex(([, q]) => q.equals(p));
    for (const [s0, s1] of seventeen) {
      expect(pos(s0)).toBeGreaterThanOrEqual(0);
      expect(pos(s1)).toBeGreaterThan(pos(s0));
    }
  });

  it('passes UDP, ICMP and anything unparseable through unchanged, merging the TCP around them', () => {
    const segs = buildSegments({ sizes: [100, 100, 100] });
    const others = [
      buildUdp4('10.0.0.1', 40000, '10.0.0.2', 443, pattern(100)),
      buildUdp6('fd00::1', 5000, 'fd00::2', 6000, pattern(64)),
      buildIcmp4('10.0.0.1', '10.0.0.2', 7, 1, pattern(56)),
      buildIcmp6('fd00::1', 'fd00::2', 7, 1, pattern(56)),
      Buffer.alloc(0),
      Buffer.from([0x45, 0, 0, 5, 1]), // truncated IPv4
      pattern(120, 0x50), // version 5 garbage
    ];
    const pkts = [segs[0], others[0], others[1], segs[1], others[2], others[3], others[4], others[5], others[6], segs[2]];
    const out = coalesce(pkts);
    expect(out.length).toBe(others.length + 1);
    // the non-TCP packets, in their order, unchanged and with a zero header
    const singles = out.filter(([h]) => h.equals(ZERO_HDR));
    expect(singles.length).toBe(others.length);
    singles.forEach(([, p], i) => {
      expectBytes(p, others[i], `passed-through packet ${i}`);
    });
    const merged = out.filter(([h]) => !h.equals(ZERO_HDR));
    expect(merged.length).toBe(1);
    expectMerged(merged[0], segs);
  });

  it('rejects bad arguments', () => {
    expect(() => tun.offloadCoalesce('x' as unknown as Uint8Array[])).toThrow(TypeError);
    expect(() => tun.offloadCoalesce([new Uint16Array(4) as unknown as Uint8Array])).toThrow(TypeError);
    expect(() => tun.offloadCoalesce([new Uint8Array(65536)])).toThrow(TypeError);
    expect(() => tun.offloadRead(new Uint8Array(9), new Uint8Array(40), 100)).toThrow(TypeError);
    expect(() => tun.offloadRead(new Uint8Array(10), new Uint8Array(40), 0)).toThrow(TypeError);
  });
});
