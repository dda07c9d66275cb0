/**
 * A peer is one record (Peer) in one registry (PeerRegistry), as
 * boringtun's Device keeps one Peer per key with one update path:
 *
 *   Peer ──proto──▶ ProtocolPeer<Peer> ──owner──▶ the same Peer
 *
 * The registry is the only writer of the two indexes a peer lives in: the
 * protocol device (by public key: initiations name their sender by key)
 * and the peer table (allowed IPs: cryptokey routing). Every protocol
 * result names the ProtocolPeer, whose `owner` is the Peer: the packet
 * path never looks a peer up to get from one to the other. Counters are
 * one set, proto.stats (see PeerStats).
 *
 * Allowed IPs go in and out in slices with a Yielder: a peer can have
 * 50,000, and the packets of the others keep moving meanwhile.
 */
import type { PeerConfig } from '../config/index.js';
import { REMOVE_SLICE } from '../constants.js';
import type { Yielder } from '../cooperative.js';
import type { PeerStats, ProtocolPeer, WireGuardDevice } from '../protocol/device.js';
import { encodeEndpoint, type EncodedEndpoint } from '../transport/endpoint-codec.js';
import type { Endpoint } from '../transport/endpoint.js';
import { PeerTable } from './peer-table.js';

/** What the daemon keeps per peer: its config, its protocol state, its endpoint. */
export class Peer {
  config: PeerConfig;
  readonly proto: ProtocolPeer<Peer>;
  /** Where its datagrams go: the configured endpoint, then the source of its latest authenticated packet (roaming). */
  endpoint: Endpoint | undefined = undefined;
  /** `endpoint` encoded for the transport (endpoint-codec.ts): set together with it. */
  endpointKey: EncodedEndpoint | undefined = undefined;

  /** @internal Made by PeerRegistry.add: the protocol peer is created with this record as its owner. */
  constructor(device: WireGuardDevice<Peer>, config: PeerConfig, endpoint: Endpoint | undefined) {
    this.config = config;
    // Encoded before the protocol peer exists: a bad address throws with nothing half-made.
    const key = endpoint === undefined ? undefined : encodeEndpoint(endpoint.address, endpoint.port);
    this.proto = device.addPeer({ publicKey: config.publicKeyBytes, presharedKey: config.presharedKey, persistentKeepalive: config.persistentKeepalive }, this);
    this.endpoint = endpoint;
    this.endpointKey = key;
  }

  /** The peer's counters (bytes, packets, handshakes): the only ones. */
  get stats(): PeerStats {
    return this.proto.stats;
  }

  /** Sets the endpoint and its encoded form together (config, re-resolution). */
  setEndpoint(endpoint: Endpoint | undefined): void {
    const key = endpoint === undefined ? undefined : encodeEndpoint(endpoint.address, endpoint.port);
    this.endpoint = endpoint;
    this.endpointKey = key;
  }

  /** Roaming: the endpoint follows an authenticated packet's source, already encoded (and decoded) by the transport's codec. */
  roamTo(key: EncodedEndpoint, endpoint: Endpoint): void {
    this.endpointKey = key;
    this.endpoint = endpoint;
  }
}

export class PeerRegistry {
  readonly device: WireGuardDevice<Peer>;
  /** Allowed IPs; the pipeline routes by it (lookupDestination, isSourceAllowed). Written only here. */
  readonly table = new PeerTable<Peer>();

  constructor(device: WireGuardDevice<Peer>) {
    this.device = device;
  }

  get size(): number {
    return this.table.size;
  }

  get(publicKey: string): Peer | undefined {
    return this.table.get(publicKey);
  }

  /** A snapshot, in insertion order. */
  values(): Peer[] {
    return this.table.values();
  }

  /** The peer's prefixes in canonical text, IPv4 first, in address order. */
  allowedIPsOf(publicKey: string): string[] {
    return this.table.allowedIPsOf(publicKey);
  }

  /** A new peer: protocol peer and peer table as one. Allowed IPs go in slices. */
  async add(cfg: PeerConfig, endpoint: Endpoint | undefined, y: Yielder): Promise<Peer> {
    const peer = new Peer(this.device, cfg, endpoint);
    try {
      this.table.add(cfg.publicKey, peer);
    } catch (err) {
      this.device.removePeer(cfg.publicKeyBytes);
      throw err;
    }
    for (const cidr of cfg.allowedIPs) {
      this.table.addAllowedIP(cfg.publicKey, cidr);
      if (y.due()) await y.pause();
    }
    return peer;
  }

  /** Removes a peer; its allowed IPs leave the table in slices first. */
  async remove(publicKey: string, y: Yielder): Promise<void> {
    const peer = this.table.get(publicKey);
    if (peer === undefined) return;
    while (this.table.removeSomeAllowedIPs(publicKey, REMOVE_SLICE) > 0) await y.pause();
    this.table.remove(publicKey);
    this.device.removePeer(peer.proto.publicKey);
  }

  /** Applies a changed peer in place (`fields` as diffConfig names them): its session keeps running. */
  async update(after: PeerConfig, fields: readonly string[], endpoint: Endpoint | undefined, y: Yielder): Promise<void> {
    const peer = this.table.get(after.publicKey);
    if (peer === undefined) return;
    peer.config = after;
    if (fields.includes('presharedKey')) peer.proto.setPresharedKey(after.presharedKey);
    if (fields.includes('persistentKeepalive')) peer.proto.setPersistentKeepalive(after.persistentKeepalive);
    if (fields.includes('allowedIPs')) {
      // Only the difference, against what the table holds, in slices.
      const want = new Set(after.allowedIPs);
      for (const cidr of this.table.allowedIPsOf(after.publicKey)) {
        if (!want.has(cidr)) this.table.removeAllowedIP(after.publicKey, cidr);
        if (y.due()) await y.pause();
      }
      for (const cidr of after.allowedIPs) {
        this.table.addAllowedIP(after.publicKey, cidr);
        if (y.due()) await y.pause();
      }
    }
    if (fields.includes('endpoint') && endpoint) peer.setEndpoint(endpoint);
  }

  /**
   * A new private key for the device. A peer whose public key is the new
   * one's is removed by the device (as WireGuard does); it leaves the table
   * too, so the two never disagree (the daemon refuses such a change
   * before it gets here).
   */
  setPrivateKey(key: Uint8Array): void {
    this.device.setPrivateKey(key);
    const self = Buffer.from(this.device.publicKey).toString('base64');
    if (this.table.get(self) !== undefined) this.table.remove(self);
  }

  /** At shutdown: every protocol peer wiped (keys, sessions); the table goes with the daemon. */
  wipeAll(): void {
    for (const p of this.table.values()) this.device.removePeer(p.proto.publicKey);
  }
}
