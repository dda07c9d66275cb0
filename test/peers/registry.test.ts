/**
 * PeerRegistry: one writer for the protocol device and the peer table, so
 * the two never disagree; the owner is reachable from the protocol peer.
 */
import { describe, expect, it } from 'vitest';
import type { PeerConfig } from '../../src/config/index.js';
import { Yielder } from '../../src/cooperative.js';
import { PeerRegistry, type Peer } from '../../src/peers/registry.js';
import { WireGuardDevice } from '../../src/protocol/device.js';
import { encodeEndpoint } from '../../src/transport/endpoint-codec.js';
import { backend, seededRandom, SimClock } from '../protocol/helpers.js';

async function registry(): Promise<PeerRegistry> {
  const crypto = await backend('sodium-native');
  const clock = new SimClock();
  const random = seededRandom(3);
  const key = new Uint8Array(32);
  random(key);
  return new PeerRegistry(new WireGuardDevice<Peer>({ crypto, privateKey: key, random, now: clock.now, wallClock: clock.wallClock }));
}

let n = 0;
function config(allowedIPs: string[], extra: Partial<PeerConfig> = {}): PeerConfig {
  const bytes = new Uint8Array(32);
  seededRandom(1000 + n++)(bytes);
  return { publicKey: Buffer.from(bytes).toString('base64'), publicKeyBytes: bytes, allowedIPs, persistentKeepalive: 0, ...extra };
}

describe('PeerRegistry', () => {
  it('adds a peer to the device and the table as one record, reachable from the protocol peer', async () => {
    const r = await registry();
    const cfg = config(['10.1.0.0/24', 'fd01::/64']);
    const peer = await r.add(cfg, { address: '192.0.2.9', port: 51820, family: 4 }, new Yielder());
    expect(r.device.getPeer(cfg.publicKey)).toBe(peer.proto);
    expect(peer.proto.owner).toBe(peer);
    expect(r.get(cfg.publicKey)).toBe(peer);
    expect(r.table.ownerOf('10.1.0.7')).toBe(cfg.publicKey);
    expect(peer.endpointKey).toEqual(encodeEndpoint('192.0.2.9', 51820));
    expect(peer.stats).toBe(peer.proto.stats);
    expect(peer.stats).toMatchObject({ rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, handshakesStarted: 0 });
  });

  it('leaves nothing half-made when an add fails (bad endpoint, duplicate key)', async () => {
    const r = await registry();
    const bad = config(['10.2.0.0/24']);
    await expect(r.add(bad, { address: 'not-an-address', port: 1, family: 4 }, new Yielder())).rejects.toThrow(/not an IP address/);
    expect(r.device.getPeer(bad.publicKey)).toBeUndefined();
    expect(r.size).toBe(0);
    const cfg = config(['10.3.0.0/24']);
    await r.add(cfg, undefined, new Yielder());
    await expect(r.add({ ...cfg, allowedIPs: [] }, undefined, new Yielder())).rejects.toThrow(/already exists/);
    expect(r.size).toBe(1);
    expect(r.device.listPeers()).toHaveLength(1);
  });

  it('updates in place: allowed IPs by difference, endpoint, keepalive; the protocol peer (and its sessions) stay', async () => {
    const r = await registry();
    const cfg = config(['10.4.0.0/24', '10.5.0.0/24']);
    const peer = await r.add(cfg, undefined, new Yielder());
    const proto = peer.proto;
    const after = { ...cfg, allowedIPs: ['10.5.0.0/24', '10.6.0.0/24'], persistentKeepalive: 25 };
    await r.update(after, ['allowedIPs', 'persistentKeepalive', 'endpoint'], { address: '2001:db8::7', port: 1, family: 6 }, new Yielder());
    expect(r.get(cfg.publicKey)).toBe(peer);
    expect(peer.proto).toBe(proto);
    expect(peer.config).toBe(after);
    expect(r.allowedIPsOf(cfg.publicKey)).toEqual(['10.5.0.0/24', '10.6.0.0/24']);
    expect(proto.persistentKeepalive).toBe(25);
    expect(peer.endpoint).toEqual({ address: '2001:db8::7', port: 1, family: 6 });
    expect(peer.endpointKey).toEqual(encodeEndpoint('2001:db8::7', 1));
  });

  it('removes a peer with 50,000 allowed IPs in slices, from the table and the device', async () => {
    const r = await registry();
    const many: string[] = [];
    for (let i = 0; i < 50_000; i++) many.push(`10.${i >> 8}.${i & 0xff}.0/24`);
    const cfg = config(many);
    const other = config(['192.168.0.0/16']);
    await r.add(cfg, undefined, new Yielder());
    await r.add(other, undefined, new Yielder());
    const y = new Yielder(1);
    await r.remove(cfg.publicKey, y);
    expect(y.pauses).toBeGreaterThan(0);
    expect(r.get(cfg.publicKey)).toBeUndefined();
    expect(r.device.getPeer(cfg.publicKey)).toBeUndefined();
    expect(r.table.prefixCount).toBe(1);
    expect(r.values().map((p) => p.config.publicKey)).toEqual([other.publicKey]);
    await r.remove(cfg.publicKey, new Yielder()); // twice: nothing
    expect(r.size).toBe(1);
  });
});

describe('PeerRegistry.setPrivateKey', () => {
  it('a peer whose key becomes ours leaves the device and the table together', async () => {
    const r = await registry();
    const crypto = await backend('sodium-native');
    const priv = new Uint8Array(32);
    seededRandom(77)(priv);
    const pub = crypto.publicKey(priv);
    const cfg = { ...config(['10.9.0.0/24']), publicKey: Buffer.from(pub).toString('base64'), publicKeyBytes: pub };
    const keep = config(['10.8.0.0/24']);
    await r.add(cfg, undefined, new Yielder());
    await r.add(keep, undefined, new Yielder());
    r.setPrivateKey(priv);
    expect(r.device.getPeer(cfg.publicKey)).toBeUndefined();
    expect(r.get(cfg.publicKey)).toBeUndefined();
    expect(r.table.ownerOf('10.9.0.1')).toBeUndefined();
    expect(r.values().map((p) => p.config.publicKey)).toEqual([keep.publicKey]);
  });
});
