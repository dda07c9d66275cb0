/**
 * The lazy merge (issue 14 item 4, `wg set` on a routed hub): peers a
 * request does not touch come out as the very same PeerConfig objects, so
 * the daemon's diff skips them, and the result is otherwise exactly what
 * the merge that drafted every peer gave. That merge is the oracle here,
 * copied unchanged into uapi-apply-reference.ts.
 *
 * The differential test draws random configs (prefixes claimed by two
 * peers or listed twice by one, preshared keys, our own public key as a
 * peer) and random requests (every op kind in random order, prefixes moved
 * between peers, removals and re-creation, replace_peers, our own key,
 * private keys that clash) and wants the same config, the same `recreated`
 * set and the same error from both. The sharing tests failed before the
 * lazy merge: every peer was a new object.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { PeerConfig, TunvpnConfig } from '../../src/config/index.js';
import { diffConfig } from '../../src/config/diff.js';
import { type MergeContext, type MergeResult, mergeUapiRequest, wipeConfigSecrets } from '../../src/control/uapi-apply.js';
import { UapiError, type UapiDeviceOp, type UapiPeerOp, type UapiPeerSection, type UapiSetRequest } from '../../src/control/uapi-types.js';
import { Yielder } from '../../src/cooperative.js';
import { loadCrypto } from '../../src/crypto/index.js';
import type { CryptoBackend } from '../../src/crypto/types.js';
import { Rng } from '../../bench/lib/config-fuzz.js';
import { referenceMergeUapiRequest } from './uapi-apply-reference.js';

let crypto: CryptoBackend;
let ctx: MergeContext;

beforeAll(async () => {
  crypto = await loadCrypto('auto');
  ctx = { publicKeyOf: (k) => crypto.publicKey(k) };
});

const b64 = (k: Uint8Array): string => Buffer.from(k).toString('base64');

/** The config fuzzer's seeded generator (mulberry32), so a failing case can be replayed from its seed. */
type Gen = Rng;

/** A 32-byte key as a plain Uint8Array, as the control socket's parser hands keys over. */
function key32(g: Gen): Uint8Array {
  return Uint8Array.from(g.bytes(32));
}

interface Pools {
  /** Private keys the interface or a request may use; their public keys are in `peerKeys` too (own-key sections, clashes). */
  privateKeys: Uint8Array[];
  peerKeys: Uint8Array[];
  prefixes: string[];
}

/** Small pools by default (collisions everywhere); larger ones cross the merge's 64-item steps. */
function makePools(g: Gen, otherKeys = 6, extraPrefixes = 0): Pools {
  const privateKeys = [0, 1, 2].map(() => crypto.generatePrivateKey());
  const peerKeys = [...privateKeys.map((k) => crypto.publicKey(k))];
  for (let i = 0; i < otherKeys; i++) peerKeys.push(key32(g));
  const prefixes = ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24', '10.0.3.0/24', '10.1.0.0/16', '192.168.7.1/32', 'fd00::/64', 'fd00:1::/64'];
  for (let i = 0; i < extraPrefixes; i++) prefixes.push(`10.${100 + (i >> 8)}.${i & 255}.0/24`);
  return { privateKeys, peerKeys, prefixes };
}

function randomPeer(g: Gen, pools: Pools, k: Uint8Array, maxPrefixes: number): PeerConfig {
  const allowedIPs: string[] = [];
  // Duplicates within a peer and across peers on purpose: a hand-built or
  // older config can have them, and the merge normalises them.
  for (let n = g.int(maxPrefixes + 1); n > 0; n--) allowedIPs.push(g.pick(pools.prefixes));
  const p: PeerConfig = { publicKey: b64(k), publicKeyBytes: Uint8Array.from(k), allowedIPs, persistentKeepalive: g.pick([0, 0, 25]) };
  if (g.chance(0.3)) p.name = `site-${g.int(100)}`;
  if (g.chance(0.35)) p.presharedKey = key32(g);
  if (g.chance(0.4)) p.endpoint = { host: g.pick(['192.0.2.1', '2001:db8::1', 'hub.example']), port: 51820 + g.int(3) };
  return p;
}

