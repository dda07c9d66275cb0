/**
 * The reference oracle for uapi-apply-lazy.test.ts: mergeUapiRequest as it
 * was before the lazy merge (main at d299823, src/control/uapi-apply.ts),
 * copied unchanged but for its name and imports. It drafts every peer of
 * the current config, so it is simple and slow; the differential test
 * checks that the lazy merge gives the same result, the same `recreated`
 * set and the same errors. Not used by the daemon.
 */
import type { PeerConfig, TunvpnConfig } from '../../src/config/index.js';
import type { MergeContext, MergeResult } from '../../src/control/uapi-apply.js';
import type { Yielder } from '../../src/cooperative.js';
import { UAPI_EINVAL, UapiError, type UapiPeerOp, type UapiSetRequest } from '../../src/control/uapi-types.js';

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
  name?: string;
  publicKey: string;
  publicKeyBytes: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: { host: string; port: number };
  persistentKeepalive: number;
  /** Insertion-ordered: the order of the config, then of the request. */
  allowed: Set<string>;
}

class Draft {
  readonly peers = new Map<string, DraftPeer>();
  private readonly owners = new Map<string, DraftPeer>();
  /** Keys of `current`'s peers removed at some point of the request. */
  private readonly removedOriginals = new Set<string>();
  private readonly originals: ReadonlySet<string>;

  private constructor(originals: ReadonlySet<string>) {
    this.originals = originals;
  }

  /** A draft of `current`'s peers, built in slices (20,000 peers are tens of milliseconds). */
  static async of(current: readonly PeerConfig[], y: Pick<Yielder, 'due' | 'pause'> | undefined): Promise<Draft> {
    const originals = new Set<string>();
    const draft = new Draft(originals);
    for (const p of current) {
      if (y?.due()) await y.pause();
      const d: DraftPeer = {
        name: p.name,
        publicKey: p.publicKey,
        publicKeyBytes: p.publicKeyBytes,
        presharedKey: p.presharedKey === undefined ? undefined : Uint8Array.from(p.presharedKey),
        endpoint: p.endpoint === undefined ? undefined : { ...p.endpoint },
        persistentKeepalive: p.persistentKeepalive,
        allowed: new Set(),
      };
      draft.peers.set(p.publicKey, d);
      originals.add(p.publicKey);
      // Per prefix: one peer can have 50,000.
      for (const cidr of p.allowedIPs) {
        draft.allow(d, cidr);
        if (y?.due()) await y.pause();
      }
    }
    return draft;
  }

  /** Cryptokey routing: a prefix has one owner; giving it to `peer` takes it from any other. */
  allow(peer: DraftPeer, cidr: string): void {
    const owner = this.owners.get(cidr);
    if (owner === peer) return;
    if (owner !== undefined) owner.allowed.delete(cidr);
    this.owners.set(cidr, peer);
    peer.allowed.add(cidr);
  }

  /** In slices when given a yielder: one peer can have 50,000 prefixes. */
  async clearAllowed(peer: DraftPeer, y: Pick<Yielder, 'due' | 'pause'> | undefined): Promise<void> {
    for (const cidr of peer.allowed) {
      if (this.owners.get(cidr) === peer) this.owners.delete(cidr);
      if (y?.due()) await y.pause();
    }
    peer.allowed.clear();
  }

  create(publicKey: Uint8Array, key: string): DraftPeer {
    const d: DraftPeer = { publicKey: key, publicKeyBytes: Uint8Array.from(publicKey), persistentKeepalive: 0, allowed: new Set() };
    this.peers.set(key, d);
    return d;
  }

  async remove(peer: DraftPeer, y: Pick<Yielder, 'due' | 'pause'> | undefined): Promise<void> {
    await this.clearAllowed(peer, y);
    peer.presharedKey?.fill(0);
    this.peers.delete(peer.publicKey);
    if (this.originals.has(peer.publicKey)) this.removedOriginals.add(peer.publicKey);
  }

  removeAll(): void {
    for (const p of this.peers.values()) {
      p.presharedKey?.fill(0);
      if (this.originals.has(p.publicKey)) this.removedOriginals.add(p.publicKey);
    }
    this.peers.clear();
    this.owners.clear();
  }

  recreated(): Set<string> {
    const out = new Set<string>();
    for (const key of this.removedOriginals) if (this.peers.has(key)) out.add(key);
    return out;
  }

  wipe(): void {
    for (const p of this.peers.values()) p.presharedKey?.fill(0);
  }
}

/**
 * The configuration after `req`. Does not modify `current` or `req` (the
 * caller wipes the request's keys). Throws UapiError(EINVAL) for what tunvpn
 * refuses: no private key, a private key whose public key is one of the
 * peers'. `fwmark=M` sets the mark, 0 clears it (wireguard-go); whether the
 * sockets can carry it is the plan's business (node:dgram cannot).
 */
export async function referenceMergeUapiRequest(current: TunvpnConfig, req: UapiSetRequest, ctx: MergeContext): Promise<MergeResult> {
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
          if (draft.peers.has(ownPublic)) clashes.add(ownPublic);
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

    const peers: PeerConfig[] = [];
    for (const d of draft.peers.values()) {
      const p: PeerConfig = {
        publicKey: d.publicKey,
        publicKeyBytes: d.publicKeyBytes,
        allowedIPs: [...d.allowed],
        persistentKeepalive: d.persistentKeepalive,
      };
      if (d.name !== undefined) p.name = d.name;
      if (d.presharedKey !== undefined) p.presharedKey = d.presharedKey;
      if (d.endpoint !== undefined) p.endpoint = d.endpoint;
      peers.push(p);
      if (y?.due()) await y.pause();
    }
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
async function applySection(
  draft: Draft,
  publicKey: Uint8Array,
  ops: readonly UapiPeerOp[],
  ownKey: string,
  y: Pick<Yielder, 'due' | 'pause'> | undefined,
): Promise<void> {
  const key = keyText(publicKey);
  if (key === ownKey) return;
  let peer = draft.peers.get(key);
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
        draft.allow(peer, op.cidr);
        break;
      default: {
        const never: never = op;
        throw new UapiError(UAPI_EINVAL, `unknown peer operation ${JSON.stringify(never)}`);
      }
    }
    if (y?.due()) await y.pause();
  }
}
