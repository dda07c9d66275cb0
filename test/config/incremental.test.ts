/**
 * The incremental load (src/config/parse.ts parseConfigMemo, src/config/memo.ts):
 * a reload given the memo of the last load checks only the peers that
 * changed and reuses the other PeerConfig objects. It must give exactly
 * what a full load of the same file gives: the same config (warnings
 * included), or the same ConfigError issues in the same order.
 *  - differential: random valid configs, then chains of random edits
 *    (a field of one peer changed or broken, peers appended, removed,
 *    swapped, duplicate names, keys and prefixes, the interface's own key
 *    as a peer's, preshared keys inline and in files, key files rotated,
 *    the interface and other sections changed, unknown keys, the file's
 *    mode), each step loaded both ways and compared, as the daemon chains
 *    them (the memo of each successful load to the next, the previous
 *    config's secrets wiped as after an apply);
 *  - the path is really taken: identities of the unchanged peers' objects,
 *    the reported counts, and the diff seeing them as the same objects.
 */
import { chmodSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { diffConfig } from '../../src/config/diff.js';
import { ConfigError, loadConfig, loadConfigMemo, type ConfigMemo, type TunvpnConfig } from '../../src/config/index.js';
import { jsonEqual } from '../../src/config/memo.js';
import { wipeConfigSecrets } from '../../src/control/uapi-apply.js';
import { keyPair, tempDir, writeFile } from './helpers.js';

const POOL = Array.from({ length: 24 }, () => keyPair());
/** POOL[0] is the interface's key; POOL[1] its rotated replacement. */
const OWN = POOL[0];
const { dir, cleanup } = tempDir();
afterAll(cleanup);

type RawPeer = Record<string, unknown>;
interface RawConfig {
  interface: Record<string, unknown>;
  peers: unknown[];
  [section: string]: unknown;
}

const NAMES = ['alpha', 'beta', 'gamma', 'delta', 'eps'];
const ENDPOINTS = ['192.0.2.1:51820', '[2001:db8::1]:1000', 'vpn.example.org:51820', 'nope', '198.51.100.9:0'];
const EXTRA_PREFIXES = ['10.9.0.0/24', '10.9.0.5/24', 'fd00::1/128', 'fd00::1:0/112', '0.0.0.0/0', 'x', '10.1.0.0/24', '10.9.0.0/024'];

function basePeer(i: number, extra: string[]): RawPeer {
  const p: RawPeer = { publicKey: POOL[2 + (i % (POOL.length - 2))].pub, allowedIPs: [`10.1.${i}.0/24`, ...extra] };
  if (i % 3 === 0) p.name = `site-${i}`;
  if (i % 4 === 1) p.endpoint = `192.0.2.${i + 1}:51820`;
  if (i % 5 === 2) p.persistentKeepalive = 25;
  return p;
}

function write(raw: RawConfig, mode = 0o600): string {
  return writeFile(dir, 'tunvpn.json', JSON.stringify(raw, null, 1), mode);
}

type Outcome = { config: TunvpnConfig } | { error: { message: string; issues: unknown; omitted: number } };

async function outcome(load: () => Promise<TunvpnConfig>): Promise<Outcome> {
  try {
    return { config: await load() };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { error: { message: err.message, issues: err.issues, omitted: err.omitted } };
  }
}

/** An edit: a kind and two numbers that pick the peer and the value. */
const EDITS = [
  'keepalive',
  'name',
  'dropName',
  'prefix',
  'addPrefix',
  'endpoint',
  'key',
  'ownKey',
  'badKey',
  'append',
  'remove',
  'swap',
  'pskFile',
  'pskInline',
  'rotatePsk',
  'rotatePrivate',
  'listenPort',
  'addresses',
  'mtu',
  'log',
  'unknownPeerKey',
  'unknownRootKey',
  'notObject',
  'chmod',
  'freshPrefix',
  'freshKeepalive',
  'repair',
  'noop',
] as const;
/** The edits a reload of a working config mostly is: they keep it valid (or make it so again). */
const BENIGN = ['freshPrefix', 'freshKeepalive', 'repair', 'noop', 'rotatePrivate', 'rotatePsk', 'append', 'swap'] as const;
type Edit = [(typeof EDITS)[number], number, number];

/** Applies `edit` to `raw` (and to the files beside it); returns the file's mode to write with. */
function applyEdit(raw: RawConfig, [kind, a, b]: Edit, mode: number): number {
  const n = raw.peers.length;
  const peer = (): RawPeer => {
    const p = raw.peers[a % n];
    if (typeof p === 'object' && p !== null && !Array.isArray(p)) return p as RawPeer;
    const fresh = basePeer(a % n, []);
    raw.peers[a % n] = fresh;
    return fresh;
  };
  switch (kind) {
    case 'keepalive':
      if (n > 0) peer().persistentKeepalive = [0, 25, 70000, 1.5][b % 4];
      break;
    case 'name':
      if (n > 0) peer().name = NAMES[b % NAMES.length];
      break;
    case 'dropName':
      if (n > 0) delete peer().name;
      break;
    case 'prefix':
      if (n > 0) peer().allowedIPs = [`10.1.${b % 24}.0/24`];
      break;
    case 'addPrefix':
      if (n > 0) (peer().allowedIPs as unknown[]).push(EXTRA_PREFIXES[b % EXTRA_PREFIXES.length]);
      break;
    case 'endpoint':
      if (n > 0) peer().endpoint = ENDPOINTS[b % ENDPOINTS.length];
      break;
    case 'key':
      if (n > 0) peer().publicKey = POOL[2 + (b % (POOL.length - 2))].pub;
      break;
    case 'ownKey':
      if (n > 0) peer().publicKey = b % 2 === 0 ? OWN.pub : POOL[1].pub;
      break;
    case 'badKey':
      if (n > 0) peer().publicKey = 'abc';
      break;
    case 'append':
      raw.peers.push(basePeer(20 + (b % 30), b % 3 === 0 ? [EXTRA_PREFIXES[b % EXTRA_PREFIXES.length]] : []));
      break;
    case 'remove':
      if (n > 0) raw.peers.splice(a % n, 1);
      break;
    case 'swap':
      if (n > 1) [raw.peers[a % n], raw.peers[b % n]] = [raw.peers[b % n], raw.peers[a % n]];
      break;
    case 'pskFile':
      if (n > 0) peer().presharedKeyFile = ['psk.key', 'psk-open.key', 'missing.key'][b % 3];
      break;
    case 'pskInline':
      if (n > 0) peer().presharedKey = POOL[5 + (b % 5)].pub;
      break;
    case 'rotatePsk':
      writeFile(dir, 'psk.key', `${POOL[3 + (b % 10)].pub}\n`);
      break;
    case 'rotatePrivate':
      writeFile(dir, 'private.key', `${(b % 2 === 0 ? OWN : POOL[1]).priv}\n`);
      break;
    case 'listenPort':
      raw.interface.listenPort = [51820, 51821, 70000][b % 3];
      break;
    case 'addresses':
      raw.interface.addresses = [['10.0.0.1/24'], ['10.0.0.1/24', '10.0.0.1/24'], ['fd62::1/64', '10.0.0.1/24'], ['bad']][b % 4];
      break;
    case 'mtu':
      raw.interface.mtu = [1420, 1200, 1280][b % 3];
      break;
    case 'log':
      raw.log = { level: ['info', 'debug', 'loud'][b % 3] };
      break;
    case 'unknownPeerKey':
      if (n > 0) peer()[b % 2 === 0 ? 'allowedIps' : 'bogus'] = 1;
      break;
    case 'unknownRootKey':
      raw[b % 2 === 0 ? 'extra' : 'peer'] = {};
      break;
    case 'notObject':
      if (n > 0) raw.peers[a % n] = [5, null, 'peer'][b % 3];
      break;
    case 'chmod':
      return b % 2 === 0 ? 0o600 : 0o640;
    case 'freshPrefix':
      // A prefix no other edit hands out: the change a reload of a hub usually is.
      if (n > 0) peer().allowedIPs = [`10.${60 + (b % 100)}.${a % 250}.0/24`];
      break;
    case 'freshKeepalive':
      if (n > 0) peer().persistentKeepalive = b % 60;
      break;
    case 'repair':
      // Peer a back to what it was made as (clears what broke it).
      if (n > 0) raw.peers[a % n] = basePeer(a % n, []);
      break;
    case 'noop':
      break;
  }
  return mode;
}

const editArb: fc.Arbitrary<Edit> = fc.tuple(
  fc.oneof({ arbitrary: fc.constantFrom(...EDITS), weight: 1 }, { arbitrary: fc.constantFrom(...BENIGN), weight: 2 }),
  fc.nat(1000),
  fc.nat(1000),
);

function reset(): void {
  writeFile(dir, 'private.key', `${OWN.priv}\n`);
  writeFile(dir, 'psk.key', `${POOL[3].pub}\n`);
  writeFile(dir, 'psk-open.key', `${POOL[4].pub}\n`, 0o644);
  rmSync(join(dir, 'missing.key'), { force: true });
}

/** The memo's maps and per-peer state, for comparing the memo an incremental load leaves with a full load's. */
function memoState(m: ConfigMemo | undefined): unknown {
  if (m === undefined) return undefined;
  return {
    names: [...m.names].sort(),
    publicKeys: [...m.publicKeys].sort(),
    prefixOwner: [...m.prefixOwner].sort(),
    peers: m.peers,
    reusable: [...m.reusable],
    rawPeers: m.rawPeers,
  };
}

describe('incremental load: exactly the full load', () => {
  it('gives the full load’s config or errors, and the same memo, along random chains of edits', async () => {
    let steps = 0;
    let incremental = 0;
    let reusedPeers = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 14 }),
        fc.array(fc.constantFrom(...EXTRA_PREFIXES.slice(0, 5)), { maxLength: 2 }),
        fc.boolean(),
        fc.array(fc.array(editArb, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 6 }),
        async (count, extra, inlinePrivate, chain) => {
          reset();
          const raw: RawConfig = {
            interface: inlinePrivate ? { privateKey: OWN.priv, addresses: ['10.0.0.1/24'] } : { privateKeyFile: 'private.key', addresses: ['10.0.0.1/24'] },
            peers: Array.from({ length: count }, (_, i) => basePeer(i, i === 0 ? extra : [])),
          };
          let mode = 0o600;
          const path = write(raw, mode);
          let memo: ConfigMemo | undefined;
          let running: TunvpnConfig | undefined;
          try {
            const first = await loadConfigMemo(path);
            memo = first.memo;
            running = first.config;
          } catch (err) {
            if (!(err instanceof ConfigError)) throw err;
          }
          for (const edits of chain) {
            for (const e of edits) mode = applyEdit(raw, e, mode);
            write(raw, mode);
            chmodSync(path, mode);
            let taken: { incremental: boolean; reused: number; memo: ConfigMemo | undefined } | undefined;
            const inc = await outcome(async () => {
              const r = await loadConfigMemo(path, { memo });
              taken = r;
              return r.config;
            });
            const full = await outcome(() => loadConfig(path));
            expect(inc).toStrictEqual(full);
            steps++;
            if (taken !== undefined) {
              if (taken.incremental) incremental++;
              reusedPeers += taken.reused;
              // The memo left for the next load is the one a full load would leave.
              expect(memoState(taken.memo)).toStrictEqual(memoState((await loadConfigMemo(path)).memo));
              // As the daemon does after an apply: the superseded config's secrets are zeroed.
              if (running !== undefined) wipeConfigSecrets(running);
              running = (inc as { config: TunvpnConfig }).config;
              memo = taken.memo;
            }
          }
        },
      ),
      { numRuns: 250 },
    );
    // The property is only worth something if the incremental path ran, and reused peers.
    expect(incremental).toBeGreaterThan(steps / 3);
    expect(reusedPeers).toBeGreaterThan(steps);
  }, 120_000);
});

