/**
 * From raw JSON to a TunvpnConfig: schema walk (validate.ts), then the
 * checks that span fields (key sources, uniqueness, MTU vs IPv6, allowed-IP
 * conflicts), then key files, then convict's own strict validation as a
 * backstop. Every issue is collected; one ConfigError reports them all.
 */
import convict from 'convict';
import { ConfigError, IssueList, WarningList, type ConfigIssue, type IssueSink } from './errors.js';
import { canonicalAddress, canonicalPrefix, isCanonicalV4Prefix, MTU_MIN_IPV6, parseEndpoint, quote } from './formats.js';
import { decodeKey, encodeKey } from './keys.js';
import { configSchema, peerSchema } from './schema.js';
import { derivePublicKey, KeyFileReader } from './secrets.js';
import type { CryptoBackendChoice, HooksConfig, PeerConfig, TunvpnConfig } from './types.js';
import { ConfigMemo, jsonEqual, MAX_MEMO_ENTRIES, memoPeers, memoRoot, withoutKeyText } from './memo.js';
import { checkSection, isPlainObject, type Plain } from './validate.js';

export interface ParseOptions {
  /** Directory that relative key-file paths are resolved against (the config file's). */
  baseDir: string;
  /** The config file, for messages and TunvpnConfig.path. */
  path?: string;
}

function section(v: unknown): Plain {
  return isPlainObject(v) ? v : {};
}

function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

/**
 * Exactly one (or, when optional, at most one) of an inline key and a key
 * file. `raw` is the section as written (presence), `checked` the walked one
 * (a field is a string there only when valid).
 */
async function resolveSecret(
  raw: Plain,
  checked: Plain,
  inlineKey: string,
  fileKey: string,
  path: string,
  required: boolean,
  baseDir: string,
  issues: IssueSink,
  keyFiles: KeyFileReader,
): Promise<Uint8Array | undefined> {
  const hasInline = present(raw[inlineKey]);
  const hasFile = present(raw[fileKey]);
  const where = path ? `${path}.` : '';
  if (hasInline && hasFile) {
    issues.push({ path, message: `give either ${inlineKey} or ${fileKey}, not both` });
    return undefined;
  }
  if (!hasInline && !hasFile) {
    if (required) issues.push({ path, message: `one of ${inlineKey} or ${fileKey} is required` });
    return undefined;
  }
  const inline = checked[inlineKey];
  if (typeof inline === 'string') return decodeKey(inline);
  const file = checked[fileKey];
  if (typeof file === 'string') return keyFiles.read(file, baseDir, `${where}${fileKey}`, issues);
  return undefined;
}

/** Valid entries of a raw list with their original indices (invalid ones are already reported). */
function validEntries<T>(list: unknown, convert: (text: string) => T): { index: number; value: T }[] {
  if (!Array.isArray(list)) return [];
  const out: { index: number; value: T }[] = [];
  list.forEach((item: unknown, index: number) => {
    if (typeof item !== 'string') return;
    try {
      out.push({ index, value: convert(item) });
    } catch {
      /* reported by the schema walk */
    }
  });
  return out;
}

/**
 * A peer's preshared key, set on `peer` when it resolves. A function of its
 * own so that the per-peer loop holds no closure (V8 would allocate a
 * context for every peer to keep `peer` for it).
 */
async function resolvePresharedKey(
  rawPeer: Plain,
  checkedPeer: Plain,
  path: string,
  peer: PeerConfig | undefined,
  baseDir: string,
  issues: IssueSink,
  keyFiles: KeyFileReader,
): Promise<void> {
  const psk = await resolveSecret(rawPeer, checkedPeer, 'presharedKey', 'presharedKeyFile', path, false, baseDir, issues, keyFiles);
  if (psk && peer) peer.presharedKey = psk;
}

function peerLabel(index: number, name: unknown): string {
  return typeof name === 'string' ? `peers[${index}] (${quote(name)})` : `peers[${index}]`;
}