function randomConfig(g: Gen, pools: Pools, maxPrefixes = 3, bigPeer = 0): TunvpnConfig {
  const privateKey = Uint8Array.from(g.pick(pools.privateKeys));
  const own = b64(crypto.publicKey(privateKey));
  const peers: PeerConfig[] = [];
  for (const k of pools.peerKeys) {
    // Our own public key as a peer only now and then (the loader refuses it; the merge must still agree).
    if (b64(k) === own && !g.chance(0.1)) continue;
    if (g.chance(0.6)) peers.push(randomPeer(g, pools, k, maxPrefixes));
  }
  // One peer with many prefixes: the pass ends and resumes inside its list.
  if (bigPeer > 0 && peers.length > 0) peers[g.int(peers.length)].allowedIPs = Array.from({ length: g.int(bigPeer) }, () => g.pick(pools.prefixes));
  // Config order is not key order.
  for (let i = peers.length - 1; i > 0; i--) {
    const j = g.int(i + 1);
    [peers[i], peers[j]] = [peers[j], peers[i]];
  }
  return {
    interface: { name: 'tv0', privateKey, listenPort: 51820, addresses: ['10.9.0.1/24'], mtu: 1420, fwmark: 0, table: 'auto' },
    peers,
    log: { level: 'info' },
    metrics: {},
    crypto: { backend: 'auto' },
    warnings: ['peers[1].allowedIPs[0]: a warning the merge drops'],
  };
}

function randomDeviceOp(g: Gen, pools: Pools, current: TunvpnConfig): UapiDeviceOp {
  switch (g.int(7)) {
    case 0:
      return { kind: 'private-key', key: g.chance(0.05) ? null : Uint8Array.from(g.pick(pools.privateKeys)) };
    case 1:
      return { kind: 'private-key', key: Uint8Array.from(current.interface.privateKey) };
    case 2:
      return { kind: 'listen-port', port: g.int(65536) };
    case 3:
      return { kind: 'fwmark', mark: g.pick([0, 7, 0xffffffff]) };
    default:
      return { kind: 'replace-peers' };
  }
}

function randomPeerOp(g: Gen, pools: Pools): UapiPeerOp {
  switch (g.int(12)) {
    case 0:
      return { kind: 'remove' };
    case 1:
      return { kind: 'update-only' };
    case 2:
      return { kind: 'preshared-key', key: g.chance(0.3) ? null : key32(g) };
    case 3:
      return { kind: 'endpoint', endpoint: { host: g.pick(['198.51.100.4', 'fe80::1%eth0']), port: 1 + g.int(65535) } };
    case 4:
      return { kind: 'persistent-keepalive', seconds: g.pick([0, 15, 25]) };
    case 5:
      return { kind: 'replace-allowed-ips' };
    default:
      return { kind: 'allowed-ip', cidr: g.pick(pools.prefixes) };
  }
}

function randomRequest(g: Gen, pools: Pools, current: TunvpnConfig, maxSections = 5): UapiSetRequest {
  const device: UapiDeviceOp[] = [];
  // replace_peers rarely: it makes every peer a new one and hides the rest.
  for (let n = g.int(3); n > 0; n--) {
    const op = randomDeviceOp(g, pools, current);
    if (op.kind !== 'replace-peers' || g.chance(0.25)) device.push(op);
  }
  const peers: UapiPeerSection[] = [];
  for (let n = g.int(maxSections + 1); n > 0; n--) {
    const ops: UapiPeerOp[] = [];
    for (let m = g.int(5); m > 0; m--) ops.push(randomPeerOp(g, pools));
    peers.push({ publicKey: Uint8Array.from(g.pick(pools.peerKeys)), ops });
  }
  return { device, peers };
}

type Outcome = { ok: true; result: MergeResult } | { ok: false; errno: number; message: string };

async function outcome(run: Promise<MergeResult>): Promise<Outcome> {
  try {
    return { ok: true, result: await run };
  } catch (err) {
    if (!(err instanceof UapiError)) throw err;
    return { ok: false, errno: err.errno, message: err.message };
  }
}

/** Every secret buffer of a config, to check what the result shares with `current` and the request. */
function secretBuffers(c: TunvpnConfig): Uint8Array[] {
  const out = [c.interface.privateKey];
  for (const p of c.peers) if (p.presharedKey !== undefined) out.push(p.presharedKey);
  return out;
}

function requestBuffers(r: UapiSetRequest): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const op of r.device) if (op.kind === 'private-key' && op.key !== null) out.push(op.key);
  for (const s of r.peers) for (const op of s.ops) if (op.kind === 'preshared-key' && op.key !== null) out.push(op.key);
  return out;
}

/**
 * Canonical text of a value, strict as toStrictEqual (a key present with
 * undefined is not an absent key; a Uint8Array is its bytes): vitest's deep
 * equality took a millisecond per config, most of the test's time.
 */
