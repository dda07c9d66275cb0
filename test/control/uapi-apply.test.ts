/**
 * mergeUapiRequest: a `set` replayed line by line against the effective
 * config, with wireguard-go's semantics (device/uapi.go), in linear time.
 * The cases named "issue 17 item N" failed before the ordered-ops merge.
 */
import { randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { PeerConfig, TunvpnConfig } from '../../src/config/index.js';
import { mergeUapiRequest, wipeConfigSecrets, wipeRequestSecrets, type MergeContext } from '../../src/control/uapi-apply.js';
import { Yielder } from '../../src/cooperative.js';
import { diffConfig, diffConfigSliced } from '../../src/config/diff.js';
import { loadCrypto } from '../../src/crypto/index.js';
import type { CryptoBackend } from '../../src/crypto/types.js';
import { UapiError, type UapiDeviceOp, type UapiPeerOp, type UapiPeerSection, type UapiSetRequest } from '../../src/control/uapi-types.js';

const key = (): Uint8Array => new Uint8Array(randomBytes(32));
const b64 = (k: Uint8Array): string => Buffer.from(k).toString('base64');
const zero = (k: Uint8Array | undefined): boolean => k?.every((x) => x === 0) ?? false;

let crypto: CryptoBackend;
let ctx: MergeContext;

beforeAll(async () => {
  crypto = await loadCrypto('auto');
  ctx = { publicKeyOf: (k) => crypto.publicKey(k) };
});

function peer(k: Uint8Array, allowedIPs: string[], extra: Partial<PeerConfig> = {}): PeerConfig {
  return { publicKey: b64(k), publicKeyBytes: k, allowedIPs, persistentKeepalive: 0, ...extra };
}

function config(peers: PeerConfig[], privateKey = crypto.generatePrivateKey()): TunvpnConfig {
  return {
    interface: { name: 'tv0', privateKey, listenPort: 51820, addresses: ['10.0.0.1/24'], mtu: 1420, fwmark: 0, table: 'auto' },
    peers,
    log: { level: 'info' },
    metrics: {},
    crypto: { backend: 'auto' },
    warnings: [],
  };
}

const section = (k: Uint8Array, ...ops: UapiPeerOp[]): UapiPeerSection => ({ publicKey: k, ops });
const req = (device: UapiDeviceOp[], ...peers: UapiPeerSection[]): UapiSetRequest => ({ device, peers });
const allow = (cidr: string): UapiPeerOp => ({ kind: 'allowed-ip', cidr });

function byKey(c: TunvpnConfig, k: Uint8Array): PeerConfig | undefined {
  return c.peers.find((p) => p.publicKey === b64(k));
}

async function errnoOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(UapiError);
    return (err as UapiError).errno;
  }
  throw new Error('the merge did not refuse');
}

