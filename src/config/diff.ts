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
  // Almost always the same list in the same order: no Set for that (10,000 of them per reload).
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  if (i === a.length) return true;
  const set = new Set(a);
  // As sets: [x, y, y] and [x, x, x] are not the same (the route index counts peers per prefix).
  return b.every((x) => set.has(x)) && new Set(b).size === set.size;
}

/** The fields that differ; undefined when none does (no array per unchanged peer). */
function peerFields(a: PeerConfig, b: PeerConfig): string[] | undefined {
  const nameDiffers = a.name !== b.name;
  const pskDiffers = !keysEqual(a.presharedKey, b.presharedKey);
  const endpointDiffers = a.endpoint?.host !== b.endpoint?.host || a.endpoint?.port !== b.endpoint?.port;
  // Order of allowed IPs does not change routing within one peer.
  const allowedDiffers = !sameSet(a.allowedIPs, b.allowedIPs);
  const keepaliveDiffers = a.persistentKeepalive !== b.persistentKeepalive;
  if (!nameDiffers && !pskDiffers && !endpointDiffers && !allowedDiffers && !keepaliveDiffers) return undefined;
  const fields: string[] = [];
  if (nameDiffers) fields.push('name');
  if (pskDiffers) fields.push('presharedKey');
  if (endpointDiffers) fields.push('endpoint');
  if (allowedDiffers) fields.push('allowedIPs');
  if (keepaliveDiffers) fields.push('persistentKeepalive');
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

/**
 * Peers per step (a power of two, less one, as a mask): 32 peers are a few
 * microseconds warm, a few tens cold, well inside a slice, and resuming the
 * generator and asking the caller's clock once per peer was most of a cold
 * diff (15 ms for 10,000 peers in a freshly reloaded daemon).
 */
const STEP_MASK = 31;

/**
 * The diff, yielding every 32 peers so a caller can slice the work.
 * Public keys are unique within a config. A peer is looked for first at
 * its own index in `before` (a reload of an edited file, or a `set`, keeps
 * the others where they were); only when that finds another key is an
 * index of `before` by key built, once. On a 10,000-peer reload that
 * changes one peer this is no Map, no Set and no array per peer.
 */
function* diffSteps(before: TunvpnConfig, after: TunvpnConfig, recreated: ReadonlySet<string>): Generator<void, ConfigDiff> {
  const diff: ConfigDiff = {
    added: [],
    removed: [],
    changed: [],
    unchanged: [],
    recreated: [],
    interfaceChanged: interfaceFields(before.interface, after.interface),
  };
  const was = before.peers;
  /** 1 for each peer of `before` that `after` keeps (not removed). */
  const kept = new Uint8Array(was.length);
  let byKey: Map<string, number> | undefined;
  const checkRecreated = recreated.size > 0;
  for (let i = 0; i < after.peers.length; i++) {
    if ((i & STEP_MASK) === 0) yield;
    const peer = after.peers[i];
    let j = i < was.length && was[i].publicKey === peer.publicKey ? i : -1;
    if (j < 0) {
      if (byKey === undefined) {
        const index = new Map<string, number>();
        for (let k = 0; k < was.length; k++) {
          index.set(was[k].publicKey, k);
          if ((k & STEP_MASK) === 0) yield;
        }
        byKey = index;
      }
      j = byKey.get(peer.publicKey) ?? -1;
    }
    if (j < 0 || (checkRecreated && recreated.has(peer.publicKey))) {
      diff.added.push(peer);
      if (j >= 0) diff.recreated.push(peer);
      continue;
    }
    kept[j] = 1;
    const prev = was[j];
    // The same object: an incremental load reused this peer's PeerConfig (parse.ts, parseConfigMemo).
    const fields = prev === peer ? undefined : peerFields(prev, peer);
    if (fields !== undefined) diff.changed.push({ before: prev, after: peer, fields });
    else diff.unchanged.push(peer);
  }
  for (let j = 0; j < was.length; j++) {
    if (kept[j] === 0) diff.removed.push(was[j]);
    if ((j & STEP_MASK) === 0) yield;
  }
  return diff;
}
