/**
 * Hand-built IPv4/IPv6 TCP packets (and a few others) for the offload tests,
 * with every checksum computed here in JavaScript, plus the 10-byte
 * virtio_net_hdr the TUN device prepends in offload mode.
 */
import { isIPv4 } from 'node:net';

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_UDP = 3;
export const GSO_TCPV6 = 4;
export const GSO_UDP_L4 = 5;
export const GSO_ECN = 0x80;
export const F_NEEDS_CSUM = 1;

/** RFC 1071 ones'-complement sum of `data` (big-endian words) added to `start`, folded, not inverted. */
export function onesSum(data: Uint8Array, start = 0): number {
  let sum = start;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.length % 2) sum += data[data.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** Address bytes of an IPv4 dotted quad or an IPv6 address (`::` allowed). */
export function addrBytes(addr: string): number[] {
  if (isIPv4(addr)) return addr.split('.').map(Number);
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) throw new Error(`bad IPv6 address ${addr}`);
  return groups.flatMap((g) => {
    const v = parseInt(g, 16);
    return [v >> 8, v & 0xff];
  });
}

/** Sum of the pseudo-header (addresses, protocol, transport length) of an IP packet, folded, not inverted. */
export function pseudoSum(ip: Uint8Array, proto: number, l4Len: number): number {
  const v6 = ip[0] >> 4 === 6;
  const addrs = v6 ? ip.subarray(8, 40) : ip.subarray(12, 20);
  const tail = Uint8Array.of(0, proto, (l4Len >> 8) & 0xff, l4Len & 0xff);
  return onesSum(tail, onesSum(addrs));
}

function ipHeaderLen(p: Uint8Array): number {
  return p[0] >> 4 === 6 ? 40 : (p[0] & 0x0f) * 4;
}

/** True when the IPv4 header checksum verifies. */
export function ipv4HeaderOk(p: Uint8Array): boolean {
  return onesSum(p.subarray(0, ipHeaderLen(p))) === 0xffff;
}

/** True when the TCP (proto 6) or UDP (17) checksum of a whole IP packet verifies. */
export function l4ChecksumOk(p: Uint8Array, proto = 6): boolean {
  const iph = ipHeaderLen(p);
  const l4 = p.subarray(iph);
  return onesSum(l4, pseudoSum(p, proto, l4.length)) === 0xffff;
}

/** Fills the IPv4 header checksum (no-op for IPv6). */
export function fixIpv4HeaderChecksum(p: Buffer): void {
  if (p[0] >> 4 !== 4) return;
  const iph = ipHeaderLen(p);
  p.writeUInt16BE(0, 10);
  p.writeUInt16BE(~onesSum(p.subarray(0, iph)) & 0xffff, 10);
}

/** Recomputes the full TCP checksum of an IP packet in place. */
export function fixTcpChecksum(p: Buffer): void {
  const iph = ipHeaderLen(p);
  p.writeUInt16BE(0, iph + 16);
  p.writeUInt16BE(~onesSum(p.subarray(iph), pseudoSum(p, 6, p.length - iph)) & 0xffff, iph + 16);
}

/** NOP, NOP, timestamps (12 bytes). */
export function tsOption(tsval: number, tsecr: number): Uint8Array {
  const o = Buffer.alloc(12);
  o[0] = 1;
  o[1] = 1;
  o[2] = 8;
  o[3] = 10;
  o.writeUInt32BE(tsval >>> 0, 4);
  o.writeUInt32BE(tsecr >>> 0, 8);
  return o;
}

/** A recognisable payload: byte i is (seed + 7 i) mod 256. */
export function pattern(len: number, seed = 0): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (seed + i * 7) & 0xff;
  return b;
}

export interface TcpSpec {
  /** IPv6 when the addresses are IPv6; defaults 10.0.0.1 -> 10.0.0.2. */
  src?: string;
  dst?: string;
  srcPort?: number;
  dstPort?: number;
  seq?: number;
  ack?: number;
  /** Defaults to ACK. */
  flags?: number;
  window?: number;
  urgent?: number;
  /** TCP options, a multiple of 4 bytes. */
  options?: Uint8Array;
  payload?: Uint8Array;
  /** IPv4 fields. */
  id?: number;
  ttl?: number;
  tos?: number;
  df?: boolean;
  mf?: boolean;
  fragOffset?: number;
  /** IPv4 options, a multiple of 4 bytes. */
  ipOptions?: Uint8Array;
  /** IPv6 fields. */
  trafficClass?: number;
  flowLabel?: number;
  hopLimit?: number;
  /** Leave this value in the TCP checksum field instead of the right one. */
  badChecksum?: boolean;
}

