/**
 * What one successful load leaves for the next load of the same file, so
 * that a reload which changed a few peers checks only those
 * (docs/performance.md, "The reload of one prefix: an incremental load";
 * the rules are in parse.ts, parseConfigMemo). The caller owns it (the
 * daemon keeps it beside its running config); nothing here is global.
 */
import type { PeerConfig } from './types.js';
import { isPlainObject, type Plain } from './validate.js';

/**
 * Largest memo kept, in entries of the cross-peer maps (a name, a public
 * key or an allowed IP each): about 200 bytes each retained. 10,000 hub
 * peers with two allowed IPs each are 40,000 entries; one peer with
 * 100,000 allowed IPs is 100,002. A config above this reloads in full.
 */
export const MAX_MEMO_ENTRIES = 1 << 18;

export class ConfigMemo {
  /**
   * Set once an incremental load started to move this memo's maps into
   * its own: a consumed memo only ever gives a full load.
   */
  consumed = false;

  /** @internal Made by parse.ts. */
  constructor(
    /** The config file (ParseOptions.path) and its directory: another file is a full load. */
    readonly path: string | undefined,
    readonly baseDir: string,
    /**
     * The raw root object as parsed from JSON, without key text (memoRoot):
     * its `interface` has no inline `privateKey`, its `peers` is `rawPeers`.
     */
    readonly root: Plain,
    /** The raw peers by index; null for one that is not reusable (memoPeers). */
    readonly rawPeers: readonly unknown[],
    /** The PeerConfig each raw peer gave, by index. */
    readonly peers: readonly PeerConfig[],
    /** 1 where that PeerConfig may be reused as is for a deep-equal raw peer (nothing of it comes from outside its own text). */
    readonly reusable: Uint8Array,
    /** The cross-peer maps of that load: name, public key and allowed-IP prefix to the index of the peer that has it. */
    readonly names: Map<string, number>,
    readonly publicKeys: Map<string, number>,
    readonly prefixOwner: Map<string, number>,
  ) {}
}

/**
 * A memo lives as long as the daemon, and a JavaScript string cannot be
 * wiped: so the raw values it keeps hold no key text. The interface is
 * kept without an inline `privateKey` (every load resolves the key again,
 * so the comparison need not see it: compare `withoutKeyText` of the new
 * interface), and a peer that is not reusable (it names a preshared key,
 * inline or by file) is kept as null (every load checks it again).
 */
export function withoutKeyText(iface: unknown): unknown {
  if (!isPlainObject(iface) || !Object.hasOwn(iface, 'privateKey')) return iface;
  // fromEntries defines properties (a parsed "__proto__" key stays an own key, as in the original).
  return Object.fromEntries(Object.entries(iface).filter(([key]) => key !== 'privateKey'));
}

/** The raw peers a memo keeps: the reusable ones as parsed, null for the others. */
export function memoPeers(rawPeers: readonly unknown[], reusable: Uint8Array): unknown[] {
  return rawPeers.map((p, i) => (reusable[i] === 1 ? p : null));
}

/** The root a memo keeps: `raw` with its interface withoutKeyText and its peers replaced by `peers` (memoPeers). */
export function memoRoot(raw: Plain, peers: unknown[]): Plain {
  const root: Plain = { ...raw };
  if (Object.hasOwn(raw, 'interface')) root.interface = withoutKeyText(raw.interface);
  if (Object.hasOwn(raw, 'peers')) root.peers = peers;
  return root;
}

/**
 * Deep equality of two values parsed from JSON (strings, numbers,
 * booleans, null, arrays, plain objects). Numbers by Object.is (-0 is not
 * 0: the parse copies numbers through). Object keys as sets: a peer's
 * checks and its PeerConfig do not depend on the order of its keys (only
 * the report of an unknown key does, and a peer with one is never reused).
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (typeof a === 'string') return a === b;
  if (a === b) return typeof a !== 'number' || Object.is(a, b);
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return typeof a === 'number' && Object.is(a, b);
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b) || !isPlainObject(a) || !isPlainObject(b)) return false;
  // Object.keys: own enumerable string keys, "__proto__" as parsed included; a little faster than for...in with hasOwn here.
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (let i = 0; i < ka.length; i++) {
    const key = ka[i];
    if (!Object.hasOwn(b, key) || !jsonEqual(a[key], b[key])) return false;
  }
  return true;
}
