/**
 * What a control-socket `set` means for the configuration: the running
 * (effective) configuration plus the request gives the next configuration,
 * which the daemon applies exactly as it applies a reload. So `wg set`
 * changes last until the next reload or restart, as with WireGuard: a reload
 * diffs the file against the effective configuration and undoes them.
 *
 * The request's operations are replayed in order against a draft, as
 * wireguard-go's device/uapi.go applies lines one by one (docs/apply.md
 * section 1). The draft is lazy: only a peer the request touches (a line of
 * its section, a prefix taken from it) gets a mutable copy, a DraftPeer;
 * every other peer of `current` goes into the result as the very same
 * PeerConfig object, so the daemon's diff skips it without comparing
 * fields. On a 10,000-peer hub a `wg set` that moves one /24 built 10,000
 * DraftPeers, Sets and PeerConfigs before (about 40 ms of CPU and GC);
 * now it builds one. What stays linear in the configuration is one pass of
 * Map work over its prefixes (who owns what, and which peers the merge
 * must normalise) and the output array.
 */
import type { PeerConfig, TunvpnConfig } from '../config/index.js';
import type { Yielder } from '../cooperative.js';
import { UAPI_EINVAL, UapiError, type UapiPeerOp, type UapiSetRequest } from './uapi-types.js';

function keyText(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}

