import { TunvpnError } from '../errors.js';
import { AllowedIps } from './allowed-ips.js';
import { formatCidr, parseCidr, type Cidr } from './cidr.js';

export class PeerTableError extends TunvpnError {}

// Where the addresses are in an IP header (RFC 791, RFC 8200).
const IPV4_HEADER_MIN = 20;
const IPV6_HEADER = 40;
const IPV4_SOURCE = 12;
const IPV4_DESTINATION = 16;
const IPV6_SOURCE = 8;
const IPV6_DESTINATION = 24;

/** A base64 X25519 public key: 32 bytes, so 43 significant characters and one "=". */
const PUBLIC_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/**
 * The trie stores this record rather than the caller's value, so ownership
 * is per peer even if two peers were (wrongly) given the same value object.
 */
interface PeerEntry<T> {
  readonly publicKey: string;
  readonly value: T;
}

/**
 * The daemon's peers, keyed by base64 public key, with their allowed IPs
 * in a cryptokey-routing trie. `T` is whatever the daemon keeps per peer.
 * Packet lookups never throw and never allocate.
 */
export class PeerTable<T> {
  private readonly byKey = new Map<string, PeerEntry<T>>();
  private readonly routes = new AllowedIps<PeerEntry<T>>();

  get size(): number {
    return this.byKey.size;
  }

  /** Number of allowed-IP prefixes across all peers. */
  get prefixCount(): number {
    return this.routes.size;
  }

  /**
   * Adds a peer. A prefix another peer owns moves to this one, as in
   * WireGuard. Every CIDR is validated before anything changes.
   */
  add(publicKey: string, value: T, allowedIPs: readonly string[] = []): void {
    checkKey(publicKey);
    if (this.byKey.has(publicKey)) {
      throw new PeerTableError('PEER_EXISTS', `peer ${publicKey} is already in the table`);
    }
    const cidrs = allowedIPs.map((text) => parseCidr(text));
    const entry: PeerEntry<T> = { publicKey, value };
    this.byKey.set(publicKey, entry);
    for (const cidr of cidrs) this.routes.insert(cidr, entry);
  }

  /** Removes a peer and all its allowed IPs; false when it was not there. */
  remove(publicKey: string): boolean {
    const entry = this.byKey.get(publicKey);
    if (entry === undefined) return false;
    this.routes.removeValue(entry);
    this.byKey.delete(publicKey);
    return true;
  }

  /**
   * Removes at most `max` of a peer's allowed IPs (the peer stays); returns
   * how many it still has. For removing a peer with very many in slices.
   */
  removeSomeAllowedIPs(publicKey: string, max: number): number {
    const entry = this.byKey.get(publicKey);
    return entry === undefined ? 0 : this.routes.removeSomeOf(entry, max);
  }

  get(publicKey: string): T | undefined {
    return this.byKey.get(publicKey)?.value;
  }

  has(publicKey: string): boolean {
    return this.byKey.has(publicKey);
  }

  /** Replaces a peer's allowed IPs (all validated before anything changes). */
  setAllowedIPs(publicKey: string, allowedIPs: readonly string[]): void {
    const entry = this.entry(publicKey);
    const cidrs = allowedIPs.map((text) => parseCidr(text));
    this.routes.removeValue(entry);
    for (const cidr of cidrs) this.routes.insert(cidr, entry);
  }

  addAllowedIP(publicKey: string, cidr: string): void {
    const entry = this.entry(publicKey);
    this.routes.insert(parseCidr(cidr), entry);
  }

  /** Removes one prefix if this peer owns it; returns whether it did. */
  removeAllowedIP(publicKey: string, cidr: string): boolean {
    const entry = this.entry(publicKey);
    return this.routes.remove(parseCidr(cidr), entry);
  }

  /** The peer's prefixes in canonical text, IPv4 first, in address order. */
  allowedIPsOf(publicKey: string): string[] {
    return this.allowedCidrsOf(publicKey).map(formatCidr);
  }

  allowedCidrsOf(publicKey: string): Cidr[] {
    const entry = this.byKey.get(publicKey);
    return entry === undefined ? [] : this.routes.prefixesOf(entry);
  }

  /**
   * Outbound routing: the peer whose allowed IPs hold the packet's
   * destination; undefined when none does or the packet is not a
   * well-formed-enough IPv4/IPv6 header within `length` bytes.
   */
  lookupDestination(packet: Uint8Array, length: number): T | undefined {
    const len = Math.min(length, packet.length);
    if (len < IPV4_HEADER_MIN) return undefined;
    const version = packet[0] >> 4;
    let entry: PeerEntry<T> | undefined;
    if (version === 4) {
      entry = this.routes.lookup4(packet, IPV4_DESTINATION);
    } else if (version === 6 && len >= IPV6_HEADER) {
      entry = this.routes.lookup6(packet, IPV6_DESTINATION);
    }
    return entry === undefined ? undefined : entry.value;
  }

  /**
   * Inbound filter: whether the packet's source address routes to `value`,
   * i.e. the peer that sent it is allowed to use that source.
   */
  isSourceAllowed(value: T, packet: Uint8Array, length: number): boolean {
    const len = Math.min(length, packet.length);
    if (len < IPV4_HEADER_MIN) return false;
    const version = packet[0] >> 4;
    let entry: PeerEntry<T> | undefined;
    if (version === 4) {
      entry = this.routes.lookup4(packet, IPV4_SOURCE);
    } else if (version === 6 && len >= IPV6_HEADER) {
      entry = this.routes.lookup6(packet, IPV6_SOURCE);
    }
    return entry !== undefined && entry.value === value;
  }

  /** The public key of the peer that owns `address`'s longest match (for status and tests). */
  ownerOf(address: string): string | undefined {
    const cidr = parseCidr(address);
    return this.routes.lookup(cidr.bytes, 0, cidr.family)?.publicKey;
  }

  /** A snapshot of the peers' values, in insertion order. */
  values(): T[] {
    const out: T[] = [];
    for (const entry of this.byKey.values()) out.push(entry.value);
    return out;
  }

  /** A snapshot of the public keys, in insertion order. */
  keys(): string[] {
    return [...this.byKey.keys()];
  }

  private entry(publicKey: string): PeerEntry<T> {
    const entry = this.byKey.get(publicKey);
    if (entry === undefined) {
      throw new PeerTableError('PEER_NOT_FOUND', `peer ${publicKey} is not in the table`);
    }
    return entry;
  }
}

function checkKey(publicKey: string): void {
  if (!PUBLIC_KEY.test(publicKey)) {
    throw new PeerTableError('PEER_KEY_INVALID', 'public key is not 32 bytes in base64');
  }
}