/** What the per-peer checks share: the sinks, the cross-peer maps, and where key files are read. */
interface PeerChecks {
  readonly issues: IssueSink;
  readonly warnings: WarningList;
  readonly names: Map<string, number>;
  readonly publicKeys: Map<string, number>;
  readonly prefixOwner: Map<string, number>;
  /** The walked peers by index: a conflict warning names the prefix's earlier owner by its name. */
  readonly checkedPeers: readonly unknown[];
  /** Preshared-key resolutions under way. */
  readonly pending: Promise<unknown>[];
  readonly baseDir: string;
  readonly keyFiles: KeyFileReader;
}

/**
 * One peer's checks against the peers already in the maps, and its
 * PeerConfig. A function of its own, with its state in `c`, so that the
 * full load and the incremental one run the same code on a peer; it
 * holds no closure (V8 would allocate a context for every peer).
 */
function checkPeer(c: PeerChecks, checkedPeer: unknown, rawValue: unknown, i: number): PeerConfig | undefined {
  if (!isPlainObject(checkedPeer)) return undefined;
  const { issues, warnings, prefixOwner } = c;
  const rawPeer = section(rawValue);
  // The peer's path is made only where an issue or a warning names it.

  const name = checkedPeer.name;
  if (typeof name === 'string') {
    const first = c.names.get(name);
    if (first !== undefined) issues.push({ path: `peers[${i}].name`, message: `duplicate name ${quote(name)} (also peers[${first}].name)` });
    else c.names.set(name, i);
  }

  const publicKey = checkedPeer.publicKey;
  if (typeof publicKey === 'string') {
    const first = c.publicKeys.get(publicKey);
    if (first !== undefined) {
      issues.push({ path: `peers[${i}].publicKey`, message: `duplicate public key (same as peers[${first}].publicKey)` });
    } else {
      c.publicKeys.set(publicKey, i);
    }
  }

  // Straight off the raw list (invalid entries are already reported), no
  // per-peer Set: a prefix this peer listed before is one whose owner is
  // already this peer. Per-peer objects are what the garbage collector
  // spends a reload of 10,000 peers on.
  // The list as written is kept (copied at its size) while every entry is
  // valid canonical text listed once; the first entry that is not starts
  // a list of its own.
  const rawAllowed: unknown[] = Array.isArray(rawPeer.allowedIPs) ? rawPeer.allowedIPs : [];
  let built: string[] | undefined;
  for (let index = 0; index < rawAllowed.length; index++) {
    const item: unknown = rawAllowed[index];
    let text: string;
    if (typeof item === 'string' && isCanonicalV4Prefix(item)) text = item;
    else {
      built ??= rawAllowed.slice(0, index) as string[];
      if (typeof item !== 'string') continue;
      let value: { text: string; hostBits: boolean };
      try {
        value = canonicalPrefix(item);
      } catch {
        continue; // reported by the schema walk
      }
      if (value.hostBits) warnings.push(`peers[${i}].allowedIPs[${index}]: host bits are set; using ${value.text}`);
      text = value.text;
    }
    const owner = prefixOwner.get(text);
    if (owner === i) {
      warnings.push(`peers[${i}].allowedIPs[${index}]: ${text} is listed twice for this peer; using it once`);
      built ??= rawAllowed.slice(0, index) as string[];
      continue;
    }
    if (owner !== undefined) {
      warnings.push(
        `peers[${i}].allowedIPs[${index}]: conflict: ${text} is also an allowed IP of ${peerLabel(owner, section(c.checkedPeers[owner]).name)}; ` +
          `the later peer, ${peerLabel(i, name)}, gets it (as in WireGuard)`,
      );
    }
    prefixOwner.set(text, i);
    built?.push(text);
  }
  const allowedIPs: string[] = built ?? (rawAllowed.slice() as string[]);

  // Built even when other fields are invalid; then the issues list is not
  // empty and the config is rejected before anyone sees this peer.
  const endpointText = checkedPeer.endpoint;
  const keepalive = checkedPeer.persistentKeepalive;
  const peer: PeerConfig | undefined =
    typeof publicKey === 'string' && typeof keepalive === 'number'
      ? { publicKey, publicKeyBytes: decodeKey(publicKey), allowedIPs, persistentKeepalive: keepalive }
      : undefined;
  if (peer && typeof name === 'string') peer.name = name;
  if (peer && typeof endpointText === 'string') peer.endpoint = parseEndpoint(endpointText);

  // Only a peer that names a preshared key has anything to resolve (no promise per peer otherwise).
  if (namesPresharedKey(rawPeer)) {
    c.pending.push(resolvePresharedKey(rawPeer, checkedPeer, `peers[${i}]`, peer, c.baseDir, issues, c.keyFiles));
  }
  return peer;
}