function canon(v: unknown): string {
  if (v instanceof Uint8Array) return `u8:${Buffer.from(v).toString('hex')}`;
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canon((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

interface Tally {
  refused: number;
  shared: number;
  recreated: number;
}

/** One differential round: the oracle and the lazy merge on the same input, and what the daemon does next. */
async function compareOnce(current: TunvpnConfig, request: UapiSetRequest, yielder: Yielder | undefined, label: string, tally: Tally): Promise<void> {
  const before = structuredClone(current);
  const beforeText = canon(current);
  const requestText = canon(request);
  const want = await outcome(referenceMergeUapiRequest(current, request, ctx));
  expect(canon(current), label).toBe(beforeText);
  const got = await outcome(mergeUapiRequest(current, request, { ...ctx, yielder }));
  expect(canon(current), label).toBe(beforeText);
  expect(canon(request), label).toBe(requestText);
  if (!want.ok || !got.ok) {
    expect(canon(got), label).toBe(canon(want));
    tally.refused++;
    return;
  }
  expect(canon(got.result.config), label).toBe(canon(want.result.config));
  // As sets: the daemon's diff only asks has() (the oracle iterates in removal order, the lazy merge in creation order).
  expect([...got.result.recreated].sort(), label).toStrictEqual([...want.result.recreated].sort());
  tally.recreated += got.result.recreated.size;

  // Sharing: a peer object of `current` only without a preshared key;
  // no secret buffer shared with `current` or the request.
  const old = new Set(current.peers);
  for (const p of got.result.config.peers) {
    if (old.has(p)) {
      tally.shared++;
      expect(p.presharedKey, label).toBeUndefined();
    }
  }
  const mine = secretBuffers(got.result.config);
  const theirs = new Set([...secretBuffers(current), ...requestBuffers(request)]);
  expect(
    mine.some((buf) => theirs.has(buf)),
    label,
  ).toBe(false);

  // What the daemon does next: wipe the old config after a successful
  // apply, or the new one after a refused apply. Neither reaches the other.
  const next = got.result.config;
  const nextSecrets = canon(secretBuffers(next));
  wipeConfigSecrets(current);
  expect(canon(secretBuffers(next)), label).toBe(nextSecrets);
  const again = await mergeUapiRequest(before, request, ctx);
  const beforeSecrets = canon(secretBuffers(before));
  wipeConfigSecrets(again.config);
  expect(canon(secretBuffers(before)), label).toBe(beforeSecrets);
}

describe('the lazy merge against the merge that drafted every peer (differential)', () => {
  const seed = Number(process.env.UAPI_MERGE_SEED ?? 0x5eed14);

  it('same config, same recreated set, same errors, over 4,000 small random configs and requests', async () => {
    const g = new Rng(seed);
    const pools = makePools(g);
    const tally: Tally = { refused: 0, shared: 0, recreated: 0 };
    for (let round = 0; round < 4000; round++) {
      const current = randomConfig(g, pools);
      const request = randomRequest(g, pools, current);
      // Half the rounds with a zero-length slice: every clock check pauses, the result must not change.
      await compareOnce(current, request, round % 2 === 0 ? new Yielder(0) : undefined, `seed ${seed} round ${round}`, tally);
    }
    // The draw covers what it means to: refusals, shared peers, recreated ones.
    expect(tally.refused).toBeGreaterThan(50);
    expect(tally.shared).toBeGreaterThan(1000);
    expect(tally.recreated).toBeGreaterThan(50);
  });

  it('the same over 150 configs of up to 300 peers (the merge works in steps of 64 items; one peer with up to 200 prefixes)', async () => {
    const g = new Rng(seed + 1);
    const pools = makePools(g, 300, 400);
    const tally: Tally = { refused: 0, shared: 0, recreated: 0 };
    for (let round = 0; round < 150; round++) {
      const current = randomConfig(g, pools, 4, 200);
      const request = randomRequest(g, pools, current, g.pick([2, 5, 40]));
      await compareOnce(current, request, round % 2 === 0 ? new Yielder(0) : undefined, `seed ${seed + 1} big round ${round}`, tally);
    }
    expect(tally.shared).toBeGreaterThan(5000);
    expect(tally.recreated).toBeGreaterThan(5);
  });
});

describe('the lazy merge shares untouched peers', () => {
  /** A hub: n peers with one /24 each; every tenth has a preshared key. */
  function hub(n: number): TunvpnConfig {
    const peers: PeerConfig[] = [];
    for (let i = 0; i < n; i++) {
      const k = new Uint8Array(32);
      k[0] = 1;
      k[1] = i >> 8;
      k[2] = i & 255;
      const p: PeerConfig = { publicKey: b64(k), publicKeyBytes: k, allowedIPs: [`10.${100 + (i >> 8)}.${i & 255}.0/24`], persistentKeepalive: 0 };
      if (i % 10 === 3) p.presharedKey = new Uint8Array(32).fill(i & 255);
      if (i % 7 === 0) p.endpoint = { host: '192.0.2.1', port: 40000 + i };
      peers.push(p);
    }
    return {
      interface: { name: 'tv0', privateKey: crypto.generatePrivateKey(), listenPort: 51820, addresses: ['10.9.0.1/24'], mtu: 1420, fwmark: 0, table: 'auto' },
      peers,
      log: { level: 'info' },
      metrics: {},
      crypto: { backend: 'auto' },
      warnings: [],
    };
  }

  it('a `wg set` that moves one /24 leaves every other peer the same object, but those with a preshared key', async () => {
    const cur = hub(1000);
    const mover = cur.peers[500];
    const victim = cur.peers[20];
    // wg set tv0 peer <500> allowed-ips <20's /24>: replace, then take the prefix from peer 20.
    const request: UapiSetRequest = {
      device: [],
      peers: [{ publicKey: Uint8Array.from(mover.publicKeyBytes), ops: [{ kind: 'replace-allowed-ips' }, { kind: 'allowed-ip', cidr: victim.allowedIPs[0] }] }],
    };
    const { config: next } = await mergeUapiRequest(cur, request, ctx);
    expect(next.peers).toHaveLength(1000);
    let same = 0;
    for (let i = 0; i < 1000; i++) {
      const was = cur.peers[i];
      const now = next.peers[i];
      expect(now.publicKey).toBe(was.publicKey);
      if (i === 500 || i === 20 || was.presharedKey !== undefined) {
        expect(now).not.toBe(was);
        if (was.presharedKey !== undefined) {
          expect(now.presharedKey).toEqual(was.presharedKey);
          expect(now.presharedKey).not.toBe(was.presharedKey);
        }
      } else {
        expect(now).toBe(was);
        same++;
      }
    }
    expect(same).toBe(1000 - 100 - 2);
    expect(next.peers[500].allowedIPs).toEqual([victim.allowedIPs[0]]);
    expect(next.peers[20].allowedIPs).toEqual([]);
    // So the diff sees two changed peers and compares no other (the same objects).
    const diff = diffConfig(cur, next);
    expect(diff.changed.map((c) => c.after.publicKey)).toEqual([victim.publicKey, mover.publicKey]);
    expect(diff.unchanged).toHaveLength(998);
    // The daemon wipes the old config once the change is applied: the new one keeps every preshared key.
    wipeConfigSecrets(cur);
    expect(next.peers[3].presharedKey).toEqual(new Uint8Array(32).fill(3));
  });

  it('a peer whose prefix a later peer also lists, or that lists one twice, is a new object with the list the oracle gives', async () => {
    const cur = hub(10);
    cur.peers[1] = { ...cur.peers[1], allowedIPs: ['10.100.1.0/24', '10.100.8.0/24'] };
    cur.peers[2] = { ...cur.peers[2], allowedIPs: ['10.100.2.0/24', '10.100.2.0/24'] };
    const request: UapiSetRequest = { device: [{ kind: 'listen-port', port: 1 }], peers: [] };
    const got = await mergeUapiRequest(cur, request, ctx);
    const want = await referenceMergeUapiRequest(cur, request, ctx);
    expect(got.config).toStrictEqual(want.config);
    expect(got.config.peers[1].allowedIPs).toEqual(['10.100.1.0/24']);
    expect(got.config.peers[2].allowedIPs).toEqual(['10.100.2.0/24']);
    expect(got.config.peers[1]).not.toBe(cur.peers[1]);
    expect(got.config.peers[2]).not.toBe(cur.peers[2]);
    expect(got.config.peers[8]).toBe(cur.peers[8]);
  });

  it('replace_peers shares nothing; a section for a peer gives a new object even when it changes nothing', async () => {
    const cur = hub(20);
    const k = Uint8Array.from(cur.peers[5].publicKeyBytes);
    const replaced = await mergeUapiRequest(cur, { device: [{ kind: 'replace-peers' }], peers: [{ publicKey: k, ops: [] }] }, ctx);
    expect(replaced.config.peers).toHaveLength(1);
    expect(replaced.config.peers[0]).not.toBe(cur.peers[5]);
    expect([...replaced.recreated]).toEqual([cur.peers[5].publicKey]);
    const touched = await mergeUapiRequest(cur, { device: [], peers: [{ publicKey: k, ops: [{ kind: 'update-only' }] }] }, ctx);
    expect(touched.config.peers[5]).not.toBe(cur.peers[5]);
    expect(touched.config.peers[5]).toStrictEqual(
      (await referenceMergeUapiRequest(cur, { device: [], peers: [{ publicKey: k, ops: [{ kind: 'update-only' }] }] }, ctx)).config.peers[5],
    );
    expect(touched.config.peers[6]).toBe(cur.peers[6]);
  });
});
