import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { PeerConfig, TunvpnConfig } from '../../src/config/index.js';
import { mergeUapiRequest } from '../../src/control/uapi-apply.js';
import { UapiError, type UapiPeerChange } from '../../src/control/uapi-types.js';

const key = (): Uint8Array => new Uint8Array(randomBytes(32));
const b64 = (k: Uint8Array): string => Buffer.from(k).toString('base64');

function peer(k: Uint8Array, allowedIPs: string[], extra: Partial<PeerConfig> = {}): PeerConfig {
  return { publicKey: b64(k), publicKeyBytes: k, allowedIPs, persistentKeepalive: 0, ...extra };
}

function config(peers: PeerConfig[]): TunvpnConfig {
  return {
    interface: { name: 'tv0', privateKey: key(), listenPort: 51820, addresses: ['10.0.0.1/24'], mtu: 1420 },
    peers,
    log: { level: 'info' },
    metrics: {},
    crypto: { backend: 'auto' },
    warnings: [],
  };
}

function change(k: Uint8Array, extra: Partial<UapiPeerChange> = {}): UapiPeerChange {
  return { publicKey: k, remove: false, updateOnly: false, replaceAllowedIPs: false, allowedIPs: [], ...extra };
}

describe('mergeUapiRequest', () => {
  const own = key();
  const [a, b, c] = [key(), key(), key()];

  it('adds, updates and removes peers without touching the current config', () => {
    const cur = config([peer(a, ['10.0.0.2/32'], { name: 'a' }), peer(b, ['10.0.0.3/32'])]);
    const snapshot = JSON.stringify(cur);
    const next = mergeUapiRequest(
      cur,
      {
        listenPort: 4000,
        replacePeers: false,
        peers: [
          change(a, { endpoint: { host: '192.0.2.1', port: 9 }, persistentKeepalive: 25, allowedIPs: ['10.1.0.0/16'] }),
          change(b, { remove: true }),
          change(c, { allowedIPs: ['10.0.0.4/32'], presharedKey: key() }),
        ],
      },
      own,
    );
    expect(JSON.stringify(cur)).toBe(snapshot);
    expect(next.interface.listenPort).toBe(4000);
    expect(next.peers.map((p) => p.publicKey)).toEqual([b64(a), b64(c)]);
    expect(next.peers[0]).toMatchObject({ name: 'a', endpoint: { host: '192.0.2.1', port: 9 }, persistentKeepalive: 25, allowedIPs: ['10.0.0.2/32', '10.1.0.0/16'] });
    expect(next.peers[1].presharedKey).toHaveLength(32);
  });

  it('moves an allowed IP from its owner (cryptokey routing), replaces lists, clears a preshared key', () => {
    const cur = config([peer(a, ['10.0.0.2/32', '10.9.0.0/16'], { presharedKey: key() }), peer(b, ['10.0.0.3/32'])]);
    const next = mergeUapiRequest(
      cur,
      {
        replacePeers: false,
        peers: [change(b, { replaceAllowedIPs: true, allowedIPs: ['10.9.0.0/16'] }), change(a, { presharedKey: null })],
      },
      own,
    );
    expect(next.peers[0].allowedIPs).toEqual(['10.0.0.2/32']);
    expect(next.peers[0].presharedKey).toBeUndefined();
    expect(next.peers[1].allowedIPs).toEqual(['10.9.0.0/16']);
  });

  it('honours replace_peers, update_only, and ignores our own key', () => {
    const cur = config([peer(a, ['10.0.0.2/32'])]);
    const next = mergeUapiRequest(cur, { replacePeers: true, peers: [change(b, { updateOnly: true }), change(own, {}), change(c, {})] }, own);
    expect(next.peers.map((p) => p.publicKey)).toEqual([b64(c)]);
  });

  it('refuses what tunvpn cannot do with EINVAL', () => {
    const cur = config([]);
    expect(() => mergeUapiRequest(cur, { privateKey: null, replacePeers: false, peers: [] }, own)).toThrow(UapiError);
    try {
      mergeUapiRequest(cur, { fwmark: 7, replacePeers: false, peers: [] }, own);
      expect.unreachable();
    } catch (err) {
      expect((err as UapiError).errno).toBe(-22);
    }
  });
});
