/**
 * IP address text as Go's net/netip reads and writes it, because the `wg`
 * tool and every script written against wireguard-go send what Go accepts,
 * and `wg showconf` must read back what we print. Node's net.isIPv6 differs
 * in the corners (zones with any character, five-digit groups, leading
 * zeros in a prefix length), so the rules are written out here:
 *
 * - IPv4: four decimal fields of 1 to 3 digits, no leading zeros, each at
 *   most 255.
 * - IPv6: groups of 1 to 4 hex digits, at most one `::` standing for at
 *   least one zero group, an optional dotted IPv4 tail in the last 32 bits,
 *   an optional non-empty `%zone`.
 * - A prefix: `addr/bits`, bits decimal without sign or leading zero, no
 *   zone (current Go; Go up to 1.21 took `/08`, `/+8` and five-digit
 *   groups, see docs/decisions.md).
 * - `addr:port` with IPv6 (and only IPv6) in brackets, the port as
 *   strconv.ParseUint reads it (decimal, leading zeros of any length).
 * - Output (Addr.String): IPv4 dotted; IPv6 lower case, RFC 5952 (the
 *   longest run of two or more zero groups, the first of equal runs, is
 *   `::`), an IPv4-mapped address as `::ffff:a.b.c.d`, the zone as given.
 */

export interface NetipAddr {
  readonly family: 4 | 6;
  /** 4 or 16 bytes. */
  readonly bytes: Uint8Array;
  /** IPv6 scope as typed (an interface name or number); '' when none. */
  readonly zone: string;
}

/** Why a text is not an address; the message never repeats the input (it may be anything). */
export class NetipSyntaxError extends Error {}

function fail(why: string): never {
  throw new NetipSyntaxError(why);
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** Dotted IPv4 into out[at..at+4]. */
function parseIPv4Into(s: string, out: Uint8Array, at: number): void {
  let field = 0;
  let val = 0;
  let digits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (isDigit(c)) {
      if (digits === 1 && val === 0) fail('IPv4 field has a leading zero');
      val = val * 10 + (c - 0x30);
      digits++;
      if (val > 255) fail('IPv4 field above 255');
    } else if (c === 0x2e) {
      if (digits === 0) fail('IPv4 field without digits');
      if (field === 3) fail('IPv4 address too long');
      out[at + field++] = val;
      val = 0;
      digits = 0;
    } else {
      fail('unexpected character in IPv4 address');
    }
  }
  if (digits === 0) fail('IPv4 field without digits');
  if (field < 3) fail('IPv4 address too short');
  out[at + 3] = val;
}

function parseIPv6(text: string): NetipAddr {
  let s = text;
  let zone = '';
  const pct = s.indexOf('%');
  if (pct >= 0) {
    zone = s.slice(pct + 1);
    s = s.slice(0, pct);
    if (zone === '') fail('empty IPv6 zone');
  }
  const ip = new Uint8Array(16);
  let ellipsis = -1;
  let pos = 0;
  if (s.startsWith('::')) {
    ellipsis = 0;
    pos = 2;
    if (pos === s.length) return { family: 6, bytes: ip, zone };
  }
  let i = 0;
  while (i < 16) {
    let off = 0;
    let acc = 0;
    while (pos + off < s.length) {
      const v = hexValue(s.charCodeAt(pos + off));
      if (v < 0) break;
      if (off >= 4) fail('IPv6 group of more than 4 digits');
      acc = acc * 16 + v;
      off++;
    }
    if (off === 0) fail('IPv6 group without digits');
    if (pos + off < s.length && s.charCodeAt(pos + off) === 0x2e) {
      if (ellipsis < 0 && i !== 12) fail('embedded IPv4 address not in the last 32 bits');
      if (i + 4 > 16) fail('no room for an embedded IPv4 address');
      parseIPv4Into(s.slice(pos), ip, i);
      pos = s.length;
      i += 4;
      break;
    }
    ip[i] = acc >> 8;
    ip[i + 1] = acc & 0xff;
    i += 2;
    pos += off;
    if (pos === s.length) break;
    if (s.charCodeAt(pos) !== 0x3a) fail('unexpected character in IPv6 address');
    if (pos + 1 === s.length) fail('IPv6 address ends with a colon');
    pos++;
    if (s.charCodeAt(pos) === 0x3a) {
      if (ellipsis >= 0) fail('more than one :: in IPv6 address');
      ellipsis = i;
      pos++;
      if (pos === s.length) break;
    }
  }
  if (pos !== s.length) fail('trailing characters after IPv6 address');
  if (i < 16) {
    if (ellipsis < 0) fail('IPv6 address too short');
    const n = 16 - i;
    for (let j = i - 1; j >= ellipsis; j--) ip[j + n] = ip[j];
    ip.fill(0, ellipsis, ellipsis + n);
  } else if (ellipsis >= 0) {
    fail(':: must stand for at least one zero group');
  }
  return { family: 6, bytes: ip, zone };
}

