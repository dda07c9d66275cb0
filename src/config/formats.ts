/**
 * Field formats: convict `format` functions. Each throws an Error whose
 * message is the reason (convict and our walker prefix the path). None of
 * them echoes a secret; formats of secret fields say only what is wrong.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { CANONICAL_V4_ALIGNED, formatCidr, formatIp, parseCidr, parseIp, scanCanonicalV4 } from '../peers/cidr.js';
import type { EndpointConfig } from './types.js';
import { interfaceNameProblem } from './ifname.js';
import { keyTextProblem } from './keys.js';
import { couldBeKeyMaterial, quote, QUOTE_MAX_CHARS } from './redact.js';
import { ipv6EndpointProblem } from '../transport/endpoint.js';

/** A problem with some elements of a list field; the walker reports each one at `path[i]`. */
export class ListItemsError extends Error {
  /** `path`: a deeper step below `[index]`, e.g. "[0]" for an element of a nested list. */
  readonly items: { index: number; message: string; path?: string }[];

  constructor(items: { index: number; message: string; path?: string }[]) {
    super(items.map((i) => `[${i.index}]${i.path ?? ''} ${i.message}`).join('; '));
    this.items = items;
  }
}

function fail(message: string): never {
  throw new Error(message);
}

/** A value's kind for a message ("got a string", "got null"): never the value, which may be a secret. */
export function describeType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return `a ${typeof v}`;
}

export { quote };

/**
 * Runs a parser whose errors quote their input; replaces such an error by
 * one that shows the input safely (see redact.ts) when the input could be
 * key material or is too long to quote whole.
 */
function guarded<T>(text: string, expected: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (couldBeKeyMaterial(text)) fail(`is not ${expected}: ${quote(text)}`);
    // A long value keeps the specific reason, quoted cut down.
    if (text.length > QUOTE_MAX_CHARS && err instanceof Error) fail(err.message.split(`"${text}"`).join(quote(text)));
    throw err;
  }
}

function requireInteger(v: unknown, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v))
    fail(`must be an integer from ${min} to ${max}, got ${describeType(v)}${typeof v === 'number' ? ` ${v}` : ''}`);
  if (v < min || v > max) fail(`must be from ${min} to ${max}, got ${v}`);
}

/** The one interface-name rule (ifname.ts): Linux's dev_valid_name() narrowed to what is safe everywhere. */
export function interfaceName(v: unknown): void {
  const problem = interfaceNameProblem(v);
  if (problem !== undefined) fail(problem);
}

/** A base64 key; the message never contains the value. */
export function keyText(v: unknown): void {
  const problem = keyTextProblem(v);
  if (problem !== undefined) fail(problem);
}

export function filePath(v: unknown): void {
  if (typeof v !== 'string') fail(`must be a file path string, got ${describeType(v)}`);
  if (v.length === 0) fail('must not be empty');
  if (v.includes('\0')) fail('must not contain a NUL character');
}

export function listenPort(v: unknown): void {
  requireInteger(v, 0, 65535);
}

export const MTU_MIN = 576;
export const MTU_MIN_IPV6 = 1280;
export const MTU_MAX = 65535;

export function mtu(v: unknown): void {
  requireInteger(v, MTU_MIN, MTU_MAX);
}

export function keepalive(v: unknown): void {
  requireInteger(v, 0, 65535);
}

/** dns.resolveInterval: seconds, 0 (off) to an hour. */
export function resolveInterval(v: unknown): void {
  requireInteger(v, 0, 3600);
}

export function peerName(v: unknown): void {
  if (typeof v !== 'string') fail(`must be a string, got ${describeType(v)}`);
  if (v.length === 0) fail('must not be empty');
  if (v.length > 64) fail('must be at most 64 characters');
  if (/[\u0000-\u001f\u007f]/.test(v)) fail('must not contain control characters');
}

export function oneOf(values: readonly string[]): (v: unknown) => void {
  return (v: unknown) => {
    if (typeof v !== 'string' || !values.includes(v)) {
      fail(`must be one of ${values.join(', ')}${typeof v === 'string' ? `, got ${quote(v)}` : `, got ${describeType(v)}`}`);
    }
  };
}

