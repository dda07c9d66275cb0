/**
 * The text of the cross-platform userspace API (wireguard.com/xplatform),
 * as pure functions: a get response from a state snapshot, a set request
 * from its key=value lines. Field order, which fields appear when, the
 * errno codes and what counts as invalid follow wireguard-go, because the
 * `wg` tool is written against it.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { formatCidr, parseCidr } from '../peers/cidr.js';
import { formatEndpoint } from '../transport/endpoint.js';
import {
  UAPI_EINVAL,
  UAPI_EPROTO,
  UapiError,
  type UapiInterfaceState,
  type UapiPeerChange,
  type UapiSetRequest,
} from './uapi-types.js';

const KEY_LEN = 32;
const HEX_KEY = /^[0-9a-fA-F]{64}$/;
const DECIMAL = /^[0-9]{1,20}$/;

export function keyToHex(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex');
}

/** 64 hex digits to 32 bytes, or undefined. */
export function keyFromHex(text: string): Uint8Array | undefined {
  if (!HEX_KEY.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, 'hex'));
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
    if (peer.endpoint !== undefined) {
      lines.push(`endpoint=${formatEndpoint(peer.endpoint)}`);
    }
    const wallMs = Math.max(0, peer.lastHandshakeWallMs);
    const sec = Math.floor(wallMs / 1000);
    const nsec = Math.min(999_999_999, Math.round((wallMs - sec * 1000) * 1e6));
    lines.push(`last_handshake_time_sec=${sec}`);
    lines.push(`last_handshake_time_nsec=${nsec}`);
    lines.push(`tx_bytes=${Math.trunc(peer.txBytes)}`);
    lines.push(`rx_bytes=${Math.trunc(peer.rxBytes)}`);
    lines.push(`persistent_keepalive_interval=${peer.persistentKeepalive}`);
    for (const cidr of peer.allowedIPs) lines.push(`allowed_ip=${cidr}`);
  }
  lines.push('errno=0', '', '');
  return lines.join('\n');
}

/** The reply to a set, or to a failed get. */
export function serializeErrno(errno: number): string {
  return `errno=${errno}\n\n`;
}

function invalid(message: string): UapiError {
  return new UapiError(UAPI_EINVAL, message);
}

