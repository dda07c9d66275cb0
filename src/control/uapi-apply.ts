/**
 * What a control-socket `set` means for the configuration: the running
 * (effective) configuration plus the request gives the next configuration,
 * which the daemon applies exactly as it applies a reload. So `wg set`
 * changes last until the next reload or restart, as with WireGuard: a reload
 * diffs the file against the effective configuration and undoes them.
 */
import type { PeerConfig, TunvpnConfig } from '../config/index.js';
import { UAPI_EINVAL, UapiError, type UapiPeerChange, type UapiSetRequest } from './uapi-types.js';

function keyText(key: Uint8Array): string {
  return Buffer.from(key).toString('base64');
}

function sameKey(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0;
}

/**
 * The configuration after `req`. Does not modify `current`. Throws
 * UapiError(EINVAL) for what tunvpn cannot do (no private key, fwmark).
 */
export function mergeUapiRequest(current: TunvpnConfig, req: UapiSetRequest, ownPublicKey: Uint8Array): TunvpnConfig {
  const iface = { ...current.interface, addresses: [...current.interface.addresses] };
  if (req.privateKey === null) {
    throw new UapiError(UAPI_EINVAL, 'tunvpn cannot run without a private key; set another one instead of clearing it');
  }
  if (req.privateKey !== undefined) iface.privateKey = new Uint8Array(req.privateKey);
  if (req.listenPort !== undefined) iface.listenPort = req.listenPort;
  if (req.fwmark !== undefined && req.fwmark !== 0) {
    throw new UapiError(UAPI_EINVAL, 'tunvpn does not support fwmark');
  }

  // Peers by public key, in their configured order; copies, never the originals.
  const peers = new Map<string, PeerConfig>();
  if (!req.replacePeers) {
    for (const p of current.peers) peers.set(p.publicKey, { ...p, allowedIPs: [...p.allowedIPs] });
  }
  for (const change of req.peers) {
    // A peer with our own key makes no sense; wireguard-go ignores it too.
    if (sameKey(change.publicKey, ownPublicKey)) continue;
    applyPeerChange(peers, change);
  }
  return { ...current, interface: iface, peers: [...peers.values()], warnings: [] };
}

function applyPeerChange(peers: Map<string, PeerConfig>, change: UapiPeerChange): void {
  const key = keyText(change.publicKey);
  if (change.remove) {
    peers.delete(key);
    return;
  }
  let peer = peers.get(key);
  if (peer === undefined) {
    if (change.updateOnly) return;
    peer = { publicKey: key, publicKeyBytes: new Uint8Array(change.publicKey), allowedIPs: [], persistentKeepalive: 0 };
    peers.set(key, peer);
  }
  if (change.presharedKey === null) delete peer.presharedKey;
  else if (change.presharedKey !== undefined) peer.presharedKey = new Uint8Array(change.presharedKey);
  if (change.endpoint !== undefined) peer.endpoint = { ...change.endpoint };
  if (change.persistentKeepalive !== undefined) peer.persistentKeepalive = change.persistentKeepalive;
  if (change.replaceAllowedIPs) peer.allowedIPs = [];
  for (const cidr of change.allowedIPs) {
    // Cryptokey routing: a prefix belongs to one peer; giving it to this one takes it from any other.
    for (const other of peers.values()) {
      if (other !== peer) other.allowedIPs = other.allowedIPs.filter((c) => c !== cidr);
    }
    if (!peer.allowedIPs.includes(cidr)) peer.allowedIPs.push(cidr);
  }
}
