/**
 * The fast paths of a reload (docs/performance.md, "Routed hub") against
 * the general code they stand in for, on generated input (fast-check):
 * each must give exactly what the general path gives, value or error.
 *  - canonicalPrefix's canonical-IPv4 shortcut against parse-and-format
 *    (src/peers/cidr.ts, the code the loader used for every prefix);
 *  - keyTextProblem against the regular expression it replaced (and
 *    decodeKey against Buffer.from);
 *  - parseJson (JSON.parse after a scan) against the strict parser, on
 *    JSON with duplicate keys, "__proto__", long numbers, deep nesting,
 *    a byte-order mark and broken text;
 *  - diffConfig (peers matched by index first, no per-peer Set) against
 *    the previous implementation, copied here as the oracle, on configs
 *    that reorder, add, remove, recreate and change every peer field.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { diffConfig, diffConfigSliced, type ConfigDiff } from '../../src/config/diff.js';
import { canonicalPrefix } from '../../src/config/formats.js';
import { MAX_JSON_DEPTH, parseJson, parseJsonStrictly } from '../../src/config/json.js';
import { decodeKey, keysEqual, keyTextProblem } from '../../src/config/keys.js';
import { parseConfig } from '../../src/config/parse.js';
import type { PeerConfig, TunvpnConfig } from '../../src/config/types.js';
import { formatCidr, formatIp, parseCidr, parseIp } from '../../src/peers/cidr.js';
import { config, keyPair } from './helpers.js';

const RUNS = 400;

/** The general path: what canonicalPrefix computed for every prefix before the shortcut. */
function referencePrefix(text: string): { text: string; hostBits: boolean } {
  if (text.includes('%')) throw new Error(`"${text}" must not have a zone index`);
  const canonical = formatCidr(parseCidr(text));
  const slash = text.indexOf('/');
  const host = formatIp(parseIp(slash < 0 ? text : text.slice(0, slash)));
  return { text: canonical, hostBits: host !== canonical.slice(0, canonical.indexOf('/')) };
}

