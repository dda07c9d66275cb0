/** Hand-built IPv4/UDP packets for the TUN tests (checksums included). */

function ipv4Bytes(addr: string): number[] {
  return addr.split('.').map(Number);
}

/** RFC 1071 ones'-complement sum over `data`, folded, not inverted. */
function onesSum(data: Uint8Array, start = 0): number {
  let sum = start;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.length % 2) sum += data[data.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

export function buildUdp4(src: string, srcPort: number, dst: string, dstPort: number, payload: Uint8Array): Buffer {
  const udpLen = 8 + payload.length;
  const total = 20 + udpLen;
  const p = Buffer.alloc(total);
  p[0] = 0x45;
  p.writeUInt16BE(total, 2);
  p.writeUInt16BE(0x4000, 6); // DF
  p[8] = 64;
  p[9] = 17;
  p.set(ipv4Bytes(src), 12);
  p.set(ipv4Bytes(dst), 16);
  p.writeUInt16BE(~onesSum(p.subarray(0, 20)) & 0xffff, 10);
  p.writeUInt16BE(srcPort, 20);
  p.writeUInt16BE(dstPort, 22);
  p.writeUInt16BE(udpLen, 24);
  p.set(payload, 28);
  const pseudo = Buffer.alloc(12);
  pseudo.set(ipv4Bytes(src), 0);
  pseudo.set(ipv4Bytes(dst), 4);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(udpLen, 10);
  let c = ~onesSum(p.subarray(20), onesSum(pseudo)) & 0xffff;
  if (c === 0) c = 0xffff;
  p.writeUInt16BE(c, 26);
  return p;
}

export interface ParsedUdp4 {
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

/** Parses an IPv4/UDP packet, or returns undefined for anything else. */
export function parseUdp4(p: Uint8Array): ParsedUdp4 | undefined {
  if (p.length < 28 || p[0] >> 4 !== 4 || p[9] !== 17) return undefined;
  const b = Buffer.from(p.buffer, p.byteOffset, p.length);
  const ihl = (b[0] & 0x0f) * 4;
  const total = b.readUInt16BE(2);
  if (ihl < 20 || total > b.length || total < ihl + 8) return undefined;
  return {
    src: Array.from(b.subarray(12, 16)).join('.'),
    dst: Array.from(b.subarray(16, 20)).join('.'),
    srcPort: b.readUInt16BE(ihl),
    dstPort: b.readUInt16BE(ihl + 2),
    payload: Buffer.from(b.subarray(ihl + 8, total)),
  };
}

/** True when the IPv4 header checksum verifies. */
export function ipv4HeaderOk(p: Uint8Array): boolean {
  const ihl = (p[0] & 0x0f) * 4;
  return onesSum(p.subarray(0, ihl)) === 0xffff;
}