describe('mergeUapiRequest', () => {
  const [a, b, c] = [key(), key(), key()];

  it('adds, updates and removes peers without touching the current config', async () => {
    const cur = config([peer(a, ['10.0.0.2/32'], { name: 'a' }), peer(b, ['10.0.0.3/32'])]);
    const snapshot = JSON.stringify(cur);
    const { config: next, recreated } = await mergeUapiRequest(
      cur,
      req(
        [{ kind: 'listen-port', port: 4000 }],
        section(a, { kind: 'endpoint', endpoint: { host: '192.0.2.1', port: 9 } }, { kind: 'persistent-keepalive', seconds: 25 }, allow('10.1.0.0/16')),
        section(b, { kind: 'remove' }),
        section(c, allow('10.0.0.4/32'), { kind: 'preshared-key', key: key() }),
      ),
      ctx,
    );
    expect(JSON.stringify(cur)).toBe(snapshot);
    expect(recreated.size).toBe(0);
    expect(next.interface.listenPort).toBe(4000);
    expect(next.peers.map((p) => p.publicKey)).toEqual([b64(a), b64(c)]);
    expect(next.peers[0]).toMatchObject({
      name: 'a',
      endpoint: { host: '192.0.2.1', port: 9 },
      persistentKeepalive: 25,
      allowedIPs: ['10.0.0.2/32', '10.1.0.0/16'],
    });
    expect(next.peers[1].presharedKey).toHaveLength(32);
    expect(next.peers[1].endpoint).toBeUndefined();
  });

  it('moves an allowed IP from its owner (cryptokey routing), replaces lists, clears a preshared key', async () => {
    const cur = config([peer(a, ['10.0.0.2/32', '10.9.0.0/16'], { presharedKey: key() }), peer(b, ['10.0.0.3/32'])]);
    const { config: next } = await mergeUapiRequest(
      cur,
      req([], section(b, { kind: 'replace-allowed-ips' }, allow('10.9.0.0/16')), section(a, { kind: 'preshared-key', key: null })),
      ctx,
    );
    expect(next.peers[0].allowedIPs).toEqual(['10.0.0.2/32']);
    expect(next.peers[0].presharedKey).toBeUndefined();
    expect(next.peers[1].allowedIPs).toEqual(['10.9.0.0/16']);
  });

  it('honours replace_peers, update_only, and ignores a section for our own key', async () => {
    const cur = config([peer(a, ['10.0.0.2/32'])]);
    const own = crypto.publicKey(cur.interface.privateKey);
    const { config: next } = await mergeUapiRequest(
      cur,
      req([{ kind: 'replace-peers' }], section(b, { kind: 'update-only' }), section(own, allow('10.7.0.0/16')), section(c)),
      ctx,
    );
    expect(next.peers.map((p) => p.publicKey)).toEqual([b64(c)]);
    expect(next.peers[0].allowedIPs).toEqual([]);
  });

  it('update_only on an existing peer updates it', async () => {
    const cur = config([peer(a, [])]);
    const { config: next } = await mergeUapiRequest(cur, req([], section(a, { kind: 'update-only' }, allow('10.5.0.0/16'))), ctx);
    expect(next.peers[0].allowedIPs).toEqual(['10.5.0.0/16']);
  });

  it('refuses what tunvpn cannot do with EINVAL: clearing the private key', async () => {
    const cur = config([]);
    expect(await errnoOf(mergeUapiRequest(cur, req([{ kind: 'private-key', key: null }]), ctx))).toBe(-22);
  });

  it('fwmark=M sets the mark, fwmark=0 clears it, the last one in a request wins (wireguard-go)', async () => {
    const cur = config([]);
    const { config: set } = await mergeUapiRequest(cur, req([{ kind: 'fwmark', mark: 7 }]), ctx);
    expect(set.interface.fwmark).toBe(7);
    expect(cur.interface.fwmark).toBe(0);
    const { config: cleared } = await mergeUapiRequest(set, req([{ kind: 'fwmark', mark: 0 }]), ctx);
    expect(cleared.interface.fwmark).toBe(0);
    const { config: last } = await mergeUapiRequest(
      cur,
      req([
        { kind: 'fwmark', mark: 9 },
        { kind: 'fwmark', mark: 0xffffffff },
      ]),
      ctx,
    );
    expect(last.interface.fwmark).toBe(0xffffffff);
  });

  it('issue 17 item 2: private_key=K with public_key=pub(K) sets the key and ignores that section', async () => {
    const cur = config([peer(a, ['10.0.0.2/32'])]);
    const k = crypto.generatePrivateKey();
    const { config: next } = await mergeUapiRequest(cur, req([{ kind: 'private-key', key: k }], section(crypto.publicKey(k), allow('10.8.0.0/16'))), ctx);
    expect(Buffer.from(next.interface.privateKey).equals(Buffer.from(k))).toBe(true);
    expect(next.peers.map((p) => p.publicKey)).toEqual([b64(a)]);
    expect(next.peers[0].allowedIPs).toEqual(['10.0.0.2/32']);
  });

  it("issue 17 item 3 / issue 13 item 4: a private key whose public key is a peer's is refused (EINVAL), nothing changes", async () => {
    const kb = crypto.generatePrivateKey();
    const pb = crypto.publicKey(kb);
    const cur = config([peer(pb, ['10.0.0.3/32'])]);
    const snapshot = JSON.stringify(cur);
    expect(await errnoOf(mergeUapiRequest(cur, req([{ kind: 'private-key', key: kb }]), ctx))).toBe(-22);
    expect(JSON.stringify(cur)).toBe(snapshot);
    // ... unless replace_peers later in the same request removes that peer (wg setconf).
    const { config: next } = await mergeUapiRequest(cur, req([{ kind: 'private-key', key: kb }, { kind: 'replace-peers' }], section(a)), ctx);
    expect(next.peers.map((p) => p.publicKey)).toEqual([b64(a)]);
    // Setting the key we already have is no change, even with our own key as a "peer" line.
    const same = await mergeUapiRequest(cur, req([{ kind: 'private-key', key: Uint8Array.from(cur.interface.privateKey) }]), ctx);
    expect(same.config.peers).toHaveLength(1);
  });

  it('issue 17 item 4: a peer removed and re-added, or replace_peers then the same key, is a new peer', async () => {
    const psk = key();
    const cur = config([
      peer(a, ['10.0.0.2/32'], { name: 'site-a', endpoint: { host: '192.0.2.9', port: 51820 }, persistentKeepalive: 25, presharedKey: psk }),
    ]);
    for (const r of [req([], section(a, { kind: 'remove' }), section(a)), req([{ kind: 'replace-peers' }], section(a))]) {
      const { config: next, recreated } = await mergeUapiRequest(cur, r, ctx);
      expect([...recreated]).toEqual([b64(a)]);
      const p = byKey(next, a);
      expect(p).toEqual({ publicKey: b64(a), publicKeyBytes: a, allowedIPs: [], persistentKeepalive: 0 });
    }
    // The diff makes it removed + added, so the daemon builds a new peer.
    const again = await mergeUapiRequest(cur, req([{ kind: 'replace-peers' }], section(a)), ctx);
    const diff = diffConfig(cur, again.config, again.recreated);
    expect([diff.removed.length, diff.added.length, diff.recreated.length, diff.changed.length]).toEqual([1, 1, 1, 0]);
    expect(await diffConfigSliced(cur, again.config, again.recreated, new Yielder(0))).toEqual(diff);
    // A peer created by this request, removed and created again, is just added.
    const fresh = await mergeUapiRequest(cur, req([], section(b), section(b, { kind: 'remove' }), section(b)), ctx);
    expect(fresh.recreated.size).toBe(0);
    // Removed for good: not recreated.
    const gone = await mergeUapiRequest(cur, req([], section(a, { kind: 'remove' })), ctx);
    expect(gone.recreated.size).toBe(0);
    expect(gone.config.peers).toEqual([]);
  });

  it('issue 17 item 5: order within a section; an allowed_ip before replace_allowed_ips, remove or update_only still takes the prefix', async () => {
    const cur = (): TunvpnConfig => config([peer(a, []), peer(b, ['10.0.0.3/32', '10.4.0.0/16'])]);
    const replaced = await mergeUapiRequest(cur(), req([], section(a, allow('10.0.0.3/32'), { kind: 'replace-allowed-ips' }, allow('10.6.0.0/16'))), ctx);
    expect(byKey(replaced.config, a)?.allowedIPs).toEqual(['10.6.0.0/16']);
    expect(byKey(replaced.config, b)?.allowedIPs).toEqual(['10.4.0.0/16']);

    const removed = await mergeUapiRequest(cur(), req([], section(a, allow('10.0.0.3/32'), { kind: 'remove' }, allow('10.4.0.0/16'))), ctx);
    expect(byKey(removed.config, a)).toBeUndefined();
    // The line after remove belongs to a dummy: b keeps 10.4.0.0/16.
    expect(byKey(removed.config, b)?.allowedIPs).toEqual(['10.4.0.0/16']);

    const updateOnly = await mergeUapiRequest(cur(), req([], section(c, allow('10.4.0.0/16'), { kind: 'update-only' }, allow('10.0.0.3/32'))), ctx);
    expect(byKey(updateOnly.config, c)).toBeUndefined();
    expect(byKey(updateOnly.config, b)?.allowedIPs).toEqual(['10.0.0.3/32']);

    // The later of two sections for one key wins; the earlier one's prefixes stay.
    const twice = await mergeUapiRequest(
      cur(),
      req([], section(a, allow('10.0.0.3/32')), section(b, allow('10.0.0.3/32')), section(a, allow('10.2.0.0/16'))),
      ctx,
    );
    expect(byKey(twice.config, a)?.allowedIPs).toEqual(['10.2.0.0/16']);
    expect(byKey(twice.config, b)?.allowedIPs).toEqual(['10.4.0.0/16', '10.0.0.3/32']);
  });

  it('issue 17 item 7: after private_key=K, public_key=<the old own key> creates that peer', async () => {
    const cur = config([peer(a, [])]);
    const oldPublic = crypto.publicKey(cur.interface.privateKey);
    const { config: next } = await mergeUapiRequest(
      cur,
      req([{ kind: 'private-key', key: crypto.generatePrivateKey() }], section(oldPublic, allow('10.3.0.0/16'))),
      ctx,
    );
    expect(byKey(next, oldPublic)?.allowedIPs).toEqual(['10.3.0.0/16']);
  });

  it('keeps listen_port as given (the daemon decides whether that means a rebind)', async () => {
    const cur = config([]);
    cur.interface.listenPort = 0;
    const { config: next } = await mergeUapiRequest(
      cur,
      req([
        { kind: 'listen-port', port: 0 },
        { kind: 'listen-port', port: 40000 },
      ]),
      ctx,
    );
    expect(next.interface.listenPort).toBe(40000);
  });

  it('owns its key buffers: the result shares none with the current config or the request', async () => {
    const psk = key();
    const newPsk = key();
    const newPriv = crypto.generatePrivateKey();
    const cur = config([peer(a, [], { presharedKey: psk }), peer(b, [])]);
    const r = req([{ kind: 'private-key', key: newPriv }], section(b, { kind: 'preshared-key', key: newPsk }));
    const { config: next } = await mergeUapiRequest(cur, r, ctx);
    const newPrivCopy = Uint8Array.from(newPriv);
    const pskCopy = Uint8Array.from(psk);
    const newPskCopy = Uint8Array.from(newPsk);
    wipeRequestSecrets(r);
    expect(zero(newPriv) && zero(newPsk)).toBe(true);
    wipeConfigSecrets(cur);
    expect(zero(cur.interface.privateKey) && zero(psk)).toBe(true);
    expect(next.interface.privateKey).toEqual(newPrivCopy);
    expect(byKey(next, a)?.presharedKey).toEqual(pskCopy);
    expect(byKey(next, b)?.presharedKey).toEqual(newPskCopy);
  });

  it('a refused request leaves the current config and its keys as they were', async () => {
    const psk = key();
    const cur = config([peer(a, [], { presharedKey: psk })]);
    const before = Uint8Array.from(psk);
    const priv = Uint8Array.from(cur.interface.privateKey);
    expect(await errnoOf(mergeUapiRequest(cur, req([{ kind: 'private-key', key: null }], section(a, { kind: 'preshared-key', key: key() })), ctx))).toBe(-22);
    expect(psk).toEqual(before);
    expect(cur.interface.privateKey).toEqual(priv);
  });
});

