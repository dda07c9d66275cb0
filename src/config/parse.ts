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
import { configSchema } from './schema.js';
import { derivePublicKey, KeyFileReader } from './secrets.js';
import type { CryptoBackendChoice, HooksConfig, PeerConfig, TunvpnConfig } from './types.js';
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

export async function parseConfig(raw: unknown, opts: ParseOptions): Promise<TunvpnConfig> {
  const issues = new IssueList();
  const warnings = new WarningList();
  if (!isPlainObject(raw)) {
    throw new ConfigError([{ path: '', message: 'the configuration must be a JSON object' }], opts.path);
  }
  const checked = checkSection(configSchema, raw, '', issues);
  const keyFiles = new KeyFileReader();

  // --- interface
  const rawIface = section(raw.interface);
  const iface = section(checked.interface);
  const privateKeyP = resolveSecret(rawIface, iface, 'privateKey', 'privateKeyFile', 'interface', true, opts.baseDir, issues, keyFiles);

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

  // --- peers
  const rawPeers = Array.isArray(raw.peers) ? raw.peers : [];
  const checkedPeers = Array.isArray(checked.peers) ? checked.peers : [];
  const names = new Map<string, number>();
  const publicKeys = new Map<string, number>();
  const prefixOwner = new Map<string, number>();
  const pending: Promise<unknown>[] = [];
  const peers: (PeerConfig | undefined)[] = [];

  checkedPeers.forEach((checkedPeer: unknown, i: number) => {
    if (!isPlainObject(checkedPeer)) {
      peers.push(undefined);
      return;
    }
    const rawPeer = section(rawPeers[i]);
    // The peer's path is made only where an issue or a warning names it.

    const name = checkedPeer.name;
    if (typeof name === 'string') {
      const first = names.get(name);
      if (first !== undefined) issues.push({ path: `peers[${i}].name`, message: `duplicate name ${quote(name)} (also peers[${first}].name)` });
      else names.set(name, i);
    }

    const publicKey = checkedPeer.publicKey;
    if (typeof publicKey === 'string') {
      const first = publicKeys.get(publicKey);
      if (first !== undefined) {
        issues.push({ path: `peers[${i}].publicKey`, message: `duplicate public key (same as peers[${first}].publicKey)` });
      } else {
        publicKeys.set(publicKey, i);
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
          `peers[${i}].allowedIPs[${index}]: conflict: ${text} is also an allowed IP of ${peerLabel(owner, section(checkedPeers[owner]).name)}; ` +
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
    peers.push(peer);

    // Only a peer that names a preshared key has anything to resolve (no promise per peer otherwise).
    if (present(rawPeer.presharedKey) || present(rawPeer.presharedKeyFile)) {
      pending.push(resolvePresharedKey(rawPeer, checkedPeer, `peers[${i}]`, peer, opts.baseDir, issues, keyFiles));
    }
  });

  const privateKey = await privateKeyP;
  await Promise.all(pending);
  // Every user holds its own copy; the reader's originals are not needed.
  await keyFiles.wipe();

  if (privateKey) {
    const ours = derivePublicKey(privateKey);
    const self = publicKeys.get(encodeKey(ours));
    if (self !== undefined) {
      issues.push({ path: `peers[${self}].publicKey`, message: 'is our own public key (derived from interface.privateKey); a host is not its own peer' });
    }
  }

  if (issues.count === 0) {
    // Backstop: convict's own strict validation of the filled-in tree. The
    // walk above mirrors it, so this only fires on a bug in the walk.
    try {
      convict(configSchema as unknown as convict.Schema<Plain>, { env: {}, args: [] })
        .load(checked)
        .validate({ allowed: 'strict' });
    } catch (err) {
      issues.push({ path: '', message: `schema validation: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  if (issues.count > 0 || !privateKey) {
    privateKey?.fill(0);
    for (const p of peers) p?.presharedKey?.fill(0);
    throw new ConfigError(sortIssues(issues.items), opts.path, issues.omitted);
  }

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
    peers: peers.filter((p): p is PeerConfig => p !== undefined),
    log: { level: String(section(checked.log).level) },
    metrics: metricsSection(section(checked.metrics)),
    crypto: { backend: String(section(checked.crypto).backend) as CryptoBackendChoice },
    dns: { resolveInterval: Number(section(checked.dns).resolveInterval) },
    warnings: warnings.lines(),
  };
  if (opts.path !== undefined) cfg.path = opts.path;
  return cfg;
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