/** An IPv4 or IPv6 TCP packet with valid IP and TCP checksums. */
export function buildTcp(spec: TcpSpec = {}): Buffer {
  const src = spec.src ?? '10.0.0.1';
  const dst = spec.dst ?? (isIPv4(src) ? '10.0.0.2' : 'fd00::2');
  const v6 = !isIPv4(src);
  const opts = spec.options ?? new Uint8Array(0);
  const ipOpts = spec.ipOptions ?? new Uint8Array(0);
  if (opts.length % 4 || ipOpts.length % 4) throw new Error('options must be a multiple of 4 bytes');
  if (v6 && ipOpts.length) throw new Error('no IPv6 extension headers here');
  const payload = spec.payload ?? new Uint8Array(0);
  const iph = v6 ? 40 : 20 + ipOpts.length;
  const tcph = 20 + opts.length;
  const total = iph + tcph + payload.length;
  const p = Buffer.alloc(total);
  if (v6) {
    const tc = spec.trafficClass ?? 0;
    const fl = spec.flowLabel ?? 0x12345;
    p.writeUInt32BE(((6 << 28) | (tc << 20) | (fl & 0xfffff)) >>> 0, 0);
    p.writeUInt16BE(total - 40, 4);
    p[6] = 6;
    p[7] = spec.hopLimit ?? 64;
    p.set(addrBytes(src), 8);
    p.set(addrBytes(dst), 24);
  } else {
    p[0] = 0x40 | (iph / 4);
    p[1] = spec.tos ?? 0;
    p.writeUInt16BE(total, 2);
    p.writeUInt16BE(spec.id ?? 0x1000, 4);
    const frag = ((spec.df ?? true) ? 0x4000 : 0) | (spec.mf ? 0x2000 : 0) | ((spec.fragOffset ?? 0) & 0x1fff);
    p.writeUInt16BE(frag, 6);
    p[8] = spec.ttl ?? 64;
    p[9] = 6;
    p.set(addrBytes(src), 12);
    p.set(addrBytes(dst), 16);
    p.set(ipOpts, 20);
    fixIpv4HeaderChecksum(p);
  }
  const t = iph;
  p.writeUInt16BE(spec.srcPort ?? 40000, t);
  p.writeUInt16BE(spec.dstPort ?? 443, t + 2);
  p.writeUInt32BE((spec.seq ?? 1000) >>> 0, t + 4);
  p.writeUInt32BE((spec.ack ?? 5000) >>> 0, t + 8);
  p[t + 12] = (tcph / 4) << 4;
  p[t + 13] = spec.flags ?? TCP_ACK;
  p.writeUInt16BE(spec.window ?? 502, t + 14);
  p.writeUInt16BE(spec.urgent ?? 0, t + 18);
  p.set(opts, t + 20);
  p.set(payload, t + tcph);
  fixTcpChecksum(p);
  if (spec.badChecksum) p.writeUInt16BE(p.readUInt16BE(t + 16) ^ 0x0101, t + 16);
  return p;
}

export interface SegmentsSpec extends TcpSpec {
  /** Payload size of each segment. */
  sizes: number[];
  /** Pattern seed of the whole byte stream (segment i continues where i-1 ended). */
  streamSeed?: number;
  /** Flags of the last segment (defaults to `flags`). */
  lastFlags?: number;
}

/** Consecutive segments of one flow: seq advancing by each payload, IPv4 ID by one. */
export function buildSegments(spec: SegmentsSpec): Buffer[] {
  const stream = pattern(
    spec.sizes.reduce((a, b) => a + b, 0),
    spec.streamSeed ?? 0,
  );
  const out: Buffer[] = [];
  let off = 0;
  spec.sizes.forEach((size, i) => {
    const last = i === spec.sizes.length - 1;
    out.push(
      buildTcp({
        ...spec,
        seq: ((spec.seq ?? 1000) + off) >>> 0,
        id: ((spec.id ?? 0x1000) + i) & 0xffff,
        flags: last && spec.lastFlags !== undefined ? spec.lastFlags : spec.flags,
        payload: stream.subarray(off, off + size),
      }),
    );
    off += size;
  });
  return out;
}

export interface ParsedTcp {
  v6: boolean;
  iph: number;
  hdr: number;
  /** IPv4 total length or IPv6 payload length as written in the header. */
  ipLength: number;
  id: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  checksum: number;
  payload: Buffer;
}

