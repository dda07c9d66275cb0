/**
 * The daemon's life on a running site-to-site bed: reload (a peer added,
 * an invalid edit rejected, an unchanged peer's transfer not interrupted),
 * restart after kill -9, roaming, and the inner-source check.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, linkNamespaces, Netns, pingUntil, sleep } from '../helpers/netns.js';
import { ADDR, ConfigDir, SiteToSite, startDaemon, type DaemonProcess, type HostSpec } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, tcpTransfer, type KeyPairText } from '../helpers/daemon.js';

interface StatusPeer {
  name?: string;
  endpoint?: string;
  lastHandshakeWallMs: number;
}
interface Status {
  peers: StatusPeer[];
  drops: Record<string, number>;
  packets: { udpRx: number; tunTx: number };
  udp: { transport: string; gro: boolean };
}

/** Asks a daemon for its status (SIGUSR1 logs it) and returns the newest one. */
async function status(d: DaemonProcess): Promise<Status> {
  const from = d.records().length;
  d.signal('SIGUSR1');
  const rec = await d.waitForLog(/^status$/, 5_000, from);
  return rec.status as Status;
}

describeIntegration('daemon lifecycle: reload, restart, roaming, source check', ['ping'], () => {
  let bed: SiteToSite;
  let tc: Netns;
  let dir: ConfigDir;
  let a: KeyPairText;
  let b: KeyPairText;
  let c: KeyPairText;
  let hostB: HostSpec;
  let cfgBPath: string;
  let da: DaemonProcess;
  let db: DaemonProcess;
  let dc: DaemonProcess | undefined;

  beforeAll(async () => {
    bed = await SiteToSite.create('lc');
    tc = await Netns.create('lctc');
    // Host C hangs off host B on a second underlay link.
    await linkNamespaces(bed.tb, tc, '10.60.1.1/24', '10.60.1.2/24');
    dir = await ConfigDir.create();
    [a, b, c] = [makeKeyPair(), makeKeyPair(), makeKeyPair()];
    const cfgA = await dir.writeHost('a', {
      interfaceName: 'lca0',
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`],
      peers: [{ name: 'b', publicKey: b.publicKey, endpoint: `${ADDR.tbUnder.v4}:51820`, allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4] }],
    });
    hostB = {
      interfaceName: 'lcb0',
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`],
      peers: [{ name: 'a', publicKey: a.publicKey, endpoint: `${ADDR.taUnder.v4}:51820`, allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4] }],
    };
    cfgBPath = await dir.writeHost('b', hostB);
    const cfgC = await dir.writeHost('c', {
      interfaceName: 'lcc0',
      privateKey: c.privateKey,
      listenPort: 51820,
      addresses: ['10.62.0.3/24'],
      peers: [{ name: 'b', publicKey: b.publicKey, endpoint: '10.60.1.1:51820', allowedIPs: [`${ADDR.tbTun.v4}/32`] }],
    });
    da = await startDaemon(bed.ta, cfgA);
    db = await startDaemon(bed.tb, cfgBPath);
    // Host C's sockets without UDP GRO (the A/B switch): the old receive path keeps working beside the others.
    process.env.TUNVPN_UDP_GRO = 'off';
    try {
      dc = await startDaemon(tc, cfgC);
    } finally {
      delete process.env.TUNVPN_UDP_GRO;
    }
    await pingUntil(bed.la, ADDR.lb.v4, 15_000);
  });

  afterAll(async () => {
    await Promise.all([da, db, dc].map((d) => d?.stop()));
    await Promise.all([bed?.destroy(), tc?.destroy()]);
    await dir?.destroy();
  });

  it('UDP GRO is on at the native sockets by default; TUNVPN_UDP_GRO=off reaches them and turns it off', async () => {
    expect(await da.waitForLog(/UDP transport open/)).toMatchObject({ transport: 'native', udpGro: true });
    if (dc === undefined) throw new Error('host C did not start');
    expect(await dc.waitForLog(/UDP transport open/)).toMatchObject({ transport: 'native', udpGro: false });
    expect((await status(da)).udp).toMatchObject({ transport: 'native', gro: true });
    expect((await status(dc)).udp).toMatchObject({ transport: 'native', gro: false, groReads: 0 });
  });

  it("reload: adds a third peer, keeps the unchanged peer's session and its TCP transfer", async () => {
    const before = (await status(db)).peers.find((p) => p.name === 'a');
    expect(before?.lastHandshakeWallMs).toBeGreaterThan(0);
    // C cannot reach B yet: B does not know C's key.
    await expect(pingUntil(tc, ADDR.tbTun.v4, 1_500)).rejects.toThrow();

    const transfer = tcpTransfer(bed.la, bed.lb, ADDR.lb.v4, 5002, 24 * 1024 * 1024, 90);
    await sleep(300);
    hostB.peers.push({ name: 'c', publicKey: c.publicKey, allowedIPs: ['10.62.0.3/32'] });
    await dir.writeHost('b', hostB);
    const from = db.records().length;
    db.signal('SIGHUP');
    await db.waitForLog(/configuration reloaded/, 10_000, from);
    const r = await transfer;
    expect(r.received).toBe(24 * 1024 * 1024);
    expect(r.remote).toBe(r.local);

    expect(await pingUntil(tc, ADDR.tbTun.v4, 10_000)).toMatch(/1 received/);
    const after = (await status(db)).peers.find((p) => p.name === 'a');
    // No new handshake was needed for the unchanged peer.
    expect(after?.lastHandshakeWallMs).toBe(before?.lastHandshakeWallMs);
  });

  it('reload: an invalid edit is rejected with its errors and nothing changes', async () => {
    const good = await readFile(cfgBPath, 'utf8');
    const broken = JSON.parse(good) as { peers: { allowedIPs: string[] }[] };
    broken.peers[0].allowedIPs = ['10.61.1.0/33'];
    await writeFile(cfgBPath, JSON.stringify(broken));
    const from = db.records().length;
    db.signal('SIGHUP');
    const rec = await db.waitForLog(/reload rejected/, 10_000, from);
    expect(JSON.stringify(rec)).toContain('peers[0].allowedIPs[0]');
    await writeFile(cfgBPath, good);
    expect(await pingUntil(bed.la, ADDR.lb.v4, 5_000)).toMatch(/1 received/);
    expect(await pingUntil(tc, ADDR.tbTun.v4, 5_000)).toMatch(/1 received/);
  });

  it("drops and counts a packet whose inner source is outside the peer's allowed IPs", async () => {
    const s0 = await status(db);
    const before = s0.drops['source-not-allowed'] ?? 0;
    // Host A sends from an address B does not allow for A; A routes it into the tunnel.
    await bed.ta.exec('ip', ['addr', 'add', '10.99.0.1/32', 'dev', 'lo']);
    await bed.ta.exec('ping', ['-n', '-c', '3', '-i', '0.2', '-W', '1', '-I', '10.99.0.1', ADDR.lb.v4]).catch(() => undefined);
    const s1 = await status(db);
    const after = s1.drops['source-not-allowed'] ?? 0;
    expect(after - before).toBeGreaterThanOrEqual(3);
    // They arrived over UDP but never reached the TUN device.
    expect(s1.packets.udpRx - s0.packets.udpRx).toBeGreaterThanOrEqual(3);
  });

  it('restart: after kill -9 traffic resumes within Rekey-Timeout plus a margin', async () => {
    db.signal('SIGKILL');
    await db.wait();
    db = await startDaemon(bed.tb, cfgBPath);
    const t0 = Date.now();
    await pingUntil(bed.la, ADDR.lb.v4, 10_000);
    expect(Date.now() - t0).toBeLessThan(5_000 + 3_000);
  });

  it("roaming: host B's underlay address changes and traffic continues", async () => {
    await bed.tb.exec('ip', ['addr', 'del', `${ADDR.tbUnder.v4}/24`, 'dev', bed.underB]);
    await bed.tb.exec('ip', ['addr', 'add', '10.60.0.3/24', 'dev', bed.underB]);
    // B speaks first from its new address; A learns it from the authenticated packet.
    expect(await pingUntil(bed.lb, ADDR.la.v4, 20_000)).toMatch(/1 received/);
    expect(await pingUntil(bed.la, ADDR.lb.v4, 5_000)).toMatch(/1 received/);
    const peer = (await status(da)).peers.find((p) => p.name === 'b');
    expect(peer?.endpoint).toBe('10.60.0.3:51820');
  });
});
