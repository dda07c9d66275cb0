import { isIPv4, isIPv6 } from 'node:net';
import { TunvpnError } from '../errors.js';

/** An IP prefix: address bytes (4 or 16, host bits cleared) and prefix length. */
export interface Cidr {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly bits: number;
}

export class CidrError extends TunvpnError {
  constructor(message: string) {
    super('CIDR_INVALID', message);
  }
}

/**
 * "a.b.c.d" with each part 0..255 and no leading zeros (exactly what
 * isIPv4 accepts) as 4 bytes, in one pass and one allocation; undefined
 * for anything else, which the general path then decides. A peer with
 * 50,000 allowed IPs parses each of them (regex, split, map: about 0.8 us
 * each, most of a peer-table insert).
 */
function dottedQuad(text: string): Uint8Array | undefined {
  const n = text.length;
  if (n < 7 || n > 15) return undefined;
  const out = new Uint8Array(4);
  let part = 0;
  let digits = 0;
  let index = 0;
  for (let i = 0; i <= n; i++) {
    const ch = i === n ? 46 : text.charCodeAt(i);
    if (ch === 46) {
      if (digits === 0 || index > 3) return undefined;
      out[index++] = part;
      part = 0;
      digits = 0;
    } else if (ch >= 48 && ch <= 57) {
      if (digits > 0 && part === 0) return undefined;
      part = part * 10 + (ch - 48);
      if (++digits > 3 || part > 255) return undefined;
    } else return undefined;
  }
  return index === 4 ? out : undefined;
}

/** Parses a dotted IPv4 or textual IPv6 address into 4 or 16 bytes. */
export function parseIp(text: string): Uint8Array {
  const fast = dottedQuad(text);
  if (fast !== undefined) return fast;
  if (isIPv4(text)) {
    return Uint8Array.from(text.split('.').map(Number));
  }
  if (isIPv6(text)) {
    let body = text;
    const tail: number[] = [];
    // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two 16-bit groups.
    const lastColon = body.lastIndexOf(':');
    const maybeV4 = body.slice(lastColon + 1);
    if (maybeV4.includes('.')) {
      const v4 = maybeV4.split('.').map(Number);
      tail.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      body = body.slice(0, lastColon + 1) + (body.endsWith('::' + maybeV4) ? '' : '0');
      if (body.endsWith(':0')) body = body.slice(0, -2);
      if (body.endsWith(':') && !body.endsWith('::')) body = body.slice(0, -1);
    }
    const [head, rest] = body.includes('::') ? body.split('::') : [body, undefined];
    const headGroups = head ? head.split(':').filter((g) => g !== '') : [];
    const restGroups = rest ? rest.split(':').filter((g) => g !== '') : [];
    const groups = headGroups.map((g) => parseInt(g, 16));
    const after = restGroups.map((g) => parseInt(g, 16)).concat(tail);
    if (rest === undefined) {
      groups.push(...tail);
    } else {
      while (groups.length + after.length < 8) groups.push(0);
      groups.push(...after);
    }
    const out = new Uint8Array(16);
    for (let i = 0; i < 8; i++) {
      out[i * 2] = (groups[i] >> 8) & 0xff;
      out[i * 2 + 1] = groups[i] & 0xff;
    }
    return out;
  }
  throw new CidrError(`"${text}" is not an IPv4 or IPv6 address`);
}

/**
 * Parses "a.b.c.d/n" or "x::y/n" (a bare address means a host route). Host
 * bits are cleared, as WireGuard does, so "10.0.0.5/24" becomes 10.0.0.0/24.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const bytes = parseIp(addrText);
  const family: 4 | 6 = bytes.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const bitsText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) {
      throw new CidrError(`"${text}" has an invalid prefix length (0 to ${max})`);
    }
    bits = Number(bitsText);
  }
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return { family, bytes, bits };
}

/** Formats address bytes as text (IPv6 in RFC 5952 shortest form). */
export function formatIp(bytes: Uint8Array): string {
  // (A template, not Array.from().join(): a get of a peer with 50,000 prefixes formats each.)
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  // Longest run of zero groups (length >= 2) collapses to "::".
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Canonical text of a prefix, e.g. "10.0.0.0/24" or "fd00::/64". */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr.bytes)}/${cidr.bits}`;
}

/**
 * Canonical IPv4 prefixes without parsing ("a.b.c.d/n": each part 0 to 255
 * without leading zeros, n 0 to 32 without a leading zero, host bits
 * clear): such text is its own canonical form, so the config loader and
 * the route planner skip parseCidr and formatCidr for it (4.5 us a prefix
 * through that path; a 10,000-peer hub reload checks 40,000). Anything else
 * (IPv6, a bare address, host bits set, a leading zero) is for parseCidr.
 */

/** The last prefix scanCanonicalV4 accepted: its address as a 32-bit number and its length (module variables, so no object per prefix). */
export let scannedV4Addr = 0;
export let scannedV4Bits = 0;

/** True for a canonical IPv4 prefix, with its address and length in scannedV4Addr / scannedV4Bits. */
export function scanCanonicalV4(text: string): boolean {
  const n = text.length;
  if (n < 9 || n > 18) return false;
  let addr = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  let i = 0;
  for (; i < n; i++) {
    const ch = text.charCodeAt(i);
    if (ch >= 48 && ch <= 57) {
      // No leading zeros: canonical text only.
      if (digits > 0 && part === 0) return false;
      part = part * 10 + (ch - 48);
      if (++digits > 3 || part > 255) return false;
    } else if (ch === 46 || ch === 47) {
      if (digits === 0) return false;
      addr = addr * 256 + part;
      part = 0;
      digits = 0;
      if (ch === 47) break;
      if (++dots > 3) return false;
    } else return false;
  }
  if (dots !== 3 || i >= n - 1) return false;
  let bits = 0;
  let bitDigits = 0;
  for (i++; i < n; i++) {
    const ch = text.charCodeAt(i);
    if (ch < 48 || ch > 57 || (bitDigits > 0 && bits === 0)) return false;
    bits = bits * 10 + (ch - 48);
    if (++bitDigits > 2) return false;
  }
  if (bits > 32 || addr % 2 ** (32 - bits) !== 0) return false;
  scannedV4Addr = addr;
  scannedV4Bits = bits;
  return true;
}

/**
 * The octet-aligned canonical IPv4 prefixes (a.b.c.d/32, a.b.c.0/24,
 * a.b.0.0/16, a.0.0.0/8, 0.0.0.0/0): a regular expression is native code,
 * and the loaders run once per change, often before V8 has optimised
 * scanCanonicalV4's loop (0.25-0.6 us a call then, the expression about a
 * fifth of that).
 */
const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
export const CANONICAL_V4_ALIGNED = new RegExp(
  `^(?:${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}/32|${OCTET}\\.${OCTET}\\.${OCTET}\\.0/24|${OCTET}\\.${OCTET}\\.0\\.0/16|${OCTET}\\.0\\.0\\.0/8|0\\.0\\.0\\.0/0)$`,
);
