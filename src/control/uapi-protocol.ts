/**
 * The text of the cross-platform userspace API (wireguard.com/xplatform),
 * as pure functions: a get response from a state snapshot, a set request
 * from its key=value lines. Field order, which fields appear when, the
 * errno codes and what counts as invalid follow wireguard-go, because the
 * `wg` tool is written against it.
 */
import { readFileSync } from 'node:fs';
import { KEY_LEN } from '../crypto/util.js';
import { formatCidr } from '../peers/cidr.js';
import { formatAddr, formatAddrPort, NetipSyntaxError, parseAddr, parseAddrPort, parseDecimal, parsePrefix } from './uapi-netip.js';
import {
  UAPI_EINVAL,
  UAPI_EPROTO,
  UapiError,
  type UapiDeviceOp,
  type UapiEndpoint,
  type UapiInterfaceState,
  type UapiPeerOp,
  type UapiPeerSection,
  type UapiPeerState,
  type UapiSetRequest,
} from './uapi-types.js';

export function keyToHex(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex');
}

function hexNibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/**
 * 64 hex digits to 32 bytes, or undefined. Decoded by hand into a buffer of
 * its own: a large set has a key on every other line, and a slice of
 * Buffer's shared pool would keep 8 KiB alive per key (and could not be
 * wiped on its own).
 */
export function keyFromHex(text: string): Uint8Array | undefined {
  if (text.length !== KEY_LEN * 2) return undefined;
  const out = new Uint8Array(KEY_LEN);
  for (let i = 0; i < KEY_LEN; i++) {
    const hi = hexNibble(text.charCodeAt(2 * i));
    const lo = hexNibble(text.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) {
      out.fill(0);
      return undefined;
    }
    out[i] = (hi << 4) | lo;
  }
  return out;
}

export function isZeroKey(key: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < key.length; i++) acc |= key[i];
  return acc === 0;
}

/** X25519 clamping, as wireguard-go does to every non-zero private key it is given. */
function clamp(key: Uint8Array): Uint8Array {
  key[0] &= 248;
  key[31] = (key[31] & 127) | 64;
  return key;
}

/**
 * The body of a `get=1` response: every line, then `errno=0` and the blank
 * line that ends it. Keys are lower-case hex; a peer without a preshared key
 * reports the all-zero key, as wireguard-go does.
 */
export function serializeGet(state: UapiInterfaceState): string {
  const lines: string[] = [];
  if (state.privateKey !== undefined && !isZeroKey(state.privateKey)) lines.push(`private_key=${keyToHex(state.privateKey)}`);
  if (state.listenPort !== 0) lines.push(`listen_port=${state.listenPort}`);
  if (state.fwmark !== 0) lines.push(`fwmark=${state.fwmark}`);
  const zeroKey = '0'.repeat(KEY_LEN * 2);
  for (const peer of state.peers) {
    lines.push(`public_key=${keyToHex(peer.publicKey)}`);
    lines.push(`preshared_key=${peer.presharedKey === undefined ? zeroKey : keyToHex(peer.presharedKey)}`);
    lines.push('protocol_version=1');
    if (peer.endpoint !== undefined) lines.push(`endpoint=${endpointText(peer.endpoint)}`);
    const wallMs = Math.max(0, peer.lastHandshakeWallMs);
    const sec = Math.floor(wallMs / 1000);
    const nsec = Math.min(999_999_999, Math.round((wallMs - sec * 1000) * 1e6));
    lines.push(`last_handshake_time_sec=${sec}`);
    lines.push(`last_handshake_time_nsec=${nsec}`);
    lines.push(`tx_bytes=${Math.trunc(peer.txBytes)}`);
    lines.push(`rx_bytes=${Math.trunc(peer.rxBytes)}`);
    lines.push(`persistent_keepalive_interval=${peer.persistentKeepalive}`);
    for (const cidr of peer.allowedIPs) lines.push(`allowed_ip=${cidrText(cidr)}`);
  }
  lines.push('errno=0', '', '');
  return lines.join('\n');
}

/**
 * An endpoint as netip.AddrPort prints it (`[fd00::a]:9`, `[::1]:5`,
 * `[fe80::1%eth0]:51820`), whatever spelling it was configured with, so
 * that `get` answers what wireguard-go would and `wg showconf` round-trips.
 */
function endpointText(e: NonNullable<UapiPeerState['endpoint']>): string {
  try {
    return formatAddrPort(parseAddr(e.address), e.port);
  } catch {
    // Not an IP literal (cannot come from our parser or resolver): as it is.
    return e.family === 6 ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
  }
}

/**
 * Our canonical CIDR text is Go's except for IPv4-mapped IPv6 prefixes,
 * which Go prints with a dotted tail (`::ffff:10.0.0.0/104`); only those
 * are re-formatted, the others cost a string comparison.
 */