describe('mergeUapiRequest is linear (issue 13 item 2: quadratic took 13 s for 20,000 peers, 21 s for 50,000 allowed IPs)', () => {
  function manyPeers(n: number): UapiPeerSection[] {
    const out: UapiPeerSection[] = [];
    for (let i = 0; i < n; i++) {
      out.push(section(key(), allow(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`), { kind: 'persistent-keepalive', seconds: 25 }));
    }
    return out;
  }

  it('20,000 new peers, then a set over 20,000 existing ones, in well under a second each', async () => {
    const sections = manyPeers(20_000);
    let t = performance.now();
    const first = await mergeUapiRequest(config([]), req([], ...sections), ctx);
    const addMs = performance.now() - t;
    expect(first.config.peers).toHaveLength(20_000);
    // Every prefix moves to the next peer: each allowed_ip takes one from its owner.
    const moved = sections.map((s, i) => section(s.publicKey, allow(`10.${((i + 1) >> 16) & 255}.${((i + 1) >> 8) & 255}.${(i + 1) & 255}/32`)));
    t = performance.now();
    const second = await mergeUapiRequest(first.config, req([], ...moved), ctx);
    const moveMs = performance.now() - t;
    expect(second.config.peers[0].allowedIPs).toEqual(['10.0.0.0/32', '10.0.0.1/32']);
    expect(second.config.peers[1].allowedIPs).toEqual(['10.0.0.2/32']);
    expect(second.config.peers[19_999].allowedIPs).toEqual(['10.0.78.32/32']);
    // Generous for a loaded 2-core machine; about 60 ms each when measured alone.
    expect({ addMs: addMs < 1500, moveMs: moveMs < 1500 }).toEqual({ addMs: true, moveMs: true });
  });

  it('one peer with 50,000 allowed IPs, then replace_allowed_ips with 50,000 others', async () => {
    const ops: UapiPeerOp[] = [];
    for (let i = 0; i < 50_000; i++) ops.push(allow(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`));
    const k = key();
    let t = performance.now();
    const first = await mergeUapiRequest(config([]), req([], section(k, ...ops)), ctx);
    const addMs = performance.now() - t;
    expect(first.config.peers[0].allowedIPs).toHaveLength(50_000);
    const other: UapiPeerOp[] = [{ kind: 'replace-allowed-ips' }];
    for (let i = 0; i < 50_000; i++) other.push(allow(`10.${100 + ((i >> 16) & 255)}.${(i >> 8) & 255}.${i & 255}/32`));
    t = performance.now();
    const second = await mergeUapiRequest(first.config, req([], section(k, ...other)), ctx);
    const replaceMs = performance.now() - t;
    expect(second.config.peers[0].allowedIPs).toHaveLength(50_000);
    expect(second.config.peers[0].allowedIPs[0]).toBe('10.100.0.0/32');
    expect({ addMs: addMs < 1500, replaceMs: replaceMs < 1500 }).toEqual({ addMs: true, replaceMs: true });
  });

  it('yields to the event loop while it works, inside a section too', async () => {
    const ops: UapiPeerOp[] = [];
    for (let i = 0; i < 20_000; i++) ops.push(allow(`10.1.${(i >> 8) & 255}.${i & 255}/32`));
    // A zero-length slice: every clock check is due.
    const yielder = new Yielder(0);
    let turns = 0;
    const spin = setInterval(() => turns++, 0);
    try {
      await mergeUapiRequest(config([]), req([], section(key(), ...ops)), { ...ctx, yielder });
    } finally {
      clearInterval(spin);
    }
    expect(yielder.pauses).toBeGreaterThan(100);
    expect(turns).toBeGreaterThan(0);
  });
});
