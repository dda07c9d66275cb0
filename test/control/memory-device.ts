/**
 * A UapiDevice that keeps its state in memory and applies set requests line
 * by line as wireguard-go's device/uapi.go does: a test double for the
 * server tests, not a model of tunvpn's all-or-nothing apply (that is
 * src/control/uapi-apply.ts, tested against wireguard-go itself by the
 * differential test).
 */
import type { UapiDevice, UapiInterfaceState, UapiPeerState, UapiSetRequest } from '../../src/control/uapi-types.js';

function same(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a !== undefined && b !== undefined && Buffer.from(a).equals(Buffer.from(b));
}

export class MemoryDevice implements UapiDevice {
  state: UapiInterfaceState;
  /** The requests as received; their key buffers are zeroed by the server once answered. */
  applied: UapiSetRequest[] = [];
  /** When set, apply throws it (after recording the request). */
  failWith: Error | undefined;
  /** When set, apply waits this long first (a large change being applied). */
  delayMs = 0;

  /**
   * `publicKeyOf` (X25519 base-point multiplication) enables the rules that
   * need the interface's public key: a section for our own key is ignored,
   * and a new private key removes the peer that has its public key.
   */
  constructor(
    state: UapiInterfaceState = { listenPort: 0, fwmark: 0, peers: [] },
    private readonly publicKeyOf?: (privateKey: Uint8Array) => Uint8Array,
  ) {
    this.state = state;
  }

  snapshot(): UapiInterfaceState {
    return structuredClone(this.state);
  }

  async apply(req: UapiSetRequest): Promise<void> {
    this.applied.push(req);
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    if (this.failWith) throw this.failWith;
    const s = this.state;
    for (const op of req.device) {
      switch (op.kind) {
        case 'private-key':
          if (op.key === null) {
            delete s.privateKey;
          } else if (!same(op.key, s.privateKey)) {
            const pub = this.publicKeyOf?.(op.key);
            if (pub) s.peers = s.peers.filter((p) => !same(p.publicKey, pub));
            // A copy: the server zeroes the request's buffers once answered.
            s.privateKey = new Uint8Array(op.key);
          }
          break;
        case 'listen-port':
          s.listenPort = op.port;
          break;
        case 'fwmark':
          s.fwmark = op.mark;
          break;
        case 'replace-peers':
          s.peers = [];
          break;
      }
    }
    const ownerOf = new Map<string, UapiPeerState>();
    for (const p of s.peers) for (const c of p.allowedIPs) ownerOf.set(c, p);
    const removePeer = (peer: UapiPeerState) => {
      s.peers = s.peers.filter((p) => p !== peer);
      for (const c of peer.allowedIPs) ownerOf.delete(c);
    };
    for (const section of req.peers) {
      const own = s.privateKey !== undefined && same(this.publicKeyOf?.(s.privateKey), section.publicKey);
      let peer = own ? undefined : s.peers.find((p) => same(p.publicKey, section.publicKey));
      let created = false;
      if (!own && peer === undefined) {
        peer = { publicKey: new Uint8Array(section.publicKey), persistentKeepalive: 0, lastHandshakeWallMs: 0, rxBytes: 0, txBytes: 0, allowedIPs: [] };
        s.peers.push(peer);
        created = true;
      }
      for (const op of section.ops) {
        // undefined: a dummy (our own key, or after remove / update_only): lines are checked, not applied.
        if (peer === undefined) continue;
        const p: UapiPeerState = peer;
        switch (op.kind) {
          case 'update-only':
            if (created) {
              removePeer(p);
              peer = undefined;
            }
            break;
          case 'remove':
            removePeer(p);
            peer = undefined;
            break;
          case 'preshared-key':
            if (op.key === null) delete p.presharedKey;
            else p.presharedKey = new Uint8Array(op.key);
            break;
          case 'endpoint':
            p.endpoint = { address: op.endpoint.host, port: op.endpoint.port, family: op.endpoint.host.includes(':') ? 6 : 4 };
            break;
          case 'persistent-keepalive':
            p.persistentKeepalive = op.seconds;
            break;
          case 'replace-allowed-ips':
            for (const c of p.allowedIPs) ownerOf.delete(c);
            p.allowedIPs = [];
            break;
          case 'allowed-ip': {
            const before = ownerOf.get(op.cidr);
            if (before === p) break;
            if (before) before.allowedIPs = before.allowedIPs.filter((c) => c !== op.cidr);
            ownerOf.set(op.cidr, p);
            p.allowedIPs.push(op.cidr);
            break;
          }
        }
      }
    }
  }
}
