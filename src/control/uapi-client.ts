/**
 * The client side of the control socket, for `tunvpn show`: one `get=1`
 * round trip, parsed back into the state the daemon reported, and the list
 * of interfaces that have a socket.
 */
import { readdirSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { TunvpnError } from '../errors.js';
import { keyFromHex, isZeroKey } from './uapi-protocol.js';
import { DEFAULT_UAPI_DIR, UAPI_EPROTO, UapiError, type UapiInterfaceState, type UapiPeerState } from './uapi-types.js';

/** No socket for that interface, or nobody answering on it. */
export class UapiNoSuchInterfaceError extends TunvpnError {
  readonly ifname: string;

  constructor(ifname: string, path: string, why: string) {
    super('UAPI_NO_SUCH_INTERFACE', `interface ${ifname}: ${why} (${path}); is the daemon running?`);
    this.ifname = ifname;
  }
}

const MAX_RESPONSE_BYTES = 64 << 20;
const DEFAULT_TIMEOUT_MS = 5000;

/** Interfaces with a control socket in `dir`, sorted; an absent directory means none. */
export function listInterfaces(dir: string = DEFAULT_UAPI_DIR): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return [];
    throw err;
  }
  const out: string[] = [];
  for (const name of names) {
    if (!name.endsWith('.sock') || name.length <= '.sock'.length || name.startsWith('.')) continue;
    try {
      if (statSync(join(dir, name)).isSocket()) out.push(name.slice(0, -'.sock'.length));
    } catch {
      /* vanished meanwhile */
    }
  }
  return out.sort();
}

/**
 * Sends `request` (e.g. "get=1\n\n") and returns the reply up to and
 * including the blank line that ends it.
 */
export function uapiRequest(ifname: string, request: string, dir: string = DEFAULT_UAPI_DIR, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
  const path = join(dir, `${ifname}.sock`);
  if (ifname.includes('/') || ifname.length === 0) {
    return Promise.reject(new UapiNoSuchInterfaceError(ifname, path, 'not a valid interface name'));
  }
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let text = '';
    let done = false;
    const finish = (err: Error | undefined, value?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value ?? '');
    };
    const timer = setTimeout(() => finish(new UapiError(UAPI_EPROTO, `interface ${ifname}: no reply within ${timeoutMs} ms`)), timeoutMs);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (chunk: Buffer) => {
      // Only the new bytes (and the one before them) can complete the terminator.
      const scanFrom = Math.max(0, text.length - 1);
      text += chunk.toString('latin1');
      if (text.length > MAX_RESPONSE_BYTES) {
        finish(new UapiError(UAPI_EPROTO, `interface ${ifname}: reply too large`));
        return;
      }
      // Every reply ends with "errno=N\n\n"; the first blank line is its end.
      const end = text.indexOf('\n\n', scanFrom);
      if (end >= 0) finish(undefined, text.slice(0, end + 2));
    });
    sock.on('end', () => finish(new UapiError(UAPI_EPROTO, `interface ${ifname}: connection closed before a complete reply`)));
    sock.on('error', (err: Error) => {
      const code = (err as { code?: unknown }).code;
      if (code === 'ENOENT') finish(new UapiNoSuchInterfaceError(ifname, path, 'no control socket'));
      else if (code === 'ECONNREFUSED') finish(new UapiNoSuchInterfaceError(ifname, path, 'nobody listens on the control socket'));
      else finish(new UapiError(UAPI_EPROTO, `interface ${ifname}: ${err.message}`, { cause: err }));
    });
  });
}

function malformed(ifname: string, what: string): UapiError {
  return new UapiError(UAPI_EPROTO, `interface ${ifname}: malformed reply: ${what}`);
}

function num(ifname: string, key: string, value: string): number {
  if (!/^[0-9]{1,20}$/.test(value)) throw malformed(ifname, `${key} is not a number`);
  return Number(value);
}

function parseEndpoint(ifname: string, value: string): { address: string; port: number; family: 4 | 6 } {
  const m = /^\[([^\]]+)\]:([0-9]{1,5})$/.exec(value) ?? /^([^:[\]]+):([0-9]{1,5})$/.exec(value);
  if (!m) throw malformed(ifname, 'endpoint');
  return { address: m[1], port: Number(m[2]), family: value.startsWith('[') ? 6 : 4 };
}

/** Parses a get reply (as uapiRequest returns it) into the interface state; a non-zero errno throws. */
export function parseGetResponse(ifname: string, text: string): UapiInterfaceState {
  const state: UapiInterfaceState = { listenPort: 0, fwmark: 0, peers: [] };
  let peer: UapiPeerState | undefined;
  let errno: number | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw malformed(ifname, 'line without "="');
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'errno') {
      if (!/^-?[0-9]{1,10}$/.test(value)) throw malformed(ifname, 'errno');
      errno = Number(value);
      continue;
    }
    if (key === 'public_key') {
      const k = keyFromHex(value);
      if (!k) throw malformed(ifname, 'public_key');
      peer = { publicKey: k, persistentKeepalive: 0, lastHandshakeWallMs: 0, rxBytes: 0, txBytes: 0, allowedIPs: [] };
      state.peers.push(peer);
      continue;
    }
    if (peer === undefined) {
      if (key === 'private_key') {
        const k = keyFromHex(value);
        if (!k) throw malformed(ifname, 'private_key');
        state.privateKey = k;
      } else if (key === 'listen_port') state.listenPort = num(ifname, key, value);
      else if (key === 'fwmark') state.fwmark = num(ifname, key, value);
      // Unknown keys are skipped, as wg does: implementations may add their own.
      continue;
    }
    switch (key) {
      case 'preshared_key': {
        const k = keyFromHex(value);
        if (!k) throw malformed(ifname, 'preshared_key');
        if (!isZeroKey(k)) peer.presharedKey = k;
        break;
      }
      case 'endpoint':
        peer.endpoint = parseEndpoint(ifname, value);
        break;
      case 'last_handshake_time_sec':
        peer.lastHandshakeWallMs += num(ifname, key, value) * 1000;
        break;
      case 'last_handshake_time_nsec':
        peer.lastHandshakeWallMs += Math.floor(num(ifname, key, value) / 1e6);
        break;
      case 'rx_bytes':
        peer.rxBytes = num(ifname, key, value);
        break;
      case 'tx_bytes':
        peer.txBytes = num(ifname, key, value);
        break;
      case 'persistent_keepalive_interval':
        peer.persistentKeepalive = num(ifname, key, value);
        break;
      case 'allowed_ip':
        peer.allowedIPs.push(value);
        break;
      default:
        break;
    }
  }
  if (errno === undefined) throw malformed(ifname, 'no errno line');
  if (errno !== 0) throw new UapiError(errno, `interface ${ifname}: the daemon answered errno=${errno}`);
  return state;
}

/** The state of a running interface, through its control socket. */
export async function uapiGet(ifname: string, dir: string = DEFAULT_UAPI_DIR): Promise<UapiInterfaceState> {
  return parseGetResponse(ifname, await uapiRequest(ifname, 'get=1\n\n', dir));
}