/** A peer whose preshared key comes from its text or a file: resolved on every load, its PeerConfig never reused (its key buffer is wiped with the config it was in). */
function namesPresharedKey(rawPeer: Plain): boolean {
  return present(rawPeer.presharedKey) || present(rawPeer.presharedKeyFile);
}

/** The interface's checks that span fields: its addresses (listed once each) and the MTU an IPv6 address needs. */
function checkInterface(rawIface: Plain, iface: Plain, issues: IssueSink, warnings: WarningList): string[] {
  // Duplicates are found through Sets keyed by the canonical text, so the
  // checks stay linear: Array.includes made 30,000 addresses take 8 s and
  // 100,000 allowed IPs on one peer 10 s.
  const addresses: string[] = [];
  const addressSet = new Set<string>();
  for (const { index, value } of validEntries(rawIface.addresses, canonicalAddress)) {
    if (addressSet.has(value)) {
      warnings.push(`interface.addresses[${index}]: ${value} is listed twice; using it once`);
    } else {
      addressSet.add(value);
      addresses.push(value);
    }
  }
  const mtu = iface.mtu;
  if (typeof mtu === 'number' && mtu < MTU_MIN_IPV6 && addresses.some((a) => a.includes(':'))) {
    issues.push({ path: 'interface.mtu', message: `must be at least ${MTU_MIN_IPV6} because interface.addresses has an IPv6 address (the IPv6 minimum MTU)` });
  }
  return addresses;
}

/** A host is not its own peer: the public key of interface.privateKey must not be a peer's. */
function checkSelf(privateKey: Uint8Array | undefined, publicKeys: Map<string, number>, issues: IssueSink): void {
  if (!privateKey) return;
  const self = publicKeys.get(encodeKey(derivePublicKey(privateKey)));
  if (self !== undefined) {
    issues.push({ path: `peers[${self}].publicKey`, message: 'is our own public key (derived from interface.privateKey); a host is not its own peer' });
  }
}

/**
 * Backstop: convict's own strict validation of the filled-in tree. The
 * walk mirrors it, so this only fires on a bug in the walk.
 */
function backstop(checked: Plain, issues: IssueSink): void {
  try {
    convict(configSchema as unknown as convict.Schema<Plain>, { env: {}, args: [] })
      .load(checked)
      .validate({ allowed: 'strict' });
  } catch (err) {
    issues.push({ path: '', message: `schema validation: ${err instanceof Error ? err.message : String(err)}` });
  }
}

function buildConfig(
  checked: Plain,
  iface: Plain,
  privateKey: Uint8Array,
  addresses: string[],
  peers: PeerConfig[],
  warnings: WarningList,
  path: string | undefined,
): TunvpnConfig {
  const cfg: TunvpnConfig = {
    interface: {
      name: String(iface.name),
      privateKey,
      listenPort: Number(iface.listenPort),
      addresses,
      mtu: Number(iface.mtu),
      hooks: hooksSection(section(iface.hooks)),
      fwmark: Number(iface.fwmark),
      table: iface.table === 'auto' || iface.table === 'off' ? iface.table : Number(iface.table),
    },
    peers,
    log: { level: String(section(checked.log).level) },
    metrics: metricsSection(section(checked.metrics)),
    crypto: { backend: String(section(checked.crypto).backend) as CryptoBackendChoice },
    dns: { resolveInterval: Number(section(checked.dns).resolveInterval) },
    warnings: warnings.lines(),
  };
  if (path !== undefined) cfg.path = path;
  return cfg;
}

export async function parseConfig(raw: unknown, opts: ParseOptions): Promise<TunvpnConfig> {
  return (await parseFully(raw, opts, false)).config;
}

/** What parseConfigMemo gives: the config, the memo for the next load (absent when this one cannot be reused), and which way it went. */
export interface MemoParse {
  config: TunvpnConfig;
  memo: ConfigMemo | undefined;
  /** True when the previous memo was used: only `rewalked` peers were checked, the other `reused` PeerConfigs are the memo's objects. */
  incremental: boolean;
  reused: number;
  rewalked: number;
}

