/**
 * Site to site through two real tunvpn daemons in namespaces: LAN A reaches
 * LAN B (ICMP, and TCP transfers with a checksum, both directions, IPv4 and
 * IPv6 inner traffic); the routes and the interface go away on SIGTERM.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, pingUntil } from '../helpers/netns.js';
import { ADDR, ConfigDir, SiteToSite, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, tcpTransfer } from '../helpers/daemon.js';
import { status } from '../hardening/helpers.js';

describeIntegration('site to site through two tunvpn daemons', ['ping'], () => {
  let bed: SiteToSite;
  let dir: ConfigDir;
  const daemons: DaemonProcess[] = [];

  beforeAll(async () => {
    bed = await SiteToSite.create('st');
    dir = await ConfigDir.create();
    const a = makeKeyPair();
    const b = makeKeyPair();
    const cfgA = await dir.writeHost('a', {
      interfaceName: 'tva0',
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`, `${ADDR.taTun.v6}/64`],
      peers: [
        {
          name: 'b',
          publicKey: b.publicKey,
          endpoint: `${ADDR.tbUnder.v4}:51820`,
          allowedIPs: [`${ADDR.tbTun.v4}/32`, `${ADDR.tbTun.v6}/128`, ADDR.lanB.v4, ADDR.lanB.v6],
        },
      ],
    });
    const cfgB = await dir.writeHost('b', {
      interfaceName: 'tvb0',
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`, `${ADDR.tbTun.v6}/64`],
      peers: [
        {
          name: 'a',
          publicKey: a.publicKey,
          endpoint: `${ADDR.taUnder.v4}:51820`,
          allowedIPs: [`${ADDR.taTun.v4}/32`, `${ADDR.taTun.v6}/128`, ADDR.lanA.v4, ADDR.lanA.v6],
        },
      ],
    });
    // Host A uses the native batched UDP path and TUN offloads, host B the
    // node:dgram fallback without offloads: both paths are exercised, and
    // they interoperate.
    daemons.push(await startDaemon(bed.ta, cfgA));
    process.env.TUNVPN_UDP = 'dgram';
    process.env.TUNVPN_TUN_OFFLOAD = 'off';
    try {
      daemons.push(await startDaemon(bed.tb, cfgB));
    } finally {
      delete process.env.TUNVPN_UDP;
      delete process.env.TUNVPN_TUN_OFFLOAD;
    }
  });

  it('runs the native UDP transport and TUN offloads by default, node:dgram and no offloads when asked', async () => {
    const openRecord = (d: DaemonProcess): Promise<Record<string, unknown>> => d.waitForLog(/UDP transport open/);
    expect(await openRecord(daemons[0])).toMatchObject({ transport: 'native', tunOffload: true, udpGro: true });
    expect(await openRecord(daemons[1])).toMatchObject({ transport: 'dgram', tunOffload: false, udpGro: false });
    // Both warmed the transport path before carrying traffic: 2,000 packets each way.
    for (const d of daemons) expect(await d.waitForLog(/packet path warmed up/)).toMatchObject({ packets: 4000 });
  });

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
    await bed?.destroy();
    await dir?.destroy();
  });

  it('adds routes for the peer subnets, not for addresses the interface covers', async () => {
    const { stdout } = await bed.ta.exec('ip', ['-o', 'route', 'show', 'dev', 'tva0']);
    expect(stdout).toContain('10.61.2.0/24');
    expect(stdout).not.toContain('10.62.0.2');
    const v6 = await bed.ta.exec('ip', ['-6', '-o', 'route', 'show', 'dev', 'tva0']);
    expect(v6.stdout).toContain('fd61:2::/64');
  });

  it('carries ICMP from LAN A to LAN B and back, IPv4 and IPv6', async () => {
    expect(await pingUntil(bed.la, ADDR.lb.v4, 15_000)).toMatch(/1 received/);
    expect(await pingUntil(bed.lb, ADDR.la.v4, 5_000)).toMatch(/1 received/);
    expect(await pingUntil(bed.la, ADDR.lb.v6, 5_000)).toMatch(/1 received/);
    expect(await pingUntil(bed.lb, ADDR.la.v6, 5_000)).toMatch(/1 received/);
  });

  it('carries TCP transfers intact in both directions over IPv4 and IPv6', async () => {
    const size = 4 * 1024 * 1024;
    for (const [from, to, addr] of [
      [bed.la, bed.lb, ADDR.lb.v4],
      [bed.lb, bed.la, ADDR.la.v4],
      [bed.la, bed.lb, ADDR.lb.v6],
      [bed.lb, bed.la, ADDR.la.v6],
    ] as const) {
      const r = await tcpTransfer(from, to, addr, 5001, size);
      expect(r.received).toBe(size);
      expect(r.remote).toBe(r.local);
    }
    // Host A read TCP super-packets from LAN A's sender and wrote LAN B's
    // segments coalesced; host B, without offloads, did neither.
    const [a, b] = await Promise.all(daemons.map((d) => status(d)));
    expect(a.tun.offload).toBe(true);
    expect(a.tun.tsoPackets).toBeGreaterThan(0);
    expect(a.tun.tsoSegments).toBeGreaterThan(a.tun.tsoPackets);
    expect(a.tun.groWrites).toBeGreaterThan(0);
    expect(a.tun.groPackets).toBeGreaterThan(a.tun.groWrites);
    expect(b.tun).toMatchObject({ offload: false, tsoPackets: 0, groWrites: 0 });
    for (const s of [a, b]) expect(s.drops['tun-write-failed']).toBe(0);
  });

  it('removes its routes and interface on SIGTERM and exits 0', async () => {
    const code = await daemons[0].stop();
    expect(code).toBe(0);
    const links = await bed.ta.exec('ip', ['-o', 'link']);
    expect(links.stdout).not.toContain('tva0');
    const routes = await bed.ta.exec('ip', ['-o', 'route']);
    expect(routes.stdout).not.toContain('10.61.2.0/24');
    expect(daemons[0].lines.join('\n')).toMatch(/tunvpn stopped/);
  });
});