/** Go's netip.ParseAddr. Throws NetipSyntaxError. */
export function parseAddr(text: string): NetipAddr {
  // The first '.', ':' or '%' decides the family, as in Go.
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      const bytes = new Uint8Array(4);
      parseIPv4Into(text, bytes, 0);
      return { family: 4, bytes, zone: '' };
    }
    if (c === 0x3a) return parseIPv6(text);
    if (c === 0x25) fail('zone without an IPv6 address');
  }
  fail('not an IP address');
}

export interface NetipPrefix {
  readonly addr: NetipAddr;
  readonly bits: number;
}

/** Go's netip.ParsePrefix (no zone; host bits are kept, as Go keeps them). */
export function parsePrefix(text: string): NetipPrefix {
  const slash = text.lastIndexOf('/');
  if (slash < 0) fail('no prefix length');
  const addr = parseAddr(text.slice(0, slash));
  if (addr.zone !== '') fail('a prefix cannot have a zone');
  const bitsText = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]*)$/.test(bitsText)) fail('prefix length is not a plain decimal number');
  const max = addr.family === 4 ? 32 : 128;
  if (bitsText.length > 3 || Number(bitsText) > max) fail(`prefix length above ${max}`);
  return { addr, bits: Number(bitsText) };
}

/**
 * strconv.ParseUint(text, 10, ...): decimal digits only (no sign, no
 * underscore), any number of leading zeros, at most `max`. Undefined if not.
 */
export function parseDecimal(text: string, max: number): number | undefined {
  if (text.length === 0) return undefined;
  let i = 0;
  for (; i < text.length; i++) {
    if (!isDigit(text.charCodeAt(i))) return undefined;
  }
  let start = 0;
  while (start < text.length - 1 && text.charCodeAt(start) === 0x30) start++;
  // Beyond 16 significant digits no max we use (2^32 - 1 at most) can be met; Number() would round.
  if (text.length - start > 16) return undefined;
  const n = Number(text.slice(start));
  return n <= max ? n : undefined;
}

export interface NetipAddrPort {
  readonly addr: NetipAddr;
  readonly port: number;
}

/** Go's netip.ParseAddrPort: `a.b.c.d:port` or `[v6%zone]:port`. */
export function parseAddrPort(text: string): NetipAddrPort {
  const colon = text.lastIndexOf(':');
  if (colon < 0) fail('no port');
  let host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (host === '') fail('no address');
  if (portText === '') fail('no port');
  let bracketed = false;
  if (host.charCodeAt(0) === 0x5b) {
    if (host.length < 2 || host.charCodeAt(host.length - 1) !== 0x5d) fail('missing ]');
    host = host.slice(1, -1);
    bracketed = true;
  }
  const port = parseDecimal(portText, 0xffff);
  if (port === undefined) fail('port is not a number from 0 to 65535');
  const addr = parseAddr(host);
  if (bracketed && addr.family === 4) fail('brackets are only for IPv6 addresses');
  if (!bracketed && addr.family === 6) fail('an IPv6 address needs brackets');
  return { addr, port };
}

/** An IPv6 address in ::ffff:0:0/96 (IPv4-mapped), which Go prints with a dotted tail. */
function isMapped4(b: Uint8Array): boolean {
  if (b.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/** Go's Addr.String. */
export function formatAddr(addr: NetipAddr): string {
  const b = addr.bytes;
  const zone = addr.zone === '' ? '' : `%${addr.zone}`;
  if (addr.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (isMapped4(b)) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}${zone}`;
  let bestStart = -1;
  let bestLen = 0;
  for (let g = 0; g < 8; ) {
    if (b[2 * g] !== 0 || b[2 * g + 1] !== 0) {
      g++;
      continue;
    }
    let end = g;
    while (end < 8 && b[2 * end] === 0 && b[2 * end + 1] === 0) end++;
    if (end - g >= 2 && end - g > bestLen) {
      bestStart = g;
      bestLen = end - g;
    }
    g = end;
  }
  let out = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      out += '::';
      g += bestLen - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    out += ((b[2 * g] << 8) | b[2 * g + 1]).toString(16);
  }
  return out + zone;
}

/** Go's AddrPort.String: `a.b.c.d:port` or `[v6%zone]:port`. */
export function formatAddrPort(addr: NetipAddr, port: number): string {
  return addr.family === 4 ? `${formatAddr(addr)}:${port}` : `[${formatAddr(addr)}]:${port}`;
}

/**
 * An address text we hold (from our own config or parser) in Go's form; a
 * text Go would not read is returned as it is rather than thrown away.
 */
export function canonicalAddrText(text: string): string {
  try {
    return formatAddr(parseAddr(text));
  } catch {
    return text;
  }
}