function outcome<T>(fn: () => T): { value: T } | { error: string } {
  try {
    return { value: fn() };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

describe('canonicalPrefix: the canonical-IPv4 shortcut', () => {
  const octet = fc.oneof(fc.integer({ min: 0, max: 255 }).map(String), fc.constantFrom('00', '01', '007', '256', '999', '', '-1', '1a'));
  const bits = fc.oneof(fc.integer({ min: 0, max: 32 }).map(String), fc.constantFrom('024', '00', '33', '128', '', '1e1', ' 8'));
  const v4ish = fc.tuple(octet, octet, octet, octet, fc.option(bits)).map(([a, b, c, d, n]) => `${a}.${b}.${c}.${d}${n === null ? '' : `/${n}`}`);
  const canonicalV4 = fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 })).map(([addr, n]) => {
    const masked = n === 0 ? 0 : (addr & (0xffffffff << (32 - n))) >>> 0;
    return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${n}`;
  });
  const noise = fc.stringMatching(/^[0-9./:a-f%]{0,20}$/);

  it('gives what parsing and formatting give, value or error, for IPv4-like text, canonical prefixes and noise', () => {
    fc.assert(
      fc.property(fc.oneof(v4ish, canonicalV4, noise), (text) => {
        expect(outcome(() => canonicalPrefix(text))).toEqual(outcome(() => referencePrefix(text)));
      }),
      { numRuns: RUNS * 5 },
    );
  });

  it('keeps host bits, leading zeros and bare addresses on the general path', () => {
    expect(canonicalPrefix('10.0.0.5/24')).toEqual({ text: '10.0.0.0/24', hostBits: true });
    expect(canonicalPrefix('10.0.0.0/024')).toEqual({ text: '10.0.0.0/24', hostBits: false });
    expect(canonicalPrefix('10.0.0.1')).toEqual({ text: '10.0.0.1/32', hostBits: false });
    expect(() => canonicalPrefix('010.0.0.0/8')).toThrow();
    expect(canonicalPrefix('0.0.0.0/0')).toEqual({ text: '0.0.0.0/0', hostBits: false });
  });
});

describe('key text: the hand-written check', () => {
  const KEY_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
  const b64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const nearKey = fc
    .tuple(fc.array(fc.constantFrom(...b64, '=', '-', '_', ' ', '\n', 'é'), { minLength: 40, maxLength: 46 }), fc.constantFrom('=', '', 'A', '=='))
    .map(([chars, end]) => chars.join('') + end);
  const realKey = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('base64'));

  it('accepts exactly what the regular expression accepted, and decodes as Buffer.from does', () => {
    fc.assert(
      fc.property(fc.oneof(nearKey, realKey), (text) => {
        const problem = keyTextProblem(text);
        if (text.length === 44) expect(problem === undefined).toBe(KEY_PATTERN.test(text));
        expect(Buffer.from(decodeKey(text))).toEqual(Buffer.from(text, 'base64'));
      }),
      { numRuns: RUNS * 5 },
    );
  });

  it('gives every key its own 32-byte buffer (a copy, to wipe as its holder likes)', () => {
    const k = decodeKey(keyPair().pub);
    expect(k.byteLength).toBe(32);
    expect(k.byteOffset).toBe(0);
    expect(k.buffer.byteLength).toBe(32);
  });
});

describe('parseJson: JSON.parse after a scan, else the strict parser', () => {
  /** Own properties, "__proto__" included, compared as data. */
  function plain(v: unknown): unknown {
    if (Array.isArray(v)) return { array: v.map(plain) };
    if (typeof v === 'object' && v !== null) return { object: Object.keys(v).map((k) => [k, plain((v as Record<string, unknown>)[k])]) };
    return v;
  }
  function same(text: string, expectObject: boolean): void {
    const fast = outcome(() => plain(parseJson(text, { expectObject })));
    const strict = outcome(() => plain(parseJsonStrictly(text, { expectObject })));
    expect(fast).toEqual(strict);
  }
  /** Text edits that break JSON, duplicate a key, or add what only the strict parser decides. */
  const edit = fc.oneof(
    fc.constant((t: string) => t),
    fc.constant((t: string) => t.replace(/\{"([^"]*)":/, '{"$1":1,"$1":')),
    fc.constant((t: string) => t.replace(/\{/, '{"__proto__":{"x":1},')),
    fc.constant((t: string) => t.replace(/\{/, '{"__proto__":1,"__proto__":2,')),
    fc.constant((t: string) => `\ufeff${t}`),
    fc.constant((t: string) => t.replace(/\{/, `{"n":${'9'.repeat(70)},`)),
    fc.constant((t: string) => t.replace(/\{/, `{"n":${'9'.repeat(62)},`)),
    fc.constant((t: string) => t.replace(/\{/, `{"deep":${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)},`)),
    fc.constant((t: string) => t.replace(/\{/, `{"deep":${'['.repeat(MAX_JSON_DEPTH - 1)}${']'.repeat(MAX_JSON_DEPTH - 1)},`)),
    fc.tuple(fc.nat(), fc.constantFrom(',', '}', ']', '"', '\\', ':', '\u0001', '\n', 'x')).map(([at, ch]) => (t: string) => {
      const i = t.length === 0 ? 0 : at % t.length;
      return t.slice(0, i) + ch + t.slice(i);
    }),
    fc.nat().map((at) => (t: string) => t.slice(0, t.length === 0 ? 0 : at % t.length)),
  );

  it("gives the strict parser's value or error on generated and edited JSON", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 4 })),
        fc.boolean(),
        edit,
        fc.boolean(),
        (obj, pretty, change, expectObject) => {
          same(change(JSON.stringify(obj, null, pretty ? 2 : undefined)), expectObject);
        },
      ),
      { numRuns: RUNS * 2 },
    );
  });

  it('keeps "__proto__" a data property and refuses a duplicate key with its position', () => {
    const v = parseJson('{"__proto__": {"polluted": true}, "a": 1}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect(Object.keys(v)).toEqual(['__proto__', 'a']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(() => parseJson('{\n  "a": 1,\n  "a": 2\n}')).toThrow('line 3, column 3: duplicate key "a"');
  });

  it('refuses a root that is not an object before parsing it, as the strict parser does', () => {
    expect(() => parseJson('[1,2]', { expectObject: true })).toThrow('the configuration must be a JSON object ({...}), got an array');
    expect(() => parseJson(' \ufeff{}', { expectObject: true })).toThrow();
  });
});

// ---- diff: the previous implementation, as the oracle ----

function oldSameSet(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((x) => set.has(x));
}

function oldPeerFields(a: PeerConfig, b: PeerConfig): string[] {
  const fields: string[] = [];
  if (a.name !== b.name) fields.push('name');
  if (!keysEqual(a.presharedKey, b.presharedKey)) fields.push('presharedKey');
  if (a.endpoint?.host !== b.endpoint?.host || a.endpoint?.port !== b.endpoint?.port) fields.push('endpoint');
  if (!oldSameSet(a.allowedIPs, b.allowedIPs)) fields.push('allowedIPs');
  if (a.persistentKeepalive !== b.persistentKeepalive) fields.push('persistentKeepalive');
  return fields;
}

function oldDiffPeers(before: TunvpnConfig, after: TunvpnConfig, recreated: ReadonlySet<string>): Omit<ConfigDiff, 'interfaceChanged'> {
  const old = new Map<string, PeerConfig>();
  for (const p of before.peers) old.set(p.publicKey, p);
  const diff: Omit<ConfigDiff, 'interfaceChanged'> = { added: [], removed: [], changed: [], unchanged: [], recreated: [] };
  const seen = new Set<string>();
  for (const peer of after.peers) {
    const prev = old.get(peer.publicKey);
    if (prev === undefined || recreated.has(peer.publicKey)) {
      diff.added.push(peer);
      if (prev !== undefined) diff.recreated.push(peer);
      continue;
    }
    seen.add(peer.publicKey);
    const fields = oldPeerFields(prev, peer);
    if (fields.length) diff.changed.push({ before: prev, after: peer, fields });
    else diff.unchanged.push(peer);
  }
  for (const peer of before.peers) if (!seen.has(peer.publicKey)) diff.removed.push(peer);
  return diff;
}

describe('diffConfig: peers matched by index first', () => {
  const KEYS = Array.from({ length: 12 }, () => keyPair().pub);
  const PREFIXES = ['10.0.0.1/32', '10.0.1.0/24', '10.0.2.0/24', 'fd00::/64', '0.0.0.0/0'];
  const peerArb = (publicKey: string): fc.Arbitrary<PeerConfig> =>
    fc
      .record({
        name: fc.option(fc.constantFrom('a', 'b', 'c'), { nil: undefined }),
        psk: fc.option(fc.constantFrom(0, 1), { nil: undefined }),
        endpoint: fc.option(fc.record({ host: fc.constantFrom('192.0.2.1', 'vpn.example'), port: fc.constantFrom(1, 51820) }), { nil: undefined }),
        allowedIPs: fc.uniqueArray(fc.constantFrom(...PREFIXES), { maxLength: 4 }),
        persistentKeepalive: fc.constantFrom(0, 25),
      })
      .map((r) => {
        const p: PeerConfig = {
          publicKey,
          publicKeyBytes: new Uint8Array(Buffer.from(publicKey, 'base64')),
          allowedIPs: r.allowedIPs,
          persistentKeepalive: r.persistentKeepalive,
        };
        if (r.name !== undefined) p.name = r.name;
        if (r.psk !== undefined) p.presharedKey = new Uint8Array(32).fill(r.psk);
        if (r.endpoint !== undefined) p.endpoint = r.endpoint;
        return p;
      });
  /** A config of some of the keys, in some order. */
  const configArb = fc.shuffledSubarray(KEYS).chain((keys) => fc.tuple(...keys.map(peerArb)).map((peers) => config(peers)));
  /** `after`: `before` with a few peers changed in one field, some removed, some added, maybe reordered. */
  const pairArb = configArb.chain((before) =>
    fc
      .tuple(
        fc.array(fc.tuple(fc.nat(), fc.constantFrom('name', 'psk', 'endpoint', 'port', 'allowedIPs', 'order', 'keepalive', 'remove')), { maxLength: 4 }),
        fc.shuffledSubarray(KEYS.filter((k) => !before.peers.some((p) => p.publicKey === k))).chain((keys) => fc.tuple(...keys.map(peerArb))),
        fc.boolean(),
        fc.shuffledSubarray(KEYS, { maxLength: 3 }),
      )
      .map(([edits, added, shuffle, recreated]) => {
        let peers = before.peers.map((p) => ({ ...p, allowedIPs: [...p.allowedIPs] }));
        for (const [at, what] of edits) {
          if (peers.length === 0) break;
          const i = at % peers.length;
          const p = peers[i];
          if (what === 'name') p.name = p.name === 'a' ? 'b' : 'a';
          else if (what === 'psk') p.presharedKey = p.presharedKey === undefined ? new Uint8Array(32).fill(7) : undefined;
          else if (what === 'endpoint') p.endpoint = p.endpoint?.host === 'vpn.example' ? { host: '192.0.2.1', port: 1 } : { host: 'vpn.example', port: 1 };
          else if (what === 'port') p.endpoint = { host: p.endpoint?.host ?? '192.0.2.1', port: (p.endpoint?.port ?? 0) + 1 };
          else if (what === 'allowedIPs') p.allowedIPs = p.allowedIPs.length > 0 ? p.allowedIPs.slice(1) : ['10.9.0.0/16'];
          else if (what === 'order') p.allowedIPs = [...p.allowedIPs].reverse();
          else if (what === 'keepalive') p.persistentKeepalive += 1;
          else peers = peers.filter((_, k) => k !== i);
          if (p.presharedKey === undefined) delete p.presharedKey;
        }
        const all = [...peers, ...added];
        if (shuffle) all.reverse();
        return { before, after: config(all), recreated: new Set(recreated) };
      }),
  );

  it('finds what the previous implementation found, in the same order, for every kind of change', async () => {
    await fc.assert(
      fc.asyncProperty(pairArb, async ({ before, after, recreated }) => {
        const want = oldDiffPeers(before, after, recreated);
        const got = diffConfig(before, after, recreated);
        const keys = (d: Omit<ConfigDiff, 'interfaceChanged'>): unknown => ({
          added: d.added.map((p) => p.publicKey),
          removed: d.removed.map((p) => p.publicKey),
          changed: d.changed.map((c) => [c.before, c.after, c.fields]),
          unchanged: d.unchanged,
          recreated: d.recreated.map((p) => p.publicKey),
        });
        expect(keys(got)).toEqual(keys(want));
        // Identity, not only equality: the daemon updates the very objects it is given.
        got.changed.forEach((c, i) => {
          expect(c.before).toBe(want.changed[i].before);
          expect(c.after).toBe(want.changed[i].after);
        });
        const sliced = await diffConfigSliced(before, after, recreated, { due: () => true, pause: () => Promise.resolve() });
        expect(keys(sliced)).toEqual(keys(got));
      }),
      { numRuns: RUNS },
    );
  });

  it('sees a change of every single field of one peer among many', () => {
    const many = Array.from({ length: 50 }, (_, i) => ({ publicKey: keyPair().pub, allowedIPs: [`10.1.${i}.0/24`], persistentKeepalive: 0 }) as PeerConfig);
    const before = config(many);
    const changes: [string, (p: PeerConfig) => void][] = [
      ['name', (p) => (p.name = 'x')],
      ['presharedKey', (p) => (p.presharedKey = new Uint8Array(32))],
      ['endpoint', (p) => (p.endpoint = { host: '192.0.2.1', port: 1 })],
      ['allowedIPs', (p) => (p.allowedIPs = ['10.200.0.0/24'])],
      ['persistentKeepalive', (p) => (p.persistentKeepalive = 25)],
    ];
    for (const [field, change] of changes) {
      const peers = many.map((p) => ({ ...p }));
      change(peers[17]);
      const d = diffConfig(before, config(peers));
      expect(d.changed.map((c) => [c.after.publicKey, c.fields])).toEqual([[many[17].publicKey, [field]]]);
      expect(d.unchanged).toHaveLength(49);
    }
  });
});

describe('loader: allowed IPs kept as written until the first entry that is not canonical or is repeated', () => {
  it('gives the canonical list and every warning, whatever the mix', async () => {
    const { priv } = keyPair();
    const peers = [
      { publicKey: keyPair().pub, allowedIPs: ['10.0.0.0/24', '10.0.1.0/24'] },
      { publicKey: keyPair().pub, allowedIPs: ['10.2.0.0/24', '10.2.0.9/24', '10.2.0.0/24', 'fd00::1/64', '10.0.1.0/24', '10.3.0.0/16'] },
      { publicKey: keyPair().pub, allowedIPs: ['10.4.0.0/24', '10.4.0.0/24', '10.5.0.0/24'] },
      { publicKey: keyPair().pub, allowedIPs: [] },
    ];
    const cfg = await parseConfig({ interface: { privateKey: priv }, peers }, { baseDir: '/' });
    expect(cfg.peers.map((p) => p.allowedIPs)).toEqual([
      ['10.0.0.0/24', '10.0.1.0/24'],
      ['10.2.0.0/24', 'fd00::/64', '10.0.1.0/24', '10.3.0.0/16'],
      ['10.4.0.0/24', '10.5.0.0/24'],
      [],
    ]);
    expect(cfg.warnings).toEqual([
      'peers[1].allowedIPs[1]: host bits are set; using 10.2.0.0/24',
      'peers[1].allowedIPs[1]: 10.2.0.0/24 is listed twice for this peer; using it once',
      'peers[1].allowedIPs[2]: 10.2.0.0/24 is listed twice for this peer; using it once',
      'peers[1].allowedIPs[3]: host bits are set; using fd00::/64',
      'peers[1].allowedIPs[4]: conflict: 10.0.1.0/24 is also an allowed IP of peers[0]; the later peer, peers[1], gets it (as in WireGuard)',
      'peers[2].allowedIPs[1]: 10.4.0.0/24 is listed twice for this peer; using it once',
    ]);
    // The config owns its lists: not the parsed input's arrays.
    expect(cfg.peers[0].allowedIPs).not.toBe(peers[0].allowedIPs);
  });
});
