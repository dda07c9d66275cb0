/**
 * OwnedRoutes.prepare's conflict check, both ways it asks the kernel
 * (src/routing.ts, EXACT_LOOKUPS): a few missing routes are looked up one
 * by one (`ip route show exact P`), many by listing their tables. Both must
 * find the same conflicts and satisfied routes; the few-route way must not
 * list a table (a reload that moves one prefix on a hub of 10,000 routes
 * listed all of them: bench `--only hub`).
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { EXACT_LOOKUPS, OwnedRoutes, RouteConflictError, routeKey } from '../src/routing.js';
import { describeIntegration, Netns, linkNamespaces } from './helpers/netns.js';

describeIntegration('route conflict lookups on a real kernel', ['ip'], () => {
  let ns: Netns;
  let other: Netns;
  let veth: string;
  const TUN = 'rl0';
  // Padding: enough missing, conflict-free prefixes to push a prepare past EXACT_LOOKUPS.
  const padding = Array.from({ length: EXACT_LOOKUPS + 1 }, (_, i) => `10.70.${i}.0/24`);

  beforeAll(async () => {
    ns = await Netns.create('rtlook');
    other = await Netns.create('rtlko');
    ({ ifA: veth } = await linkNamespaces(ns, other, ['10.80.0.1/24', 'fd80::1/64'], ['10.80.0.2/24', 'fd80::2/64']));
    await ns.exec('ip', ['tuntap', 'add', 'dev', TUN, 'mode', 'tun']);
    await ns.exec('ip', ['link', 'set', TUN, 'up']);
    // Someone else's: through the veth (a /24, a /32 that ip prints as a bare address, IPv6,
    // one in table 100), a blackhole, and one an operator put on our own device.
    await ns.exec('ip', ['route', 'add', '10.81.0.0/24', 'dev', veth]);
    await ns.exec('ip', ['route', 'add', '10.81.1.7/32', 'dev', veth]);
    await ns.exec('ip', ['-6', 'route', 'add', 'fd81::/64', 'dev', veth]);
    await ns.exec('ip', ['route', 'add', '10.81.2.0/24', 'dev', veth, 'table', '100']);
    await ns.exec('ip', ['route', 'add', 'blackhole', '10.81.3.0/24']);
    await ns.exec('ip', ['route', 'add', '10.81.4.0/24', 'dev', TUN]);
    await ns.exec('ip', ['-6', 'route', 'add', 'fd81:4::/64', 'dev', TUN]);
  });

  afterAll(async () => {
    await ns?.destroy();
    await other?.destroy();
  });

  const conflicts: [string, string][] = [
    ['10.81.0.0/24', `route 10.81.0.0/24 exists via dev VETH`],
    ['10.81.1.7/32', `route 10.81.1.7/32 exists via dev VETH`],
    ['fd81::/64', `route fd81::/64 exists via dev VETH`],
    [routeKey('10.81.2.0/24', 100), `route 10.81.2.0/24 exists via dev VETH in table 100`],
    ['10.81.3.0/24', 'route 10.81.3.0/24 exists via blackhole'],
  ];

  for (const [how, extra] of [
    ['one by one', [] as string[]],
    ['by listing the table', padding],
  ] as const) {
    it(`finds every conflict ${how}, adding nothing`, async () => {
      for (const [key, message] of conflicts) {
        const r = new OwnedRoutes(TUN, { netns: ns.name });
        const err = await r.prepare(['10.70.200.0/24', key, ...extra]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(RouteConflictError);
        expect((err as Error).message).toBe(message.replace('VETH', veth));
        const { stdout } = await ns.exec('ip', ['-4', 'route', 'show', 'dev', TUN]);
        expect(stdout).not.toContain('10.70.');
        expect(r.owned.size).toBe(0);
      }
    });

    it(`takes routes already on our device as satisfied ${how}, adds the rest (a table that does not exist yet too)`, async () => {
      const r = new OwnedRoutes(TUN, { netns: ns.name });
      const p = await r.prepare(['10.81.4.0/24', 'fd81:4::/64', routeKey('10.70.201.0/24', 101), ...extra]);
      expect([...p.satisfied].sort()).toEqual(['10.81.4.0/24', 'fd81:4::/64']);
      expect([...p.added].sort()).toEqual([routeKey('10.70.201.0/24', 101), ...extra].sort());
      await r.commit(p);
      const { stdout } = await ns.exec('ip', ['-4', 'route', 'show', 'table', '101']);
      expect(stdout).toContain('10.70.201.0/24 dev rl0');
      await r.removeAll();
      expect((await ns.exec('ip', ['-4', 'route', 'show', 'table', 'all'])).stdout).not.toContain('10.70.');
      // Never the operator's.
      expect((await ns.exec('ip', ['-4', 'route', 'show', 'dev', TUN])).stdout).toContain('10.81.4.0/24');
    });
  }

  it('one missing route beside 2,000 owned ones: asks ip about that prefix only, never lists the table', async () => {
    const r = new OwnedRoutes(TUN, { netns: ns.name });
    const owned = Array.from({ length: 2000 }, (_, i) => `10.71.${i >> 8}.${i & 255}/32`);
    await r.commit(await r.prepare(owned));
    // Every ip the routing code runs, logged: a wrapper first on PATH.
    const bin = mkdtempSync(join(tmpdir(), 'tunvpn-ipwrap-'));
    const logFile = join(bin, 'argv.log');
    const realIp = (await ns.exec('sh', ['-c', 'command -v ip'])).stdout.trim();
    writeFileSync(join(bin, 'ip'), `#!/bin/sh\necho "$*" >> ${logFile}\nexec ${realIp} "$@"\n`);
    chmodSync(join(bin, 'ip'), 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path ?? ''}`;
    try {
      const p = await r.prepare([...owned, '10.72.0.0/24']);
      expect(p.added).toEqual(['10.72.0.0/24']);
      await r.commit(p);
      const calls = readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
      const shows = calls.filter((c) => c.includes('route show'));
      expect(shows).toEqual([`-n ${ns.name} -j -4 route show table main exact 10.72.0.0/24`]);
    } finally {
      process.env.PATH = path;
      await r.removeAll();
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