function cidrText(cidr: string): string {
  if (!cidr.startsWith('::ffff:')) return cidr;
  try {
    const p = parsePrefix(cidr);
    return `${formatAddr(p.addr)}/${p.bits}`;
  } catch {
    return cidr;
  }
}

/** The reply to a set, or to a failed get. */
export function serializeErrno(errno: number): string {
  return `errno=${errno}\n\n`;
}

function invalid(message: string): UapiError {
  return new UapiError(UAPI_EINVAL, message);
}

function parseUint(key: string, value: string, max: number): number {
  const n = parseDecimal(value, max);
  if (n === undefined) throw invalid(`${key}: not a decimal number from 0 to ${max}`);
  return n;
}

function parseKey(key: string, value: string): Uint8Array {
  const bytes = keyFromHex(value);
  if (bytes === undefined) throw invalid(`${key}: not ${KEY_LEN * 2} hex digits`);
  return bytes;
}

function parseTrue(key: string, value: string): void {
  if (value !== 'true') throw invalid(`${key}: the only accepted value is "true"`);
}

/**
 * Whether a network interface of this name exists in our network namespace
 * (/proc/self/net/dev lists every one, with or without addresses). Where
 * that cannot be read, yes: the transport is then the one to refuse it.
 */
export function interfaceExists(name: string): boolean {
  let text: string;
  try {
    text = readFileSync('/proc/self/net/dev', 'latin1');
  } catch {
    return true;
  }
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && line.slice(0, colon).trim() === name) return true;
  }
  return false;
}

/**
 * A zone we can send through, as wireguard-go's Linux bind accepts it: an
 * interface index (any 32-bit number), or the name of an interface that
 * exists (1 to 15 bytes, no '/', ':' or white space). wireguard-go looks
 * the name up when it parses the line, so a typo is EINVAL at once rather
 * than a peer that silently cannot be reached.
 */
function validZone(zone: string, exists: (name: string) => boolean): boolean {
  if (/^[0-9]+$/.test(zone)) return parseDecimal(zone, 0xffffffff) !== undefined;
  if (!/^[\x21-\x7e]{1,15}$/.test(zone) || /[/:]/.test(zone) || zone === '.' || zone === '..') return false;
  return exists(zone);
}

/**
 * An endpoint as wireguard-go's bind reads it (netip.ParseAddrPort): an IP
 * literal, IPv6 in brackets with an optional `%zone`, any port 0-65535.
 * The host comes back in canonical form (`[FD00::A]:9` is fd00::a, port 9),
 * a zone kept as typed (`fe80::1%eth0`).
 */
export function parseUapiEndpoint(value: string, zoneExists: (name: string) => boolean = interfaceExists): UapiEndpoint {
  let ap;
  try {
    ap = parseAddrPort(value);
  } catch (err) {
    throw invalid(`endpoint: ${err instanceof NetipSyntaxError ? err.message : 'not an IP address and port'}`);
  }
  if (ap.addr.zone !== '' && !validZone(ap.addr.zone, zoneExists))
    throw invalid('endpoint: the zone is neither an interface of this host nor an interface index');
  return { host: formatAddr(ap.addr), port: ap.port };
}

/**
 * "10.0.0.1/24" as netip.ParsePrefix reads it, to canonical CIDR text with
 * the host bits cleared ("10.0.0.0/24"), as wireguard-go's table stores it.
 */