export function arrayOfObjects(v: unknown): void {
  if (!Array.isArray(v)) fail(`must be an array, got ${describeType(v)}`);
}

/**
 * An interface address: "10.62.0.1/24" keeps its host part (it is the
 * address we assign). A bare address is a host address (/32 or /128).
 */
export function canonicalAddress(text: string): string {
  return guarded(text, 'an address in CIDR notation', () => canonicalAddressUnguarded(text));
}

function canonicalAddressUnguarded(text: string): string {
  if (text.includes('%')) fail(`"${text}" must not have a zone index`);
  const slash = text.indexOf('/');
  const host = parseIp(slash < 0 ? text : text.slice(0, slash));
  const prefix = parseCidr(text);
  return `${formatIp(host)}/${prefix.bits}`;
}

/** An allowed-IPs prefix in canonical text; `hostBits` when the input had host bits set. */
export function canonicalPrefix(text: string): { text: string; hostBits: boolean } {
  if (isCanonicalV4Prefix(text)) return { text, hostBits: false };
  return guarded(text, 'a CIDR prefix', () => canonicalPrefixUnguarded(text));
}

/**
 * True when `text` is an IPv4 prefix already in canonical form ("a.b.c.d/n":
 * each part 0 to 255 without leading zeros, n 0 to 32 without leading
 * zeros, host bits clear): then it is its own canonical text, with no host
 * bits, and needs no parsing into bytes and formatting back. Anything else
 * (IPv6, a bare address, host bits set, a leading zero, an error) is left
 * to the general path, which decides it as before. The hub's 20,000
 * prefixes took 4.5 us each through that path (regex, parse, format,
 * parse again to compare), checked twice (the schema walk, then the
 * loader): 45 ms of a 10,000-peer reload.
 */
export function isCanonicalV4Prefix(text: string): boolean {
  // Native first (src/peers/cidr.ts): a reload runs this about 40,000
  // times; the expression takes the octet-aligned lengths, the scan the others.
  return CANONICAL_V4_ALIGNED.test(text) || scanCanonicalV4(text);
}

function canonicalPrefixUnguarded(text: string): { text: string; hostBits: boolean } {
  if (text.includes('%')) fail(`"${text}" must not have a zone index`);
  const canonical = formatCidr(parseCidr(text));
  const slash = text.indexOf('/');
  const host = formatIp(parseIp(slash < 0 ? text : text.slice(0, slash)));
  return { text: canonical, hostBits: host !== canonical.slice(0, canonical.indexOf('/')) };
}

/** `accepts`: a check without allocation for text `convert` is known to accept (the common case). */
function listOf(convert: (text: string) => unknown, what: string, accepts?: (text: string) => boolean): (v: unknown) => void {
  return (v: unknown) => {
    if (!Array.isArray(v)) fail(`must be an array of ${what} strings, got ${describeType(v)}`);
    // A plain loop, and the problem list made only for a problem: this runs once per peer.
    let items: { index: number; message: string }[] | undefined;
    for (let index = 0; index < v.length; index++) {
      const item: unknown = v[index];
      if (typeof item === 'string' && accepts?.(item) === true) continue;
      if (item === undefined && !(index in v)) continue; // a hole, which forEach skipped
      if (typeof item !== 'string') {
        items ??= [];
        items.push({ index, message: `must be a ${what} string, got ${describeType(item)}` });
        continue;
      }
      try {
        convert(item);
      } catch (err) {
        items ??= [];
        items.push({ index, message: err instanceof Error ? err.message : String(err) });
      }
    }
    if (items !== undefined) throw new ListItemsError(items);
  };
}

export const addressList = listOf(canonicalAddress, 'CIDR address');

/** Longest argument of a hook, and most arguments in one vector: generous, but bounded. */
export const HOOK_ARG_MAX = 65536;
export const HOOK_ARGS_MAX = 1024;

/**
 * A list of hooks (interface.hooks.*): each an argument vector, a
 * non-empty array of strings run without a shell. argv[0] is an absolute
 * path or a bare name looked up in PATH; a relative path is refused (the
 * daemon's working directory is not the config's).
 */
