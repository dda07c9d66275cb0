import { describe, expect, it } from 'vitest';
import { diffConfig, summarizeConfig, type PeerConfig } from '../../src/config/index.js';
import { config, keyPair } from './helpers.js';

function peer(pub: string, extra: Partial<PeerConfig> = {}): PeerConfig {
  return { publicKey: pub, publicKeyBytes: new Uint8Array(Buffer.from(pub, 'base64')), allowedIPs: ['10.0.0.1/32'], persistentKeepalive: 0, ...extra };
}

const [a, b, c, d] = [keyPair().pub, keyPair().pub, keyPair().pub, keyPair().pub];

describe('diffConfig', () => {
  it('finds added, removed, changed and unchanged peers by public key', () => {
    const before = config([peer(a), peer(b, { name: 'b' }), peer(c, { endpoint: { host: '1.2.3.4', port: 1 } })]);
    const after = config([
      peer(b, { name: 'b2', persistentKeepalive: 25 }),
      peer(c, { endpoint: { host: '1.2.3.4', port: 2 }, allowedIPs: ['10.0.0.1/32', '10.9.0.0/16'], presharedKey: new Uint8Array(32) }),
      peer(d),
    ]);
    const diff = diffConfig(before, after);
    expect(diff.added.map((p) => p.publicKey)).toEqual([d]);
    expect(diff.removed.map((p) => p.publicKey)).toEqual([a]);
    expect(diff.unchanged).toEqual([]);
    expect(diff.changed.map((x) => [x.after.publicKey, x.fields])).toEqual([
      [b, ['name', 'persistentKeepalive']],
      [c, ['presharedKey', 'endpoint', 'allowedIPs']],
    ]);
    expect(diff.changed[0].before.name).toBe('b');
    expect(diff.interfaceChanged).toEqual([]);
  });

  it('sees no change in an identical config or a reordered allowed-IP list', () => {
    const before = config([peer(a, { allowedIPs: ['10.0.0.1/32', 'fd00::/64'], presharedKey: new Uint8Array(32).fill(1) })]);
    const after = config([peer(a, { allowedIPs: ['fd00::/64', '10.0.0.1/32'], presharedKey: new Uint8Array(32).fill(1) })]);
    const diff = diffConfig(before, after);
    expect(diff.unchanged.map((p) => p.publicKey)).toEqual([a]);
    expect(diff.changed).toEqual([]);
    expect(diff.added).toEqual([]);
    expect(diff.removed).toEqual([]);
  });

  it('treats a changed public key as remove + add, even with the same name', () => {
    const diff = diffConfig(config([peer(a, { name: 'x' })]), config([peer(b, { name: 'x' })]));
    expect(diff.removed.map((p) => p.publicKey)).toEqual([a]);
    expect(diff.added.map((p) => p.publicKey)).toEqual([b]);
  });

  it('notices endpoint removal and preshared key removal', () => {
    const diff = diffConfig(config([peer(a, { endpoint: { host: 'h', port: 1 }, presharedKey: new Uint8Array(32) })]), config([peer(a)]));
    expect(diff.changed[0].fields).toEqual(['presharedKey', 'endpoint']);
  });

  it('lists changed interface fields', () => {
    const diff = diffConfig(config([], {}), config([], { name: 'tun1', privateKey: new Uint8Array(32).fill(8), listenPort: 1, addresses: [], mtu: 1280 }));
    expect(diff.interfaceChanged).toEqual(['name', 'privateKey', 'listenPort', 'addresses', 'mtu']);
    expect(diffConfig(config([]), config([], { addresses: ['10.0.0.254/24'] })).interfaceChanged).toEqual([]);
  });
});

describe('summarizeConfig', () => {
  it('is one line with interface, port, addresses and peer count, and no private material', () => {
    const cfg = config([peer(a, { endpoint: { host: 'h', port: 1 }, presharedKey: new Uint8Array(32).fill(5) }), peer(b)]);
    const s = summarizeConfig(cfg);
    expect(s).not.toContain('\n');
    expect(s).toContain('tunvpn0');
    expect(s).toContain('51820');
    expect(s).toContain('10.0.0.254/24');
    expect(s).toContain('2 peers (1 with endpoint)');
    expect(s).not.toContain(Buffer.from(cfg.interface.privateKey).toString('base64'));
    expect(s).not.toContain(Buffer.alloc(32, 5).toString('base64'));
    expect(summarizeConfig(config([], { listenPort: 0, addresses: [] }))).toMatch(/listen port random, addresses none, .*0 peers/);
  });
});