describe('incremental load: the path is taken', () => {
  const PEERS = 200;
  const hub = (): RawConfig => ({
    interface: { privateKeyFile: 'private.key', addresses: ['10.0.0.1/16'] },
    peers: Array.from({ length: PEERS }, (_, i) => ({
      publicKey: keyOf(i),
      allowedIPs: [`10.0.${Math.floor(i / 250)}.${(i % 250) + 1}/32`, `10.${128 + Math.floor(i / 256)}.${i % 256}.0/24`],
    })),
  });

  it('reuses every unchanged peer’s object, checks only the changed one, and the diff sees the same objects', async () => {
    reset();
    const raw = hub();
    const path = write(raw);
    const first = await loadConfigMemo(path);
    expect(first.incremental).toBe(false);
    expect(first.memo).toBeDefined();
    (raw.peers[77] as RawPeer).allowedIPs = ['10.0.0.78/32', '10.200.0.0/24'];
    write(raw);
    const second = await loadConfigMemo(path, { memo: first.memo });
    expect(second).toMatchObject({ incremental: true, reused: PEERS - 1, rewalked: 1 });
    expect(first.memo?.consumed).toBe(true);
    for (let i = 0; i < PEERS; i++) {
      if (i === 77) expect(second.config.peers[i]).not.toBe(first.config.peers[i]);
      else expect(second.config.peers[i]).toBe(first.config.peers[i]);
    }
    expect(second.config).toStrictEqual(await loadConfig(path));
    const diff = diffConfig(first.config, second.config);
    expect(diff.changed.map((c) => [c.after.publicKey, c.fields])).toEqual([[keyOf(77), ['allowedIPs']]]);
    expect(diff.unchanged).toHaveLength(PEERS - 1);

    // A peer appended: the others reused again (the memo the second load left).
    raw.peers.push({ publicKey: keyOf(PEERS), allowedIPs: ['10.250.0.0/24'] });
    write(raw);
    const third = await loadConfigMemo(path, { memo: second.memo });
    expect(third).toMatchObject({ incremental: true, reused: PEERS, rewalked: 1 });
    expect(third.config.peers[77]).toBe(second.config.peers[77]);
  });

  it('falls back to the full load, with its messages, for a warning, an error, a shorter list, another file or a spent memo', async () => {
    reset();
    const raw = hub();
    const path = write(raw);
    const first = await loadConfigMemo(path);

    // A prefix another peer has: a warning, so the full load makes it.
    (raw.peers[5] as RawPeer).allowedIPs = ['10.0.0.6/32', '10.128.9.0/24'];
    write(raw);
    const conflict = await loadConfigMemo(path, { memo: first.memo });
    expect(conflict.incremental).toBe(false);
    expect(conflict.config.warnings).toEqual([
      'peers[9].allowedIPs[1]: conflict: 10.128.9.0/24 is also an allowed IP of peers[5]; the later peer, peers[9], gets it (as in WireGuard)',
    ]);
    expect(conflict.memo).toBeUndefined(); // a load with a warning about a peer leaves none

    (raw.peers[5] as RawPeer).allowedIPs = ['10.0.0.6/32', '10.128.5.0/24'];
    write(raw);
    const clean = await loadConfigMemo(path);
    (raw.peers[150] as RawPeer).persistentKeepalive = -1;
    write(raw);
    const bad = await outcome(async () => (await loadConfigMemo(path, { memo: clean.memo })).config);
    expect(bad).toStrictEqual(await outcome(() => loadConfig(path)));
    expect('error' in bad).toBe(true);
    // That load spent the memo: the next one is full.
    expect(clean.memo?.consumed).toBe(true);
    delete (raw.peers[150] as RawPeer).persistentKeepalive;
    write(raw);
    expect((await loadConfigMemo(path, { memo: clean.memo })).incremental).toBe(false);

    const again = await loadConfigMemo(path);
    raw.peers.pop();
    write(raw);
    expect((await loadConfigMemo(path, { memo: again.memo })).incremental).toBe(false);

    const other = await loadConfigMemo(path);
    const otherPath = writeFile(dir, 'other.json', JSON.stringify(raw));
    expect((await loadConfigMemo(otherPath, { memo: other.memo })).incremental).toBe(false);
  });

  it('keeps its own peer list: a config’s list changed after the load does not reach the next load', async () => {
    reset();
    const raw = hub();
    const path = write(raw);
    const first = await loadConfigMemo(path);
    first.config.peers.splice(0, 10);
    (raw.peers[42] as RawPeer).persistentKeepalive = 25;
    write(raw);
    const second = await loadConfigMemo(path, { memo: first.memo });
    expect(second).toMatchObject({ incremental: true, reused: PEERS - 1, rewalked: 1 });
    expect(second.config).toStrictEqual(await loadConfig(path));
  });

  it('reads the private key file on every load and never reuses a peer with a preshared key', async () => {
    reset();
    const raw = hub();
    (raw.peers[3] as RawPeer).presharedKeyFile = 'psk.key';
    const path = write(raw);
    const first = await loadConfigMemo(path);
    writeFile(dir, 'private.key', `${POOL[1].priv}\n`);
    writeFile(dir, 'psk.key', `${POOL[9].pub}\n`);
    const second = await loadConfigMemo(path, { memo: first.memo });
    expect(second).toMatchObject({ incremental: true, reused: PEERS - 1, rewalked: 1 });
    expect(Buffer.from(second.config.interface.privateKey)).toEqual(Buffer.from(POOL[1].priv, 'base64'));
    expect(Buffer.from(second.config.peers[3].presharedKey ?? [])).toEqual(Buffer.from(POOL[9].pub, 'base64'));
    expect(second.config.peers[3]).not.toBe(first.config.peers[3]);
    // The first config's secrets wiped (as after an apply) leave the second's intact.
    wipeConfigSecrets(first.config);
    expect(Buffer.from(second.config.peers[3].presharedKey ?? [])).toEqual(Buffer.from(POOL[9].pub, 'base64'));
  });
});