/**
 * What both loads do first: the schema walk of `walked` (the whole root for
 * the full load; the root without its peers for the incremental one), the
 * private key's resolution (started, awaited later), and the interface's
 * cross-field checks. `warningsBeforePeers` tells a peer's warnings from
 * the interface's.
 */
function walkRoot(
  raw: Plain,
  walked: Plain,
  opts: ParseOptions,
  issues: IssueSink,
  warnings: WarningList,
): { checked: Plain; keyFiles: KeyFileReader; iface: Plain; privateKeyP: Promise<Uint8Array | undefined>; addresses: string[]; warningsBeforePeers: number } {
  const checked = checkSection(configSchema, walked, '', issues);
  const keyFiles = new KeyFileReader();
  const rawIface = section(raw.interface);
  const iface = section(checked.interface);
  const privateKeyP = resolveSecret(rawIface, iface, 'privateKey', 'privateKeyFile', 'interface', true, opts.baseDir, issues, keyFiles);
  const addresses = checkInterface(rawIface, iface, issues, warnings);
  return { checked, keyFiles, iface, privateKeyP, addresses, warningsBeforePeers: warnings.count };
}

/**
 * parseConfig, reusing what `previous` (the memo of an earlier load of
 * the same file) knows: each peer whose raw value is deep-equal to the
 * one at its index then, and whose PeerConfig came from nothing but its
 * own text (no preshared key: that is read and wiped per load), keeps
 * that PeerConfig object; only the other peers (changed, or appended at
 * the end) are walked and checked, against the cross-peer maps of the
 * previous load with the changed peers' old entries taken out.
 *
 * The result is exactly the full parse's, value and warnings, because it
 * is taken only when it cannot differ: the memo's load had no warning
 * about any peer (so its maps hold each name, key and prefix once), the
 * file's other sections are deep-equal to the memo's, the peer list is
 * not shorter, and the checked peers raise no issue and no warning (no
 * collision with a reused peer, whatever their order). Anything else is
 * the full parse, which makes every error and warning message. The
 * private key is resolved on every load either way (its file may have
 * been rotated). The memo is consumed (its maps move to the new one);
 * the caller keeps the one returned.
 */
export async function parseConfigMemo(raw: unknown, opts: ParseOptions, previous?: ConfigMemo): Promise<MemoParse> {
  if (previous !== undefined && !previous.consumed && isPlainObject(raw)) {
    const done = await parseIncrementally(raw, opts, previous);
    if (done !== undefined) return done;
  }
  return parseFully(raw, opts, true);
}

async function parseFully(raw: unknown, opts: ParseOptions, wantMemo: boolean): Promise<MemoParse> {
  const issues = new IssueList();
  const warnings = new WarningList();
  if (!isPlainObject(raw)) {
    throw new ConfigError([{ path: '', message: 'the configuration must be a JSON object' }], opts.path);
  }
  const { checked, keyFiles, iface, privateKeyP, addresses, warningsBeforePeers } = walkRoot(raw, raw, opts, issues, warnings);

  // --- peers
  const rawPeers = Array.isArray(raw.peers) ? raw.peers : [];
  const checkedPeers = Array.isArray(checked.peers) ? checked.peers : [];
  const c: PeerChecks = {
    issues,
    warnings,
    names: new Map(),
    publicKeys: new Map(),
    prefixOwner: new Map(),
    checkedPeers,
    pending: [],
    baseDir: opts.baseDir,
    keyFiles,
  };
  const peers: (PeerConfig | undefined)[] = [];
  for (let i = 0; i < checkedPeers.length; i++) peers.push(checkPeer(c, checkedPeers[i], rawPeers[i], i));

  const privateKey = await privateKeyP;
  await Promise.all(c.pending);
  // Every user holds its own copy; the reader's originals are not needed.
  await keyFiles.wipe();
  checkSelf(privateKey, c.publicKeys, issues);

  // convict's backstop costs about 0.5 ms for 10,000 peers (it sees `peers` as one array-valued field).
  if (issues.count === 0) backstop(checked, issues);

  if (issues.count > 0 || !privateKey) {
    privateKey?.fill(0);
    for (const p of peers) p?.presharedKey?.fill(0);
    throw new ConfigError(sortIssues(issues.items), opts.path, issues.omitted);
  }

  const valid = peers.filter((p): p is PeerConfig => p !== undefined);
  const config = buildConfig(checked, iface, privateKey, addresses, valid, warnings, opts.path);
  let memo: ConfigMemo | undefined;
  // With no issue every peer gave a PeerConfig (valid[i] is raw peer i); with no
  // warning about a peer the maps hold every name, key and prefix exactly once.
  if (wantMemo && warnings.count === warningsBeforePeers && valid.length === rawPeers.length && c.prefixOwner.size + 2 * valid.length <= MAX_MEMO_ENTRIES) {
    const reusable = new Uint8Array(rawPeers.length);
    for (let i = 0; i < rawPeers.length; i++) reusable[i] = namesPresharedKey(section(rawPeers[i])) ? 0 : 1;
    // Its own list (the config's may be handed on); the PeerConfig objects are shared.
    const kept = memoPeers(rawPeers, reusable);
    memo = new ConfigMemo(opts.path, opts.baseDir, memoRoot(raw, kept), kept, valid.slice(), reusable, c.names, c.publicKeys, c.prefixOwner);
  }
  return { config, memo, incremental: false, reused: 0, rewalked: valid.length };
}