export function parseUapiAllowedIp(value: string): string {
  let prefix;
  try {
    prefix = parsePrefix(value);
  } catch (err) {
    throw invalid(`allowed_ip: ${err instanceof NetipSyntaxError ? err.message : 'not a CIDR prefix'}`);
  }
  const bytes = prefix.addr.bytes;
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix.bits - i * 8));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  // IPv4 (most lines of a large request) directly; the same text formatCidr makes.
  if (prefix.addr.family === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}/${prefix.bits}`;
  return formatCidr({ family: 6, bytes, bits: prefix.bits });
}

/**
 * The lines of a `set=1` request, without the `set=1` line and without the
 * blank line that ends it, as a request to apply — or the UapiError to
 * answer with. Nothing is applied on error: the request is all or nothing
 * (wireguard-go applies line by line and leaves a prefix applied).
 */
export function parseSet(lines: readonly string[], opts: SetParserOptions = {}): UapiSetRequest | UapiError {
  const parser = new SetRequestParser(opts);
  for (const line of lines) {
    if (!parser.feed(line)) break;
  }
  return parser.finish();
}

/** Zeroes every key buffer in a parsed request (once it is applied or refused). */
export function wipeSetRequest(req: UapiSetRequest): void {
  for (const op of req.device) {
    if (op.kind === 'private-key' && op.key !== null) op.key.fill(0);
  }
  for (const section of req.peers) {
    for (const op of section.ops) {
      if (op.kind === 'preshared-key' && op.key !== null) op.key.fill(0);
    }
  }
}

/**
 * parseSet one line at a time, so that the control socket parses a large
 * request as it arrives instead of in one long synchronous run at its end.
 * Each line costs time proportional to its length: the whole parse is
 * linear in the request.
 *
 * Every line becomes one operation, in request order, because wireguard-go
 * applies them one by one and their order matters (docs/apply.md); what a
 * line means at its point of the request (a dummy peer, a prefix moved from
 * another peer) is for the merge to decide. After the first error the
 * remaining lines are ignored and the key buffers parsed so far are zeroed.
 */
export interface SetParserOptions {
  /** Whether an endpoint's `%zone` names an interface; default: one of this namespace's (interfaceExists). */
  zoneExists?: (name: string) => boolean;
}

export class SetRequestParser {
  private readonly req: UapiSetRequest = { device: [], peers: [] };
  private readonly zoneExists: (name: string) => boolean;

  constructor(opts: SetParserOptions = {}) {
    this.zoneExists = opts.zoneExists ?? interfaceExists;
  }

  private section: UapiPeerSection | undefined;
  private lineNo = 0;
  private error: UapiError | undefined;

  /** Takes the next line; false once the request is known to be invalid. */
  feed(line: string): boolean {
    if (this.error) return false;
    this.lineNo++;
    try {
      this.line(line);
      return true;
    } catch (err) {
      if (!(err instanceof UapiError)) throw err;
      this.error = err;
      this.discard();
      return false;
    }
  }

  finish(): UapiSetRequest | UapiError {
    return this.error ?? this.req;
  }

  /** The request will not be applied (a client that went away): zero its keys now. */
  discard(): void {
    wipeSetRequest(this.req);
  }

  private line(line: string): void {
    const eq = line.indexOf('=');
    if (eq < 0) throw new UapiError(UAPI_EPROTO, `line ${this.lineNo}: no "=" in line`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'public_key') {
      this.section = { publicKey: parseKey(key, value), ops: [] };
      this.req.peers.push(this.section);
      return;
    }
    const section = this.section;
    if (section === undefined) {
      this.req.device.push(this.deviceOp(key, value));
      return;
    }
    const op = this.peerOp(key, value);
    if (op !== undefined) section.ops.push(op);
  }

  private deviceOp(key: string, value: string): UapiDeviceOp {
    switch (key) {
      case 'private_key': {
        const k = parseKey(key, value);
        // All zeros means "clear" in wireguard-go (FromMaybeZeroHex); the apply side decides.
        return { kind: 'private-key', key: isZeroKey(k) ? null : clamp(k) };
      }
      case 'listen_port':
        return { kind: 'listen-port', port: parseUint(key, value, 0xffff) };
      case 'fwmark':
        return { kind: 'fwmark', mark: parseUint(key, value, 0xffffffff) };
      case 'replace_peers':
        parseTrue(key, value);
        return { kind: 'replace-peers' };
      default:
        throw invalid(`line ${this.lineNo}: unknown interface key ${printable(key)}`);
    }
  }

  /** undefined for a line that is checked but means nothing (protocol_version=1). */
  private peerOp(key: string, value: string): UapiPeerOp | undefined {
    switch (key) {
      case 'remove':
        parseTrue(key, value);
        return { kind: 'remove' };
      case 'update_only':
        parseTrue(key, value);
        return { kind: 'update-only' };
      case 'preshared_key': {
        const k = parseKey(key, value);
        return { kind: 'preshared-key', key: isZeroKey(k) ? null : k };
      }
      case 'endpoint':
        return { kind: 'endpoint', endpoint: parseUapiEndpoint(value, this.zoneExists) };
      case 'persistent_keepalive_interval':
        return { kind: 'persistent-keepalive', seconds: parseUint(key, value, 0xffff) };
      case 'replace_allowed_ips':
        parseTrue(key, value);
        return { kind: 'replace-allowed-ips' };
      case 'allowed_ip':
        return { kind: 'allowed-ip', cidr: parseUapiAllowedIp(value) };
      case 'protocol_version':
        if (value !== '1') throw invalid('protocol_version: only 1 is supported');
        return undefined;
      default:
        throw invalid(`line ${this.lineNo}: unknown peer key ${printable(key)}`);
    }
  }
}

/**
 * Line keys go into error messages (logs). Real ones are lower-case words
 * with underscores; anything else is described, never echoed: it could be
 * a key pasted into the wrong place, or a terminal escape sequence.
 */
function printable(text: string): string {
  return /^[a-z_]{1,32}$/.test(text) ? `"${text}"` : `of ${text.length} characters (not shown)`;
}