describe('jsonEqual', () => {
  it('is deep equality of JSON values, keys as sets, -0 apart from 0', () => {
    expect(jsonEqual({ a: [1, 'x', null, { b: true }] }, { a: [1, 'x', null, { b: true }] })).toBe(true);
    expect(jsonEqual({ a: 1, b: 2 }, { b: 2, a: 1 })).toBe(true);
    expect(jsonEqual({ a: 1 }, { a: 1, b: undefined })).toBe(false);
    expect(jsonEqual({ a: 1, b: 2 }, { a: 1 })).toBe(false);
    expect(jsonEqual([1, 2], [1, 2, 3])).toBe(false);
    expect(jsonEqual([], {})).toBe(false);
    expect(jsonEqual(0, -0)).toBe(false);
    expect(jsonEqual('1', 1)).toBe(false);
    expect(jsonEqual(null, {})).toBe(false);
    expect(jsonEqual(JSON.parse('{"__proto__": 1}'), JSON.parse('{"__proto__": 2}'))).toBe(false);
    expect(jsonEqual(JSON.parse('{"__proto__": 1}'), {})).toBe(false);
  });
});

/** A distinct, valid public key per index (the pool is small; these need not be X25519 points of anyone's). */
function keyOf(i: number): string {
  const b = Buffer.alloc(32);
  b.writeUInt32BE(i + 1, 0);
  b[31] = 0x40;
  return b.toString('base64');
}