/**
 * A change whose peers and allowed IPs (old and new) are more than this
 * share of the config's is a full load: past it the incremental one does
 * the full load's work and more (the old entries out of the maps first).
 * One peer with 100,000 allowed IPs changed: 80 ms incremental, 62 full.
 */
const INCREMENTAL_MAX_SHARE = 0.5;

function allowedCount(rawPeer: unknown): number {
  const list = isPlainObject(rawPeer) ? rawPeer.allowedIPs : undefined;
  return Array.isArray(list) ? list.length : 0;
}

/** The incremental load (parseConfigMemo's rules), or undefined for a full one. */
async function parseIncrementally(raw: Plain, opts: ParseOptions, memo: ConfigMemo): Promise<MemoParse | undefined> {
  if (memo.path !== opts.path || memo.baseDir !== opts.baseDir || !Array.isArray(raw.peers)) return undefined;
  const rawPeers: unknown[] = raw.peers;
  const was = memo.rawPeers.length;
  if (rawPeers.length < was) return undefined;
  // Every part but the peers as it was (key sets compared, order aside: the walk's result does not depend on it when it reports nothing).
  let keys = 0;
  for (const key in raw) {
    if (!Object.hasOwn(raw, key)) continue;
    keys++;
    if (key === 'peers') continue;
    // The memo's interface holds no inline private key (memo.ts, withoutKeyText); the key is resolved below anyway.
    const value = key === 'interface' ? withoutKeyText(raw[key]) : raw[key];
    if (!Object.hasOwn(memo.root, key) || !jsonEqual(value, memo.root[key])) return undefined;
  }
  for (const key in memo.root) if (Object.hasOwn(memo.root, key)) keys--;
  if (keys !== 0) return undefined;

  const changed: number[] = [];
  // The work the changed peers make (each, its old entries out, its new allowed IPs in) against the full load's.
  let work = 0;
  for (let i = 0; i < was; i++) {
    if (memo.reusable[i] !== 1 || !jsonEqual(rawPeers[i], memo.rawPeers[i])) {
      changed.push(i);
      work += 1 + memo.peers[i].allowedIPs.length + allowedCount(rawPeers[i]);
    }
  }
  for (let i = was; i < rawPeers.length; i++) {
    changed.push(i);
    work += 1 + allowedCount(rawPeers[i]);
  }
  const total = rawPeers.length + memo.prefixOwner.size;
  if (total > 64 && work > total * INCREMENTAL_MAX_SHARE) return undefined;

  // From here the memo's maps become this load's: the memo is spent, whatever the outcome.
  memo.consumed = true;
  const { names, publicKeys, prefixOwner } = memo;
  for (const i of changed) {
    if (i >= was) break;
    const old = memo.peers[i];
    if (old.name !== undefined && names.get(old.name) === i) names.delete(old.name);
    if (publicKeys.get(old.publicKey) === i) publicKeys.delete(old.publicKey);
    for (const text of old.allowedIPs) if (prefixOwner.get(text) === i) prefixOwner.delete(text);
  }

  const issues = new IssueList();
  const warnings = new WarningList();
  // The root walked with no peers; the changed peers one by one as checkItems would walk them.
  const { checked, keyFiles, iface, privateKeyP, addresses, warningsBeforePeers } = walkRoot(raw, { ...raw, peers: [] }, opts, issues, warnings);

  const rewalked: unknown[] = [];
  const checkedPeers: unknown[] = [];
  const c: PeerChecks = { issues, warnings, names, publicKeys, prefixOwner, checkedPeers, pending: [], baseDir: opts.baseDir, keyFiles };
  const peers = memo.peers.slice();
  const fresh: PeerConfig[] = [];
  for (const i of changed) {
    const rawPeer = rawPeers[i];
    if (!isPlainObject(rawPeer)) {
      issues.push({ path: `peers[${i}]`, message: 'not an object' });
      break;
    }
    const checkedPeer = checkSection(peerSchema, rawPeer, `peers[${i}]`, issues);
    checkedPeers[i] = checkedPeer;
    rewalked.push(checkedPeer);
    const peer = checkPeer(c, checkedPeer, rawPeer, i);
    if (peer === undefined) {
      issues.push({ path: `peers[${i}]`, message: 'no peer' });
      break;
    }
    fresh.push(peer);
    peers[i] = peer;
  }

  const privateKey = await privateKeyP;
  await Promise.all(c.pending);
  await keyFiles.wipe();
  checkSelf(privateKey, publicKeys, issues);
  // The backstop on what was walked again: the other sections and the changed peers.
  if (issues.count === 0) backstop({ ...checked, peers: rewalked }, issues);

  if (issues.count > 0 || warnings.count !== warningsBeforePeers || !privateKey) {
    // The full load makes the messages (and finds what this one may have stopped short of).
    privateKey?.fill(0);
    for (const p of fresh) p.presharedKey?.fill(0);
    return undefined;
  }

  const config = buildConfig(checked, iface, privateKey, addresses, peers, warnings, opts.path);
  let next: ConfigMemo | undefined;
  if (prefixOwner.size + 2 * peers.length <= MAX_MEMO_ENTRIES) {
    const reusable = new Uint8Array(rawPeers.length);
    reusable.set(memo.reusable);
    for (const i of changed) reusable[i] = namesPresharedKey(section(rawPeers[i])) ? 0 : 1;
    const kept = memoPeers(rawPeers, reusable);
    next = new ConfigMemo(opts.path, opts.baseDir, memoRoot(raw, kept), kept, peers.slice(), reusable, names, publicKeys, prefixOwner);
  }
  return { config, memo: next, incremental: true, reused: peers.length - changed.length, rewalked: changed.length };
}