function sameKey(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** A peer being merged. Its secret buffers are its own (copied), so the caller can wipe either side. */
interface DraftPeer {
  /** Its index in `current`'s peers; -1 for a peer this request created. */
  origin: number;
  name?: string;
  publicKey: string;
  publicKeyBytes: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: { host: string; port: number };
  persistentKeepalive: number;
  /** Insertion-ordered: the order of the config, then of the request. */
  allowed: Set<string>;
}

export interface MergeContext {
  /** X25519 public key of a private key (the crypto backend's). */
  publicKeyOf(privateKey: Uint8Array): Uint8Array;
  /** Gives the event loop a turn on large requests; optional for pure callers. */
  yielder?: Pick<Yielder, 'due' | 'pause'>;
}

export interface MergeResult {
  /**
   * The next configuration. Its private key and every preshared key in it
   * are fresh copies owned by it, so wiping `current` (after a successful
   * apply) or the result (after a refused one) never reaches the other. A
   * peer of `current` that the request does not touch and that has no
   * preshared key is the same PeerConfig object in both (its public key
   * bytes, allowed-IP list and endpoint with it: none is secret, and a
   * PeerConfig is not written after it is built, config/types.ts); a peer
   * with a preshared key is always a new object with its own copy. Every
   * other peer is a new object too, sharing only its public key bytes.
   */
  config: TunvpnConfig;
  /**
   * Public keys of peers that were in `current`, were removed (remove,
   * replace_peers) and created again by the same request: wireguard-go
   * drops the old peer and makes a new one, so the diff must treat them as
   * removed + added (no old endpoint, no sessions).
   */
  recreated: Set<string>;
}

/** Zeroes every secret a configuration holds: the private key and the preshared keys. */
export function wipeConfigSecrets(config: TunvpnConfig): void {
  config.interface.privateKey.fill(0);
  for (const p of config.peers) p.presharedKey?.fill(0);
}

/** Zeroes the key buffers of a parsed request (once it is applied or refused). */
export function wipeRequestSecrets(req: UapiSetRequest): void {
  for (const op of req.device) if (op.kind === 'private-key') op.key?.fill(0);
  for (const section of req.peers) for (const op of section.ops) if (op.kind === 'preshared-key') op.key?.fill(0);
}

/** A peer of `current` the request has not touched: it goes into the result as it is. */
const UNTOUCHED = 0;
/** Touched: its DraftPeer is in `drafted`. */
const DRAFTED = 1;
/** Removed (remove, update_only does not apply to it, replace_peers); created again, it is a new DraftPeer. */
const REMOVED = 2;

/**
 * Sections whose peer is looked up by a scan of `current` before a Map of
 * its public keys is built: a `wg set` names one or a few peers, and a scan
 * of 10,000 keys is tens of microseconds where the Map is about a
 * millisecond; a `wg setconf` of thousands of peers gets the Map.
 */
const SCANS_BEFORE_INDEX = 8;

type Pause = Pick<Yielder, 'due' | 'pause'> | undefined;

/**
 * Items (peers, prefixes) per synchronous step, less one, as a mask: the
 * config-sized loops run in steps with one `due()` each. A `due()` per item
 * in an async loop cost two to three times the Map work it sliced (about
 * 150 ns a call: such a loop runs once per request and is never optimised).
 */
const STEP_MASK = 63;

/** One step of Draft.of's pass: up to STEP_MASK + 1 prefixes and peers from `at`, which it advances; notes the peers with a preshared key on the way. */
function indexStep(
  current: readonly PeerConfig[],
  at: { peer: number; prefix: number },
  lastOwner: Map<string, number>,
  normalised: number[],
  withKey: number[],
): void {
  let budget = STEP_MASK + 1;
  while (at.peer < current.length) {
    const p = current[at.peer];
    const list = p.allowedIPs;
    while (at.prefix < list.length) {
      if (budget-- === 0) return;
      const cidr = list[at.prefix++];
      const before = lastOwner.get(cidr);
      if (before !== undefined) normalised.push(before);
      lastOwner.set(cidr, at.peer);
    }
    // Here, once per peer (a step can end and resume inside its list): a
    // second entry would be a second copy of its key, never wiped.
    if (p.presharedKey !== undefined) withKey.push(at.peer);
    at.peer++;
    at.prefix = 0;
    if (budget-- === 0) return;
  }
}

/**
 * `current`'s peers and what the request did to them. The semantics are
 * those of drafting every peer of `current` in order and then replaying
 * the request (the merge before this one, kept as the tests' reference
 * oracle in test/control/uapi-apply-reference.ts): a prefix listed by two
 * peers of `current` belongs to the later one, a prefix listed twice by one
 * peer is listed once. A peer whose list that changes (`normalised`) is
 * drafted from the start, so an untouched peer's list is its own as it is.
 */
class Draft {
  private readonly current: readonly PeerConfig[];
  private readonly state: Uint8Array;
  private readonly drafted = new Map<number, DraftPeer>();
  /** Peers this request created, a removed peer of `current` created again among them, in creation order. */
  private readonly created = new Map<string, DraftPeer>();
  /** The owner of every prefix a DraftPeer holds. A prefix an untouched peer holds is not here: `lastOwner` has it. */
  private readonly owners = new Map<string, DraftPeer>();
  /** Prefix to the index of the last peer of `current` that lists it: its owner while that peer is untouched. */
  private readonly lastOwner: Map<string, number>;
  /** Indexes of `current`'s peers that have a preshared key: never shared with the result. */
  private readonly withKey: readonly number[];
  /** Peers of `current` in state REMOVED. */
  private removed = 0;
  private byKey: Map<string, number> | undefined;
  private scans = 0;

  private constructor(current: readonly PeerConfig[], lastOwner: Map<string, number>, withKey: readonly number[]) {
    this.current = current;
    this.state = new Uint8Array(current.length);
    this.lastOwner = lastOwner;
    this.withKey = withKey;
  }

  /** One pass over `current`'s prefixes (Map work only, in slices: one peer can have 50,000); drafts the peers whose lists the merge normalises. */
  static async of(current: readonly PeerConfig[], y: Pause): Promise<Draft> {
    const lastOwner = new Map<string, number>();
    /** Peers that lose a prefix to a later peer or list one twice (rare: the loader warns of both). */
    const normalised: number[] = [];
    const withKey: number[] = [];
    const at = { peer: 0, prefix: 0 };
    while (at.peer < current.length) {
      indexStep(current, at, lastOwner, normalised, withKey);
      if (y?.due()) await y.pause();
    }
    const draft = new Draft(current, lastOwner, withKey);
    for (const i of normalised) if (draft.state[i] === UNTOUCHED) await draft.draft(i, y);
    return draft;
  }

  /** Index of the peer of `current` with this public key, or -1. */
  private indexOf(key: string): number {
    if (this.byKey === undefined && this.scans++ >= SCANS_BEFORE_INDEX) {
      const index = new Map<string, number>();
      for (let i = 0; i < this.current.length; i++) index.set(this.current[i].publicKey, i);
      this.byKey = index;
    }
    if (this.byKey !== undefined) return this.byKey.get(key) ?? -1;
    for (let i = 0; i < this.current.length; i++) if (this.current[i].publicKey === key) return i;
    return -1;
  }

  /** Whether a peer with this key is in the draft (the request's own key clash check). */
  has(key: string): boolean {
    if (this.created.has(key)) return true;
    const i = this.indexOf(key);
    return i >= 0 && this.state[i] !== REMOVED;
  }

  /** The peer with this key, drafted if it was untouched; undefined if there is none. */
  async get(key: string, y: Pause): Promise<DraftPeer | undefined> {
    const made = this.created.get(key);
    if (made !== undefined) return made;
    const i = this.indexOf(key);
    if (i < 0) return undefined;
    if (this.state[i] === UNTOUCHED) return this.draft(i, y);
    if (this.state[i] === REMOVED) return undefined;
    return this.drafted.get(i);
  }

  /** A mutable copy of `current[i]`, holding the prefixes it holds untouched (its own, but those a later peer lists). */
  private async draft(i: number, y: Pause): Promise<DraftPeer> {
    const p = this.current[i];
    const d: DraftPeer = {
      origin: i,
      name: p.name,
      publicKey: p.publicKey,
      publicKeyBytes: p.publicKeyBytes,
      presharedKey: p.presharedKey === undefined ? undefined : Uint8Array.from(p.presharedKey),
      endpoint: p.endpoint === undefined ? undefined : { ...p.endpoint },
      persistentKeepalive: p.persistentKeepalive,
      allowed: new Set(),
    };
    this.state[i] = DRAFTED;
    this.drafted.set(i, d);
    const list = p.allowedIPs;
    for (let k = 0; k < list.length; k++) {
      const cidr = list[k];
      if (this.lastOwner.get(cidr) === i) {
        d.allowed.add(cidr);
        this.owners.set(cidr, d);
      }
      if ((k & STEP_MASK) === STEP_MASK && y?.due()) await y.pause();
    }
    return d;
  }

  /** Cryptokey routing: a prefix has one owner; giving it to `peer` takes it from any other (drafting an untouched owner first). */
  async allow(peer: DraftPeer, cidr: string, y: Pause): Promise<void> {
    let owner = this.owners.get(cidr);
    if (owner === undefined) {
      const i = this.lastOwner.get(cidr);
      // A drafted or removed peer of `current` that is not in `owners` has lost the prefix already.
      if (i !== undefined && this.state[i] === UNTOUCHED) owner = await this.draft(i, y);
    }
    if (owner === peer) return;
    if (owner !== undefined) owner.allowed.delete(cidr);
    this.owners.set(cidr, peer);
    peer.allowed.add(cidr);
  }

  /** In slices when given a yielder: one peer can have 50,000 prefixes. */
  async clearAllowed(peer: DraftPeer, y: Pause): Promise<void> {
    let k = 0;
    for (const cidr of peer.allowed) {
      if (this.owners.get(cidr) === peer) this.owners.delete(cidr);
      if ((++k & STEP_MASK) === 0 && y?.due()) await y.pause();
    }
    peer.allowed.clear();
  }

  create(publicKey: Uint8Array, key: string): DraftPeer {
    const d: DraftPeer = { origin: -1, publicKey: key, publicKeyBytes: Uint8Array.from(publicKey), persistentKeepalive: 0, allowed: new Set() };
    this.created.set(key, d);
    return d;
  }

  async remove(peer: DraftPeer, y: Pause): Promise<void> {
    await this.clearAllowed(peer, y);
    peer.presharedKey?.fill(0);
    if (peer.origin >= 0) {
      this.state[peer.origin] = REMOVED;
      this.removed++;
      this.drafted.delete(peer.origin);
    } else this.created.delete(peer.publicKey);
  }

  removeAll(): void {
    this.wipe();
    this.state.fill(REMOVED);
    this.removed = this.current.length;
    this.drafted.clear();
    this.created.clear();
    this.owners.clear();
  }

  /** Peers of `current` that were removed and are in the draft again: necessarily created again, so among `created`. */
  recreated(): Set<string> {
    const out = new Set<string>();
    for (const key of this.created.keys()) if (this.indexOf(key) >= 0) out.add(key);
    return out;
  }

  /** The result's peers: `current`'s in their order (untouched ones as they are, but copied if they have a preshared key), then the created ones. */
  async peers(y: Pause): Promise<PeerConfig[]> {
    let out: PeerConfig[];
    if (this.removed === 0) {
      // Every peer keeps its place (a `wg set` that removes nothing): a copy of the list, then the few that differ.
      out = this.current.slice();
      let k = 0;
      for (const i of this.withKey) {
        if (this.state[i] === UNTOUCHED) out[i] = ownCopy(this.current[i]);
        if ((++k & STEP_MASK) === 0 && y?.due()) await y.pause();
      }
      for (const [i, d] of this.drafted) {
        out[i] = peerOf(d);
        if ((++k & STEP_MASK) === 0 && y?.due()) await y.pause();
      }
    } else {
      out = [];
      for (let from = 0; from < this.current.length; from += STEP_MASK + 1) {
        this.outputStep(out, from, Math.min(from + STEP_MASK + 1, this.current.length));
        if (y?.due()) await y.pause();
      }
    }
    for (const d of this.created.values()) {
      out.push(peerOf(d));
      if (y?.due()) await y.pause();
    }
    return out;
  }

  private outputStep(out: PeerConfig[], from: number, to: number): void {
    for (let i = from; i < to; i++) {
      const state = this.state[i];
      if (state === UNTOUCHED) {
        const p = this.current[i];
        out.push(p.presharedKey === undefined ? p : ownCopy(p));
      } else if (state === DRAFTED) {
        const d = this.drafted.get(i);
        if (d !== undefined) out.push(peerOf(d));
      }
    }
  }

  wipe(): void {
    for (const p of this.drafted.values()) p.presharedKey?.fill(0);
    for (const p of this.created.values()) p.presharedKey?.fill(0);
  }
}

/** An untouched peer with a preshared key: shared, the daemon's wipe of one config's preshared keys would reach the other's. */
function ownCopy(p: PeerConfig): PeerConfig {
  return copyPeer(p, p.allowedIPs, p.presharedKey && Uint8Array.from(p.presharedKey), p.endpoint && { ...p.endpoint });
}

function peerOf(d: DraftPeer): PeerConfig {
  return copyPeer(d, d.allowed, d.presharedKey, d.endpoint);
}

/** A new PeerConfig; its optional fields are present only when they have a value (as the loader builds them). */
function copyPeer(
  p: Pick<PeerConfig, 'name' | 'publicKey' | 'publicKeyBytes' | 'persistentKeepalive'>,
  allowed: Iterable<string>,
  presharedKey: Uint8Array | undefined,
  endpoint: PeerConfig['endpoint'],
): PeerConfig {
  const out: PeerConfig = { publicKey: p.publicKey, publicKeyBytes: p.publicKeyBytes, allowedIPs: [...allowed], persistentKeepalive: p.persistentKeepalive };
  if (p.name !== undefined) out.name = p.name;
  if (presharedKey !== undefined) out.presharedKey = presharedKey;
  if (endpoint !== undefined) out.endpoint = endpoint;
  return out;
}

/**
 * The configuration after `req`. Does not modify `current` or `req` (the
 * caller wipes the request's keys). Throws UapiError(EINVAL) for what tunvpn
 * refuses: no private key, a private key whose public key is one of the
 * peers'. `fwmark=M` sets the mark, 0 clears it (wireguard-go); whether the
 * sockets can carry it is the plan's business (node:dgram cannot).
 */
export async function mergeUapiRequest(current: TunvpnConfig, req: UapiSetRequest, ctx: MergeContext): Promise<MergeResult> {
  const y = ctx.yielder;
  const draft = await Draft.of(current.peers, y);
  let privateKey = Uint8Array.from(current.interface.privateKey);
  try {
    let ownPublic = keyText(ctx.publicKeyOf(privateKey));
    let listenPort = current.interface.listenPort;
    let fwmark = current.interface.fwmark;

    // Public keys our new private key gave us while a peer had them. A
    // replace_peers later in the request removes that peer (wireguard-go
    // removes it at once), so only the clashes left at the end are refused.
    const clashes = new Set<string>();
    for (const op of req.device) {
      switch (op.kind) {
        case 'private-key': {
          if (op.key === null) {
            throw new UapiError(UAPI_EINVAL, 'private_key: tunvpn cannot run without a private key; set another one instead of clearing it');
          }
          // The same key is no change (wireguard-go's SetPrivateKey returns early).
          if (sameKey(op.key, privateKey)) break;
          privateKey.fill(0);
          privateKey = Uint8Array.from(op.key);
          ownPublic = keyText(ctx.publicKeyOf(privateKey));
          if (draft.has(ownPublic)) clashes.add(ownPublic);
          break;
        }
        case 'listen-port':
          listenPort = op.port;
          break;
        case 'fwmark':
          fwmark = op.mark;
          break;
        case 'replace-peers':
          draft.removeAll();
          clashes.clear();
          break;
        default: {
          const never: never = op;
          throw new UapiError(UAPI_EINVAL, `unknown device operation ${JSON.stringify(never)}`);
        }
      }
    }
    if (clashes.size > 0) {
      const [clash] = clashes;
      throw new UapiError(
        UAPI_EINVAL,
        `private_key: its public key ${clash} belongs to a peer; remove that peer first (tunvpn refuses what wireguard-go would silently drop)`,
      );
    }

    for (const section of req.peers) {
      if (y?.due()) await y.pause();
      await applySection(draft, section.publicKey, section.ops, ownPublic, y);
    }

    const peers = await draft.peers(y);
    const iface = { ...current.interface, addresses: [...current.interface.addresses], privateKey, listenPort, fwmark };
    return { config: { ...current, interface: iface, peers, warnings: [] }, recreated: draft.recreated() };
  } catch (err) {
    draft.wipe();
    privateKey.fill(0);
    throw err;
  }
}

/**
 * One `public_key=` section. A section for our own public key is a dummy:
 * every line is ignored. `remove`, and `update_only` on a peer this section
 * created, drop the peer and make the rest of the section a dummy. Lines
 * take effect in order: an `allowed_ip` before `remove` still took the
 * prefix from its previous owner.
 */
async function applySection(draft: Draft, publicKey: Uint8Array, ops: readonly UapiPeerOp[], ownKey: string, y: Pause): Promise<void> {
  const key = keyText(publicKey);
  if (key === ownKey) return;
  let peer = await draft.get(key, y);
  let created = false;
  if (peer === undefined) {
    peer = draft.create(publicKey, key);
    created = true;
  }
  for (const op of ops) {
    switch (op.kind) {
      case 'remove':
        await draft.remove(peer, y);
        return;
      case 'update-only':
        if (created) {
          await draft.remove(peer, y);
          return;
        }
        break;
      case 'preshared-key':
        peer.presharedKey?.fill(0);
        if (op.key === null) delete peer.presharedKey;
        else peer.presharedKey = Uint8Array.from(op.key);
        break;
      case 'endpoint':
        peer.endpoint = { host: op.endpoint.host, port: op.endpoint.port };
        break;
      case 'persistent-keepalive':
        peer.persistentKeepalive = op.seconds;
        break;
      case 'replace-allowed-ips':
        await draft.clearAllowed(peer, y);
        break;
      case 'allowed-ip':
        await draft.allow(peer, op.cidr, y);
        break;
      default: {
        const never: never = op;
        throw new UapiError(UAPI_EINVAL, `unknown peer operation ${JSON.stringify(never)}`);
      }
    }
    if (y?.due()) await y.pause();
  }
}
