/**
 * Datagrams larger than usual: a peer's oversized datagrams are dropped and
 * counted ('oversized'), and an interface MTU well above 1500 works end to
 * end (receive slots are sized from the MTU at start).
 *
 * Both were bugs found by the hardening work (oversized datagrams vanished
 * uncounted; an MTU above about 2000 silently lost large packets).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADDR } from '../../src/testbed/site-to-site.js';
import { describeIntegration } from '../helpers/netns.js';
import { attack, ATTACK, dropDelta, hardeningBed, pingCount, settledStatus, status, type HardeningBed } from './helpers.js';

describeIntegration('large datagrams and a large MTU', ['ping'], () => {
  let h: HardeningBed;

  beforeAll(async () => {
    // MTU 4000 on both sides: legal (the schema allows up to 65535).
    h = await hardeningBed('hk', { mtu: 4000 });
  });

  afterAll(async () => {
    await h?.destroy();
  });

  /* A peer (or an attacker) sending datagrams larger than our receive slot. */
  it('datagrams larger than a receive slot are counted in drops', async () => {
    const before = await status(h.db);
    const r = await attack(h.atk, ['garbage', 'jumbo', '1000', ATTACK.target, '51820', '', '20']);
    expect(r.sent).toBe(1000);
    const d = dropDelta(before, await settledStatus(h.db));
    // 2,100 to 9,000 bytes against a 4,096-byte slot (MTU 4000): the larger
    // ones are 'oversized', the rest fail the protocol's own checks.
    expect(Object.values(d).reduce((x, y) => x + y, 0)).toBeGreaterThanOrEqual(1000);
    expect(d.oversized ?? 0).toBeGreaterThan(0);
  });

  /* Jumbo-frame underlays use large MTUs; the receive slots follow the MTU. */
  it('with MTU 4000 a 3 000-byte ping crosses the tunnel', async () => {
    expect(await pingCount(h.bed.ta, ADDR.tbTun.v4, 3, 0.2)).toMatchObject({ received: 3 });
    // From host A itself (LAN A's 1 500-byte link would fragment it first):
    // inner packet 3 028 bytes → a 3 072-byte datagram, fragmented on the
    // 1 500-byte underlay and reassembled by host B's kernel.
    const big = await h.bed.ta
      .exec('ping', ['-n', '-q', '-c', '3', '-i', '0.2', '-W', '1', '-s', '3000', ADDR.tbTun.v4])
      .then((x) => x.stdout)
      .catch((err: { stdout?: string }) => err.stdout ?? '');
    expect(big).toMatch(/3 received/);
  });
});