/**
 * Issues grouped in document order (interface, peers by index, the rest);
 * within a group, in the order found. Key-file checks finish in any order,
 * so without this the output would not be stable.
 */
function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  const sections = ['interface', 'peers', 'log', 'metrics', 'crypto'];
  const rank = (path: string): number => {
    const peer = /^peers\[(\d+)\]/.exec(path);
    if (peer) return 1 + Number(peer[1]) / 1e9;
    const s = sections.indexOf(path.split(/[.[]/)[0]);
    return s < 0 ? sections.length : s;
  };
  return issues
    .map((issue, n) => ({ issue, n, r: rank(issue.path) }))
    .sort((a, b) => a.r - b.r || a.n - b.n)
    .map((x) => x.issue);
}

function metricsSection(m: Record<string, unknown>): TunvpnConfig['metrics'] {
  return typeof m.listen === 'string' ? { listen: parseEndpoint(m.listen) } : {};
}

function hooksSection(h: Record<string, unknown>): HooksConfig {
  // Valid by now (the walk rejected anything else); copied so the config owns its lists.
  const list = (v: unknown): string[][] => (Array.isArray(v) ? v.map((argv) => (Array.isArray(argv) ? argv.map(String) : [])) : []);
  return { preUp: list(h.preUp), postUp: list(h.postUp), preDown: list(h.preDown), postDown: list(h.postDown) };
}
