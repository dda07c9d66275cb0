/**
 * Encoded endpoints: a peer's underlay address as a fixed-size byte string,
 * the form every datagram transport takes and gives (sources of received
 * datagrams, destinations of sends), so the packet path compares bytes
 * instead of building address strings or objects.
 *
 * Plain TypeScript, so the node:dgram fallback works without the native
 * addon; the layout is the one the addon's udp.c reads and writes
 * (test/transport/endpoint-codec.test.ts checks the two byte for byte):
 *   [0]      family: 4 or 6
 *   [1]      0
 *   [2..3]   port, big-endian
 *   [4..7]   IPv6 scope id, little-endian (0 for IPv4)
 *   [8..23]  address: 4 bytes for IPv4 (rest 0), 16 for IPv6
 * Every byte is deterministic, so equal endpoints are equal bytes. An
 * IPv4-mapped IPv6 address encodes as IPv4 (the IPv6 socket is IPV6_V6ONLY,
 * beside an IPv4 socket on the same port, as in WireGuard).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { TunvpnError } from '../errors.js';

/** Bytes per encoded endpoint (ENDPOINT_SIZE in udp.c). */
export const ENDPOINT_SIZE = 24;

/** An endpoint in the layout above: ENDPOINT_SIZE bytes (a slot of a batch's sources, or a copy). */
export type EncodedEndpoint = Uint8Array;

/** What decoding gives back: the numeric address (with %zone for a scoped IPv6 one), port, family. */
export interface DecodedEndpoint {
  address: string;
  port: number;
  family: 4 | 6;
}

/** Not a numeric IP address, or not an encoded endpoint; `code` EINVAL, as the addon threw. */
export class EndpointCodecError extends TunvpnError {
  constructor(message: string) {
    super('EINVAL', message);
  }
}

const FAMILY = 0;
const PORT = 2;
const SCOPE = 4;
const ADDRESS = 8;

/**
 * Encodes a numeric IP address (IPv4, IPv6, IPv6 with %zone: an interface
 * name or index) and port. Throws EndpointCodecError for anything else
 * (resolve host names first).
 */
export function encodeEndpoint(address: string, port: number): EncodedEndpoint {
  const out = new Uint8Array(ENDPOINT_SIZE);
  encodeEndpointInto(address, port, out, 0);
  return out;
}

/** encodeEndpoint into out[offset .. offset + ENDPOINT_SIZE) (a batch's sources slot); nothing allocated for IPv4. */
export function encodeEndpointInto(address: string, port: number, out: Uint8Array, offset: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new EndpointCodecError('port must be an integer in 0..65535');
  if (isIPv4(address)) {
    out.fill(0, offset, offset + ENDPOINT_SIZE);
    out[offset + FAMILY] = 4;
    writeIPv4(address, 0, address.length, out, offset);
  } else {
    const pct = address.indexOf('%');
    const host = pct < 0 ? address : address.slice(0, pct);
    if (!isIPv6(host)) throw new EndpointCodecError(`not an IP address: "${address.slice(0, 100)}"`);
    out.fill(0, offset, offset + ENDPOINT_SIZE);
    writeIPv6(host, out, offset + ADDRESS);
    if (isV4Mapped(out, offset + ADDRESS)) {
      out.copyWithin(offset + ADDRESS, offset + ADDRESS + 12, offset + ADDRESS + 16);
      out.fill(0, offset + ADDRESS + 4, offset + ENDPOINT_SIZE);
      out[offset + FAMILY] = 4;
    } else {
      out[offset + FAMILY] = 6;
      if (pct >= 0) {
        const scope = scopeId(address.slice(pct + 1));
        if (scope === undefined) throw new EndpointCodecError(`not an IP address: "${address.slice(0, 100)}"`);
        out[offset + SCOPE] = scope & 0xff;
        out[offset + SCOPE + 1] = (scope >>> 8) & 0xff;
        out[offset + SCOPE + 2] = (scope >>> 16) & 0xff;
        out[offset + SCOPE + 3] = (scope >>> 24) & 0xff;
      }
    }
  }
  out[offset + PORT] = port >> 8;
  out[offset + PORT + 1] = port & 0xff;
}

/** The address family (4 or 6) of an encoded endpoint: which socket sends to it. */
export function endpointFamily(encoded: Uint8Array, offset = 0): number {
  return encoded[offset + FAMILY];
}

/** Whether the source of datagram `slot` is the endpoint `encoded`; allocates nothing. */
export function sourceEquals(sources: Uint8Array, slot: number, encoded: EncodedEndpoint): boolean {
  const base = slot * ENDPOINT_SIZE;
  // Port and the low address bytes differ first between peers.
  if (sources[base + 2] !== encoded[2] || sources[base + 3] !== encoded[3]) return false;
  for (let i = ENDPOINT_SIZE - 1; i >= 0; i--) if (sources[base + i] !== encoded[i]) return false;
  return true;
}

/** A copy of the source of datagram `slot` (to keep: the batch's sources are reused). */
export function sourceAt(sources: Uint8Array, slot: number): EncodedEndpoint {
  return sources.slice(slot * ENDPOINT_SIZE, (slot + 1) * ENDPOINT_SIZE);
}

/** Decodes the source of datagram `slot` (allocates: call only when it changed, or for handshakes). */
export function decodeSource(sources: Uint8Array, slot: number): DecodedEndpoint {
  return decodeAt(sources, slot * ENDPOINT_SIZE);
}

/** Decodes an encoded endpoint (allocates). */
export function decodeEndpoint(encoded: Uint8Array, offset = 0): DecodedEndpoint {
  return decodeAt(encoded, offset);
}

