/**
 * How `tunvpn show` lays out an interface: the `wg show` layout (so people
 * and their habits carry over), and a JSON form that never carries a
 * private or preshared key.
 */
import { formatEndpoint } from '../transport/endpoint.js';
import type { UapiInterfaceState, UapiPeerState } from '../control/uapi-types.js';

const RESET = '\x1b[0m';
const BOLD = '\x1b[1m';
const GREEN = '\x1b[32m';
const YELLOW = '\x1b[33m';
const CYAN = '\x1b[36m';
const RED = '\x1b[31m';

interface Palette {
  reset: string;
  bold: string;
  green: string;
  yellow: string;
  cyan: string;
  red: string;
}

const COLOURS: Palette = { reset: RESET, bold: BOLD, green: GREEN, yellow: YELLOW, cyan: CYAN, red: RED };
const PLAIN: Palette = { reset: '', bold: '', green: '', yellow: '', cyan: '', red: '' };

const UNITS: readonly [number, string][] = [
  [365 * 24 * 3600, 'year'],
  [24 * 3600, 'day'],
  [3600, 'hour'],
  [60, 'minute'],
  [1, 'second'],
];

/** "1 minute, 3 seconds"; zero parts are left out, so 0 gives "". */
export function formatDuration(totalSeconds: number, colour = false): string {
  const p = colour ? COLOURS : PLAIN;
  let left = Math.max(0, Math.floor(totalSeconds));
  const parts: string[] = [];
  for (const [size, name] of UNITS) {
    const n = Math.floor(left / size);
    left %= size;
    if (n > 0) parts.push(`${n} ${p.cyan}${name}${n === 1 ? '' : 's'}${p.reset}`);
  }
  return parts.join(', ');
}

/** "Now", "1 minute, 3 seconds ago", or a warning when the handshake lies in the future. */
export function formatAgo(thenMs: number, nowMs: number, colour = false): string {
  const p = colour ? COLOURS : PLAIN;
  const then = Math.floor(thenMs / 1000);
  const now = Math.floor(nowMs / 1000);
  if (now === then) return 'Now';
  if (now < then) return `(${p.red}System clock wound backward; connection problems may ensue.${p.reset})`;
  return `${formatDuration(now - then, colour)} ago`;
}

/** "512 B", "1.23 MiB": binary units with two decimals, as wg prints them. */
export function formatBytes(bytes: number, colour = false): string {
  const p = colour ? COLOURS : PLAIN;
  const unit = (u: string) => `${p.cyan}${u}${p.reset}`;
  if (bytes < 1024) return `${bytes} ${unit('B')}`;
  const steps = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let i = 0;
  while (value >= 1024 && i < steps.length - 1) {
    value /= 1024;
    i++;
  }
  return `${value.toFixed(2)} ${unit(steps[i])}`;
}

function b64(key: Uint8Array): string {
  return Buffer.from(key).toString('base64');
}

/** Most recent handshake first, peers that never shook hands last (the order wg shows). */
export function sortPeers(peers: readonly UapiPeerState[]): UapiPeerState[] {
  return [...peers].sort((a, b) => {
    if (a.lastHandshakeWallMs === 0 && b.lastHandshakeWallMs !== 0) return 1;
    if (b.lastHandshakeWallMs === 0 && a.lastHandshakeWallMs !== 0) return -1;
    return b.lastHandshakeWallMs - a.lastHandshakeWallMs;
  });
}

export interface RenderOptions {
  colour: boolean;
  nowMs: number;
  /** The interface's public key, derived from its private key by the caller. */
  publicKey?: Uint8Array;
}

/** The `wg show IFACE` text for one interface. */
export function renderInterface(name: string, state: UapiInterfaceState, opts: RenderOptions): string {
  const p = opts.colour ? COLOURS : PLAIN;
  const label = (text: string) => `  ${p.bold}${text}${p.reset}: `;
  const out: string[] = [];
  out.push(`${p.green}${p.bold}interface${p.reset}: ${p.green}${name}${p.reset}\n`);
  if (opts.publicKey) out.push(`${label('public key')}${b64(opts.publicKey)}\n`);
  if (state.privateKey) out.push(`${label('private key')}(hidden)\n`);
  if (state.listenPort) out.push(`${label('listening port')}${state.listenPort}\n`);
  if (state.fwmark) out.push(`${label('fwmark')}0x${state.fwmark.toString(16)}\n`);
  const peers = sortPeers(state.peers);
  for (const peer of peers) {
    out.push('\n');
    out.push(`${p.yellow}${p.bold}peer${p.reset}: ${p.yellow}${b64(peer.publicKey)}${p.reset}\n`);
    if (peer.presharedKey) out.push(`${label('preshared key')}(hidden)\n`);
    if (peer.endpoint) out.push(`${label('endpoint')}${formatEndpoint(peer.endpoint)}\n`);
    const ips = peer.allowedIPs.map((cidr) => cidr.replace('/', `${p.cyan}/${p.reset}`));
    out.push(`${label('allowed ips')}${ips.length ? ips.join(', ') : '(none)'}\n`);
    if (peer.lastHandshakeWallMs > 0) out.push(`${label('latest handshake')}${formatAgo(peer.lastHandshakeWallMs, opts.nowMs, opts.colour)}\n`);
    if (peer.rxBytes || peer.txBytes) {
      out.push(`${label('transfer')}${formatBytes(peer.rxBytes, opts.colour)} received, ${formatBytes(peer.txBytes, opts.colour)} sent\n`);
    }
    if (peer.persistentKeepalive) out.push(`${label('persistent keepalive')}every ${formatDuration(peer.persistentKeepalive, opts.colour)}\n`);
  }
  return out.join('');
}

export interface ShowJsonPeer {
  publicKey: string;
  hasPresharedKey: boolean;
  endpoint: string | null;
  allowedIPs: string[];
  /** ISO 8601, or null when there has been none. */
  latestHandshake: string | null;
  /** Whole seconds since then, or null. */
  latestHandshakeAgeSeconds: number | null;
  rxBytes: number;
  txBytes: number;
  /** Seconds; 0 = off. */
  persistentKeepalive: number;
}

export interface ShowJsonInterface {
  publicKey: string | null;
  listenPort: number;
  fwmark: number;
  peers: ShowJsonPeer[];
}

/** The JSON form: public keys in base64; no private or preshared key, ever. */
export function toShowJson(state: UapiInterfaceState, publicKey: Uint8Array | undefined, nowMs: number): ShowJsonInterface {
  return {
    publicKey: publicKey ? b64(publicKey) : null,
    listenPort: state.listenPort,
    fwmark: state.fwmark,
    peers: sortPeers(state.peers).map((peer) => ({
      publicKey: b64(peer.publicKey),
      hasPresharedKey: peer.presharedKey !== undefined,
      endpoint: peer.endpoint ? formatEndpoint(peer.endpoint) : null,
      allowedIPs: [...peer.allowedIPs],
      latestHandshake: peer.lastHandshakeWallMs > 0 ? new Date(peer.lastHandshakeWallMs).toISOString() : null,
      latestHandshakeAgeSeconds: peer.lastHandshakeWallMs > 0 ? Math.max(0, Math.floor((nowMs - peer.lastHandshakeWallMs) / 1000)) : null,
      rxBytes: peer.rxBytes,
      txBytes: peer.txBytes,
      persistentKeepalive: peer.persistentKeepalive,
    })),
  };
}