export function hookList(v: unknown): void {
  if (!Array.isArray(v)) fail(`must be an array of argument vectors (e.g. [["/usr/sbin/nft", "add", "table", "ip", "nat"]]), got ${describeType(v)}`);
  const items: { index: number; message: string; path?: string }[] = [];
  v.forEach((hook: unknown, i: number) => {
    if (typeof hook === 'string') {
      items.push({ index: i, message: 'must be an argument vector (an array of strings), not a string; a shell command is ["/bin/sh", "-c", "..."]' });
      return;
    }
    if (!Array.isArray(hook)) {
      items.push({ index: i, message: `must be an argument vector (an array of strings), got ${describeType(hook)}` });
      return;
    }
    if (hook.length === 0) {
      items.push({ index: i, message: 'must not be empty: argv[0] is the program to run' });
      return;
    }
    if (hook.length > HOOK_ARGS_MAX) {
      items.push({ index: i, message: `has ${hook.length} arguments; at most ${HOOK_ARGS_MAX}` });
      return;
    }
    hook.forEach((arg: unknown, j: number) => {
      const path = `[${j}]`;
      if (typeof arg !== 'string') items.push({ index: i, path, message: `must be a string, got ${describeType(arg)}` });
      else if (arg.includes('\0')) items.push({ index: i, path, message: 'must not contain a NUL character' });
      else if (arg.length > HOOK_ARG_MAX) items.push({ index: i, path, message: `is ${arg.length} characters long; at most ${HOOK_ARG_MAX}` });
      else if (j === 0 && arg === '') items.push({ index: i, path, message: 'must not be empty: it is the program to run' });
      else if (j === 0 && !arg.startsWith('/') && arg.includes('/')) {
        items.push({ index: i, path, message: `${quote(arg)} is a relative path; give an absolute path or a bare name looked up in PATH` });
      }
    });
  });
  if (items.length > 0) throw new ListItemsError(items);
}
export const prefixList = listOf(canonicalPrefix, 'CIDR', isCanonicalV4Prefix);

const HOST_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

function isHostname(host: string): boolean {
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  // All-numeric dotted names look like (broken) IPv4 addresses; refuse them.
  if (labels.every((l) => /^\d+$/.test(l))) return false;
  return labels.every((l) => HOST_LABEL.test(l));
}

/**
 * "1.2.3.4:51820", "[fd00::1]:51820", "[fe80::1%eth0]:51820" (a link-local
 * address with its zone: an interface name or index; required there, and
 * refused on any other address) or "host.example:51820".
 */
export function parseEndpoint(text: string): EndpointConfig {
  return guarded(text, 'a "host:port" endpoint', () => parseEndpointUnguarded(text));
}

function parseEndpointUnguarded(text: string): EndpointConfig {
  const colon = text.lastIndexOf(':');
  if (colon < 0) fail(`"${text}" has no port (expected host:port, [IPv6]:port)`);
  let host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    fail(`"${text}" has an invalid port (1 to 65535)`);
  }
  if (host.startsWith('[')) {
    if (!host.endsWith(']')) fail(`"${text}" has an unclosed '['`);
    host = host.slice(1, -1);
    const problem = ipv6EndpointProblem(host);
    if (problem !== undefined) fail(`"${text}": ${problem}`);
    return { host, port: Number(portText) };
  }
  if (host.includes(':')) fail(`"${text}": an IPv6 address must be in brackets, e.g. [fd00::1]:51820`);
  if (host.length === 0) fail(`"${text}" has no host`);
  if (!isIPv4(host) && !isHostname(host)) fail(`"${text}": "${host}" is neither an IPv4 address nor a hostname`);
  return { host, port: Number(portText) };
}

/** A listening address for a local service: "127.0.0.1:9586" or "[::1]:9586" (an IP, not a name). */
export function listenAddress(v: unknown): void {
  if (typeof v !== 'string') fail(`must be an "ip:port" string, got ${describeType(v)}`);
  const e = parseEndpoint(v);
  if (!isIPv4(e.host) && !isIPv6(e.host)) fail(`${quote(v)}: the host must be an IP address, not a name`);
}

export function endpoint(v: unknown): void {
  if (typeof v !== 'string') fail(`must be a "host:port" string, got ${describeType(v)}`);
  parseEndpoint(v);
}
