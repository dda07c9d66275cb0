/** A UapiDevice that keeps its state in memory and applies set requests as wireguard-go does. */
import { isIPv6 } from 'node:net';
import type { UapiDevice, UapiInterfaceState, UapiPeerState, UapiSetRequest } from '../../src/control/uapi-types.js';

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}

export class MemoryDevice implements UapiDevice {
  state: UapiInterfaceState;
  applied: UapiSetRequest[] = [];
  /** When set, apply throws it (after recording the request). */
  failWith: Error | undefined;

  constructor(state: UapiInterfaceState = { listenPort: 0, fwmark: 0, peers: [] }) {
    this.state = state;
  }

  snapshot(): UapiInterfaceState {
    return structuredClone(this.state);
  }

  async apply(req: UapiSetRequest): Promise<void> {
    this.applied.push(req);
    if (this.failWith) throw this.failWith;
    const s = this.state;
    if (req.privateKey === null) delete s.privateKey;
    else if (req.privateKey !== undefined) s.privateKey = req.privateKey;
    if (req.listenPort !== undefined) s.listenPort = req.listenPort;
    if (req.fwmark !== undefined) s.fwmark = req.fwmark;
    if (req.replacePeers) s.peers = [];
    for (const change of req.peers) {
      let peer = s.peers.find((p) => same(p.publicKey, change.publicKey));
      if (change.remove) {
        s.peers = s.peers.filter((p) => p !== peer);
        continue;
      }
      if (!peer) {
        if (change.updateOnly) continue;
        peer = { publicKey: change.publicKey, persistentKeepalive: 0, lastHandshakeWallMs: 0, rxBytes: 0, txBytes: 0, allowedIPs: [] };
        s.peers.push(peer);
      }
      const p: UapiPeerState = peer;
      if (change.presharedKey === null) delete p.presharedKey;
      else if (change.presharedKey !== undefined) p.presharedKey = change.presharedKey;
      if (change.endpoint) p.endpoint = { address: change.endpoint.host, port: change.endpoint.port, family: isIPv6(change.endpoint.host) ? 6 : 4 };
      if (change.persistentKeepalive !== undefined) p.persistentKeepalive = change.persistentKeepalive;
      if (change.replaceAllowedIPs) p.allowedIPs = [];
      for (const cidr of change.allowedIPs) {
        for (const other of s.peers) other.allowedIPs = other.allowedIPs.filter((c) => c !== cidr);
        p.allowedIPs.push(cidr);
      }
    }
  }
}