/** Reads the fields the tests look at (no validation beyond lengths). */
export function parseTcp(p: Uint8Array): ParsedTcp {
  const b = Buffer.from(p.buffer, p.byteOffset, p.length);
  const v6 = b[0] >> 4 === 6;
  const iph = ipHeaderLen(b);
  const hdr = iph + (b[iph + 12] >> 4) * 4;
  return {
    v6,
    iph,
    hdr,
    ipLength: v6 ? b.readUInt16BE(4) : b.readUInt16BE(2),
    id: v6 ? 0 : b.readUInt16BE(4),
    seq: b.readUInt32BE(iph + 4),
    ack: b.readUInt32BE(iph + 8),
    flags: b[iph + 13],
    window: b.readUInt16BE(iph + 14),
    checksum: b.readUInt16BE(iph + 16),
    payload: Buffer.from(b.subarray(hdr)),
  };
}

export interface VnetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** struct virtio_net_hdr as a TUN device on a little-endian host reads and writes it. */
export function vnetHeader(h: Partial<VnetHeader> = {}): Uint8Array {
  const b = Buffer.alloc(10);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? GSO_NONE;
  b.writeUInt16LE(h.hdrLen ?? 0, 2);
  b.writeUInt16LE(h.gsoSize ?? 0, 4);
  b.writeUInt16LE(h.csumStart ?? 0, 6);
  b.writeUInt16LE(h.csumOffset ?? 0, 8);
  return b;
}

export function parseVnetHeader(b: Uint8Array): VnetHeader {
  if (b.length !== 10) throw new Error(`virtio_net_hdr of ${b.length} bytes`);
  const v = Buffer.from(b.buffer, b.byteOffset, b.length);
  return {
    flags: v[0],
    gsoType: v[1],
    hdrLen: v.readUInt16LE(2),
    gsoSize: v.readUInt16LE(4),
    csumStart: v.readUInt16LE(6),
    csumOffset: v.readUInt16LE(8),
  };
}

/** An IPv6/UDP packet with a valid checksum (never 0). */
export function buildUdp6(src: string, srcPort: number, dst: string, dstPort: number, payload: Uint8Array): Buffer {
  const udpLen = 8 + payload.length;
  const p = Buffer.alloc(40 + udpLen);
  p.writeUInt32BE(0x60000000, 0);
  p.writeUInt16BE(udpLen, 4);
  p[6] = 17;
  p[7] = 64;
  p.set(addrBytes(src), 8);
  p.set(addrBytes(dst), 24);
  p.writeUInt16BE(srcPort, 40);
  p.writeUInt16BE(dstPort, 42);
  p.writeUInt16BE(udpLen, 44);
  p.set(payload, 48);
  let c = ~onesSum(p.subarray(40), pseudoSum(p, 17, udpLen)) & 0xffff;
  if (c === 0) c = 0xffff;
  p.writeUInt16BE(c, 46);
  return p;
}

/** An IPv4 ICMP echo request. */
export function buildIcmp4(src: string, dst: string, id: number, seq: number, payload: Uint8Array): Buffer {
  const total = 28 + payload.length;
  const p = Buffer.alloc(total);
  p[0] = 0x45;
  p.writeUInt16BE(total, 2);
  p[8] = 64;
  p[9] = 1;
  p.set(addrBytes(src), 12);
  p.set(addrBytes(dst), 16);
  fixIpv4HeaderChecksum(p);
  p[20] = 8;
  p.writeUInt16BE(id, 24);
  p.writeUInt16BE(seq, 26);
  p.set(payload, 28);
  p.writeUInt16BE(~onesSum(p.subarray(20)) & 0xffff, 22);
  return p;
}

/** An ICMPv6 echo request. */
export function buildIcmp6(src: string, dst: string, id: number, seq: number, payload: Uint8Array): Buffer {
  const len = 8 + payload.length;
  const p = Buffer.alloc(40 + len);
  p.writeUInt32BE(0x60000000, 0);
  p.writeUInt16BE(len, 4);
  p[6] = 58;
  p[7] = 64;
  p.set(addrBytes(src), 8);
  p.set(addrBytes(dst), 24);
  p[40] = 128;
  p.writeUInt16BE(id, 44);
  p.writeUInt16BE(seq, 46);
  p.set(payload, 48);
  p.writeUInt16BE(~onesSum(p.subarray(40), pseudoSum(p, 58, len)) & 0xffff, 42);
  return p;
}