function parseUint(key: string, value: string, max: number): number {
  if (!DECIMAL.test(value)) throw invalid(`${key}: not a decimal number`);
  const n = Number(value);
  if (n > max) throw invalid(`${key}: out of range (0 to ${max})`);
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

/** An IP literal endpoint, as wireguard-go's bind accepts: no hostnames, IPv6 in brackets, no zone. */
export function parseUapiEndpoint(value: string): { host: string; port: number } {
  let host: string;
  let portText: string;
  if (value.startsWith('[')) {
    const close = value.indexOf(']');
    if (close < 0 || value[close + 1] !== ':') throw invalid('endpoint: expected [IPv6]:port');
    host = value.slice(1, close);
    portText = value.slice(close + 2);
    if (!isIPv6(host) || host.includes('%')) throw invalid('endpoint: not an IPv6 address');
  } else {
    const colon = value.lastIndexOf(':');
    if (colon < 0) throw invalid('endpoint: no port');
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
    if (!isIPv4(host)) throw invalid('endpoint: not an IPv4 address (IPv6 goes in brackets)');
  }
  const port = parseUint('endpoint port', portText, 0xffff);
  if (port === 0) throw invalid('endpoint: port 0');
  return { host, port };
}

/** "10.0.0.1/32" to canonical CIDR text; the prefix length is required, as in wireguard-go. */
export function parseUapiAllowedIp(value: string): string {
  const slash = value.indexOf('/');
  if (slash < 0) throw invalid('allowed_ip: no prefix length');
  if (value.includes('%')) throw invalid('allowed_ip: zone index not allowed');
  try {
    return formatCidr(parseCidr(value));
  } catch (cause) {
    throw new UapiError(UAPI_EINVAL, 'allowed_ip: not a CIDR prefix', { cause });
  }
}

function newPeerChange(publicKey: Uint8Array): UapiPeerChange {
  return { publicKey, remove: false, updateOnly: false, replaceAllowedIPs: false, allowedIPs: [] };
}

/**
 * The lines of a `set=1` request, without the `set=1` line and without the
 * blank line that ends it, as a request to apply — or the UapiError to
 * answer with. Nothing is applied on error: the request is all or nothing
 * (wireguard-go applies line by line and leaves a prefix applied).
 */
export function parseSet(lines: readonly string[]): UapiSetRequest | UapiError {
  const parser = new SetRequestParser();
  for (const line of lines) {
    if (!parser.feed(line)) break;
  }
  return parser.finish();
}

/**
 * parseSet one line at a time, so that the control socket parses a large
 * request as it arrives instead of in one long synchronous run at its end.
 * After the first error the remaining lines are ignored.
 */
export class SetRequestParser {
  private readonly req: UapiSetRequest = { replacePeers: false, peers: [] };
  private peer: UapiPeerChange | undefined;
  // After remove=true the rest of the section is checked but has no effect.
  private removed = false;
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
      return false;
    }
  }

  finish(): UapiSetRequest | UapiError {
    return this.error ?? this.req;
  }

  private line(line: string): void {
    const req = this.req;
    const eq = line.indexOf('=');
    if (eq < 0) throw new UapiError(UAPI_EPROTO, `line ${this.lineNo}: no "=" in line`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'public_key') {
      this.peer = newPeerChange(parseKey(key, value));
      req.peers.push(this.peer);
      this.removed = false;
      return;
    }
    const peer = this.peer;
    if (peer === undefined) {
      switch (key) {
        case 'private_key': {
          const k = parseKey(key, value);
          req.privateKey = isZeroKey(k) ? null : clamp(k);
          return;
        }
        case 'listen_port':
          req.listenPort = parseUint(key, value, 0xffff);
          return;
        case 'fwmark':
          req.fwmark = parseUint(key, value, 0xffffffff);
          return;
        case 'replace_peers':
          parseTrue(key, value);
          req.replacePeers = true;
          return;
        default:
          throw invalid(`line ${this.lineNo}: unknown interface key "${printable(key)}"`);
      }
    }
    const removed = this.removed;
    switch (key) {
      case 'remove':
        parseTrue(key, value);
        peer.remove = true;
        this.removed = true;
        return;
      case 'update_only':
        parseTrue(key, value);
        if (!removed) peer.updateOnly = true;
        return;
      case 'preshared_key': {
        const k = parseKey(key, value);
        if (!removed) peer.presharedKey = isZeroKey(k) ? null : k;
        return;
      }
      case 'endpoint': {
        const ep = parseUapiEndpoint(value);
        if (!removed) peer.endpoint = ep;
        return;
      }
      case 'persistent_keepalive_interval': {
        const secs = parseUint(key, value, 0xffff);
        if (!removed) peer.persistentKeepalive = secs;
        return;
      }
      case 'replace_allowed_ips':
        parseTrue(key, value);
        if (!removed) {
          // Prefixes listed before the replace in the same section are dropped by it too.
          peer.replaceAllowedIPs = true;
          peer.allowedIPs.length = 0;
        }
        return;
      case 'allowed_ip': {
        const cidr = parseUapiAllowedIp(value);
        if (!removed) peer.allowedIPs.push(cidr);
        return;
      }
      case 'protocol_version':
        if (value !== '1') throw invalid('protocol_version: only 1 is supported');
        return;
      default:
        throw invalid(`line ${this.lineNo}: unknown peer key "${printable(key)}"`);
    }
  }
}

/** Keys go into error messages (logs): keep them short and free of control characters. */
function printable(text: string): string {
  const cut = text.length > 40 ? `${text.slice(0, 40)}...` : text;
  return cut.replace(/[^\x20-\x7e]/g, '?');
}