function decodeAt(b: Uint8Array, o: number): DecodedEndpoint {
  if (o < 0 || o + ENDPOINT_SIZE > b.length) throw new EndpointCodecError('offset out of range');
  const port = (b[o + PORT] << 8) | b[o + PORT + 1];
  const family = b[o + FAMILY];
  if (family === 4) return { address: `${b[o + 8]}.${b[o + 9]}.${b[o + 10]}.${b[o + 11]}`, port, family: 4 };
  if (family !== 6) throw new EndpointCodecError('not an encoded endpoint');
  const scope = (b[o + SCOPE] | (b[o + SCOPE + 1] << 8) | (b[o + SCOPE + 2] << 16) | (b[o + SCOPE + 3] << 24)) >>> 0;
  let address = formatIPv6(b, o + ADDRESS);
  // As getnameinfo(NI_NUMERICHOST) prints it: a link-local scope by interface name when there is one, else the number.
  if (scope !== 0) address += `%${isScopedByName(b, o + ADDRESS) ? (interfaceName(scope) ?? scope) : scope}`;
  return { address, port, family: 6 };
}

// ---- IPv4 / IPv6 text, without allocating for IPv4 ----

/** Writes a dotted quad known to be valid (isIPv4) from text[start, end). */
function writeIPv4(text: string, start: number, end: number, out: Uint8Array, offset: number): void {
  let octet = 0;
  let k = offset + ADDRESS;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      out[k++] = octet;
      octet = 0;
    } else {
      octet = octet * 10 + (c - 0x30);
    }
  }
  out[k] = octet;
}

/** Writes the 16 bytes of an IPv6 address known to be valid (isIPv6, no zone). */
function writeIPv6(text: string, out: Uint8Array, at: number): void {
  const words = new Array<number>(8).fill(0);
  const gap = text.indexOf('::');
  const parseGroups = (part: string): number[] => {
    if (part === '') return [];
    const groups: number[] = [];
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const q = g.split('.').map(Number);
        groups.push((q[0] << 8) | q[1], (q[2] << 8) | q[3]);
      } else {
        groups.push(parseInt(g, 16));
      }
    }
    return groups;
  };
  if (gap < 0) {
    const g = parseGroups(text);
    for (let i = 0; i < 8; i++) words[i] = g[i];
  } else {
    const head = parseGroups(text.slice(0, gap));
    const tail = parseGroups(text.slice(gap + 2));
    for (let i = 0; i < head.length; i++) words[i] = head[i];
    for (let i = 0; i < tail.length; i++) words[8 - tail.length + i] = tail[i];
  }
  for (let i = 0; i < 8; i++) {
    out[at + 2 * i] = words[i] >> 8;
    out[at + 2 * i + 1] = words[i] & 0xff;
  }
}

function isV4Mapped(b: Uint8Array, at: number): boolean {
  for (let i = 0; i < 10; i++) if (b[at + i] !== 0) return false;
  return b[at + 10] === 0xff && b[at + 11] === 0xff;
}

/**
 * IPv6 text as inet_ntop prints it (what the addon's getnameinfo gave):
 * lower-case hex, the longest run of two or more zero groups (the first
 * on a tie) as "::", and ::a.b.c.d for an IPv4-compatible address.
 */
function formatIPv6(b: Uint8Array, at: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((b[at + 2 * i] << 8) | b[at + 2 * i + 1]);
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestBase = -1;
  let s = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) s += ':';
      continue;
    }
    if (i !== 0) s += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      s += `${b[at + 12]}.${b[at + 13]}.${b[at + 14]}.${b[at + 15]}`;
      break;
    }
    s += w[i].toString(16);
  }
  if (bestBase >= 0 && bestBase + bestLen === 8) s += ':';
  return s;
}

// ---- zones: interface names <-> indices ----

/** Link-local unicast (fe80::/10) or link-local multicast (ff02::/16): getnameinfo names their scope. */
function isScopedByName(b: Uint8Array, at: number): boolean {
  return (b[at] === 0xfe && (b[at + 1] & 0xc0) === 0x80) || (b[at] === 0xff && (b[at + 1] & 0x0f) === 0x02);
}

/** A zone as the scope id it stands for: an interface index, or an interface name of this network namespace. */
function scopeId(zone: string): number | undefined {
  if (/^\d+$/.test(zone)) {
    const n = Number(zone);
    return n <= 0xffffffff ? n : undefined;
  }
  // getifaddrs (netlink) sees the namespace we run in, whatever /sys shows;
  // an interface with no link-local address is found in /sys.
  const addrs = networkInterfaces()[zone];
  if (addrs !== undefined) for (const a of addrs) if (a.family === 'IPv6' && a.scopeid !== undefined && a.scopeid !== 0) return a.scopeid;
  try {
    const n = Number(readFileSync(`/sys/class/net/${zone}/ifindex`, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The name of interface `index`, undefined when there is none. */
function interfaceName(index: number): string | undefined {
  const all = networkInterfaces();
  for (const name of Object.keys(all)) {
    const addrs = all[name];
    if (addrs !== undefined) for (const a of addrs) if (a.family === 'IPv6' && a.scopeid === index && a.address.startsWith('fe80')) return name;
  }
  try {
    for (const name of readdirSync('/sys/class/net')) {
      try {
        if (Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8').trim()) === index) return name;
      } catch {
        // gone meanwhile
      }
    }
  } catch {
    // no sysfs: the number
  }
  return undefined;
}
