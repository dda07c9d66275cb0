/** ProtocolPeer.lastHandshakeAt: the device's monotonic clock, for endpoint re-resolution's 135 s rule. */
import { describe, expect, it } from 'vitest';
import { handshake, makePair } from './helpers.js';

describe('ProtocolPeer.lastHandshakeAt', () => {
  it('is -Infinity before any handshake, then the monotonic time of the latest one on both sides', async () => {
    const p = await makePair();
    expect(p.peerB.lastHandshakeAt).toBe(-Infinity);
    expect(p.peerA.lastHandshakeAt).toBe(-Infinity);
    // Wall and monotonic clocks differ: the value must be the monotonic one.
    p.clock.wall += 3_600_000;
    handshake(p);
    expect(p.peerB.lastHandshakeAt).toBe(p.clock.mono);
    expect(p.peerA.lastHandshakeAt).toBe(p.clock.mono);
    const first = p.clock.mono;
    p.clock.advance(130_000);
    handshake(p);
    expect(p.peerB.lastHandshakeAt).toBe(first + 130_000);
    expect(p.peerA.lastHandshakeAt).toBe(first + 130_000);
  });
});
