/**
 * What a reload or a control-socket `set` changes. Peers are matched by
 * public key: a peer whose key changed is a different peer (removed +
 * added), whatever its name. Linear in the two configurations.
 */
import { keysEqual } from './keys.js';
import type { InterfaceConfig, PeerConfig, TunvpnConfig } from './types.js';

export interface ConfigDiff {
  added: PeerConfig[];
  removed: PeerConfig[];
  changed: { before: PeerConfig; after: PeerConfig; fields: string[] }[];
  unchanged: PeerConfig[];
  /**
   * Peers removed and created again by one `set` (remove or replace_peers,
   * then the same key): listed in both `removed` and `added` too, because
   * the new peer starts afresh (no endpoint learnt, no sessions).
   */
  recreated: PeerConfig[];
  /** Names of InterfaceConfig fields that differ, e.g. ["listenPort", "privateKey"]. */
  interfaceChanged: string[];
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((x) => set.has(x));
}

function peerFields(a: PeerConfig, b: PeerConfig): string[] {
  const fields: string[] = [];
  if (a.name !== b.name) fields.push('name');
  if (!keysEqual(a.presharedKey, b.presharedKey)) fields.push('presharedKey');
  if (a.endpoint?.host !== b.endpoint?.host || a.endpoint?.port !== b.endpoint?.port) fields.push('endpoint');
  // Order of allowed IPs does not change routing within one peer.
  if (!sameSet(a.allowedIPs, b.allowedIPs)) fields.push('allowedIPs');
  if (a.persistentKeepalive !== b.persistentKeepalive) fields.push('persistentKeepalive');
  return fields;
}

function interfaceFields(a: InterfaceConfig, b: InterfaceConfig): string[] {
  const fields: string[] = [];
  if (a.name !== b.name) fields.push('name');
  if (!keysEqual(a.privateKey, b.privateKey)) fields.push('privateKey');
  if (a.listenPort !== b.listenPort) fields.push('listenPort');
  if (!sameSet(a.addresses, b.addresses)) fields.push('addresses');
  if (a.mtu !== b.mtu) fields.push('mtu');
  if (!sameHooks(a.hooks, b.hooks)) fields.push('hooks');
  if (a.fwmark !== b.fwmark) fields.push('fwmark');
  if (a.table !== b.table) fields.push('table');
  return fields;
}

/** Hooks are compared as written, order included (it is the order they run in). */
function sameHooks(a: InterfaceConfig['hooks'], b: InterfaceConfig['hooks']): boolean {
  const phases = ['preUp', 'postUp', 'preDown', 'postDown'] as const;
  return phases.every((p) => JSON.stringify(a?.[p] ?? []) === JSON.stringify(b?.[p] ?? []));
}

/** `recreated`: public keys to treat as removed + added even though both configs have them. */
export function diffConfig(before: TunvpnConfig, after: TunvpnConfig, recreated: ReadonlySet<string> = new Set()): ConfigDiff {
  const steps = diffSteps(before, after, recreated);
  for (let r = steps.next(); ; r = steps.next()) if (r.done === true) return r.value;
}

/**
 * diffConfig in slices: gives the event loop a turn whenever `y.due()`
 * says so (20,000 peers are tens of milliseconds of Map and Set work).
 */
export async function diffConfigSliced(
  before: TunvpnConfig,
  after: TunvpnConfig,
  recreated: ReadonlySet<string>,
  y: { due(): boolean; pause(): Promise<void> },
): Promise<ConfigDiff> {
  const steps = diffSteps(before, after, recreated);
  for (let r = steps.next(); ; r = steps.next()) {
    if (r.done === true) return r.value;
    if (y.due()) await y.pause();
  }
}

/** The diff, yielding after every peer so a caller can slice the work. */
function* diffSteps(before: TunvpnConfig, after: TunvpnConfig, recreated: ReadonlySet<string>): Generator<void, ConfigDiff> {
  const old = new Map<string, PeerConfig>();
  for (const p of before.peers) {
    old.set(p.publicKey, p);
    yield;
  }
  const diff: ConfigDiff = {
    added: [],
    removed: [],
    changed: [],
    unchanged: [],
    recreated: [],
    interfaceChanged: interfaceFields(before.interface, after.interface),
  };
  const seen = new Set<string>();
  for (const peer of after.peers) {
    yield;
    const prev = old.get(peer.publicKey);
    if (prev === undefined || recreated.has(peer.publicKey)) {
      diff.added.push(peer);
      if (prev !== undefined) diff.recreated.push(peer);
      continue;
    }
    seen.add(peer.publicKey);
    const fields = peerFields(prev, peer);
    if (fields.length) diff.changed.push({ before: prev, after: peer, fields });
    else diff.unchanged.push(peer);
  }
  for (const peer of before.peers) {
    if (!seen.has(peer.publicKey)) diff.removed.push(peer);
    yield;
  }
  return diff;
}
