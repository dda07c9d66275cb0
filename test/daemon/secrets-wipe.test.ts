/**
 * Secrets are wiped as the README says (issue 13 item 3): the protocol peer
 * keeps its own copy of the preshared key and wipes it, with its
 * static-static DH, when it is removed; a reload or a set zeroes the
 * superseded config's private and preshared keys; a request's key buffers
 * are zeroed once it is applied or refused; nothing still in use shared a
 * zeroed buffer. The daemon part runs a real Daemon inside a namespace
 * (test/fixtures/secrets-wipe.mjs) and inspects its objects.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WireGuardDevice } from '../../src/protocol/device.js';
import type { CryptoBackend } from '../../src/crypto/types.js';
import { ConfigDir } from '../../src/testbed/site-to-site.js';
import { describeIntegration, Netns } from '../helpers/netns.js';
import { backend, SimClock } from '../protocol/helpers.js';

const zero = (k: Uint8Array): boolean => k.every((x) => x === 0);

describe('protocol peer: its own key copies, lazy static-static DH, wiped on removal', () => {
  let crypto: CryptoBackend;
  beforeAll(async () => {
    crypto = await backend();
  });

  function device(c: CryptoBackend): WireGuardDevice {
    const clock = new SimClock();
    return new WireGuardDevice({ crypto: c, privateKey: c.generatePrivateKey(), now: clock.now, wallClock: clock.wallClock });
  }

  it('copies the preshared key it is given, and wipes its copy and the static-static DH on remove', () => {
    const dev = device(crypto);
    const psk = crypto.generatePrivateKey();
    const given = Uint8Array.from(psk);
    const peer = dev.addPeer({ publicKey: crypto.publicKey(crypto.generatePrivateKey()), presharedKey: given });
    given.fill(0);
    expect(Buffer.from(peer.handshake.presharedKey).equals(Buffer.from(psk))).toBe(true);
    expect(peer.initiateHandshake()).toBeDefined();
    const ss = peer.handshake.precomputedStaticStatic;
    expect(zero(ss)).toBe(false);
    dev.removePeer(peer.publicKey);
    expect(zero(peer.handshake.presharedKey)).toBe(true);
    expect(zero(ss)).toBe(true);
    // Nothing recomputes it: a removed peer cannot make a handshake.
    expect(peer.handshake.staticStaticValid).toBe(false);
    expect(zero(peer.handshake.precomputedStaticStatic)).toBe(true);
  });

  it('adds peers and changes the private key without an X25519 per peer; the first handshake pays', () => {
    let calls = 0;
    const counting: CryptoBackend = Object.assign(Object.create(crypto) as CryptoBackend, {
      x25519: (out: Uint8Array, priv: Uint8Array, pub: Uint8Array): boolean => {
        calls++;
        return crypto.x25519(out, priv, pub);
      },
    });
    const dev = device(counting);
    const peers = Array.from({ length: 1000 }, () => dev.addPeer({ publicKey: crypto.publicKey(crypto.generatePrivateKey()) }));
    dev.setPrivateKey(crypto.generatePrivateKey());
    expect(calls).toBe(0);
    expect(peers[0].initiateHandshake()).toBeDefined();
    // The static-static DH and the ephemeral-static DH.
    expect(calls).toBe(2);
    // A later key change makes it stale again: computed anew, with the new key.
    const before = Uint8Array.from(peers[0].handshake.precomputedStaticStatic);
    dev.setPrivateKey(crypto.generatePrivateKey());
    expect(Buffer.from(peers[0].handshake.precomputedStaticStatic).equals(Buffer.from(before))).toBe(false);
  });
});

describeIntegration('daemon: superseded secrets zeroed after reload, set, refusal and stop', [], () => {
  let ns: Netns;
  let dir: ConfigDir;

  beforeAll(async () => {
    ns = await Netns.create('swipe');
    dir = await ConfigDir.create();
  });

  afterAll(async () => {
    await ns?.destroy();
    await dir?.destroy();
  });

  it('inspects the old objects', async () => {
    const fixture = join(import.meta.dirname, '..', 'fixtures', 'secrets-wipe.mjs');
    const { stdout } = await ns.exec(process.execPath, [fixture, dir.path], { timeoutMs: 60_000 });
    const r = JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
    expect(r.initiationMade).toBe(true);
    expect(r.beforeRemove).toEqual({ ssB: true, pskB: true });
    expect(r.protoCopiesPsk).toBe(true);
    expect(r.reloaded).toBe(true);
    expect(r.afterReload).toEqual({
      oldPrivateKeyZero: true,
      oldPskAZero: true,
      oldPskBZero: true,
      oldPskDZero: true,
      removedPeerPskZero: true,
      removedPeerStaticStaticZero: true,
      removedPeerCannotHandshake: true,
      newPrivateKeyInUse: true,
      pskAInProtocol: true,
      pskDInProtocol: true,
      pskDReported: true,
      unchangedPeersPointAtNewConfig: true,
    });
    expect(r.afterSet).toMatchObject({
      requestKeysZero: true,
      oldPrivateKeyZero: true,
      oldPskAZero: true,
      removedPeerStaticStaticZero: true,
      newKeysInUse: true,
    });
    expect((r.afterSet as { peers: string[] }).peers).toHaveLength(2);
    expect(r.refused).toBe(-22);
    expect(r.afterRefused).toEqual({ requestKeyZero: true, configUnchanged: true, protocolUnchanged: true });
    expect(r.afterStop).toEqual({ privateKeyZero: true, pskZero: true, protocolPsksZero: true });
  });
});
