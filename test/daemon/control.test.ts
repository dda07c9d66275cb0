/**
 * Operating a running daemon like WireGuard: the real `wg` tool over the
 * control socket (show, dump, showconf, set, remove, listen-port), malformed
 * control input, and the Prometheus endpoint during traffic.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, pingUntil, sleep } from '../helpers/netns.js';
import { ADDR, cliPath, ConfigDir, SiteToSite, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, tcpTransfer, uapiRequest, type KeyPairText } from '../helpers/daemon.js';

async function scrape(bed: SiteToSite): Promise<string> {
  const script =
    "require('http').get('http://127.0.0.1:9586/metrics', r => { let b=''; r.on('data', d => b += d); r.on('end', () => process.stdout.write(b)); })";
  return (await bed.ta.exec(process.execPath, ['-e', script])).stdout;
}

function metric(text: string, name: string, label: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${label}}`));
  return line ? Number(line.split(' ').pop()) : NaN;
}

describeIntegration('control socket with the real wg tool, and metrics', ['wg', 'ping'], () => {
  let bed: SiteToSite;
  let dir: ConfigDir;
  let a: KeyPairText;
  let b: KeyPairText;
  let da: DaemonProcess;
  let db: DaemonProcess;
  const IF = 'ctla0';

  beforeAll(async () => {
    bed = await SiteToSite.create('ct');
    dir = await ConfigDir.create();
    [a, b] = [makeKeyPair(), makeKeyPair()];
    const cfgA = await dir.writeHost('a', {
      interfaceName: IF,
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`],
      metricsListen: '127.0.0.1:9586',
      peers: [
        {
          name: 'site-b',
          publicKey: b.publicKey,
          endpoint: `${ADDR.tbUnder.v4}:51820`,
          allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4],
          persistentKeepalive: 25,
        },
      ],
    });
    const cfgB = await dir.writeHost('b', {
      interfaceName: 'ctlb0',
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`],
      peers: [{ name: 'site-a', publicKey: a.publicKey, endpoint: `${ADDR.taUnder.v4}:51820`, allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4] }],
    });
    da = await startDaemon(bed.ta, cfgA);
    db = await startDaemon(bed.tb, cfgB);
    await pingUntil(bed.la, ADDR.lb.v4, 15_000);
  });

  afterAll(async () => {
    await Promise.all([da?.stop(), db?.stop()]);
    await bed?.destroy();
    await dir?.destroy();
  });

  it("wg show, wg show dump and wg showconf report the daemon's state", async () => {
    const dump = (await bed.ta.exec('wg', ['show', IF, 'dump'])).stdout
      .trim()
      .split('\n')
      .map((l) => l.split('\t'));
    expect(dump[0][0]).toBe(a.privateKey);
    expect(dump[0][1]).toBe(a.publicKey);
    expect(dump[0][2]).toBe('51820');
    const [pub, psk, endpoint, allowed, handshake, rx, tx, keepalive] = dump[1];
    expect(pub).toBe(b.publicKey);
    expect(psk).toBe('(none)');
    expect(endpoint).toBe(`${ADDR.tbUnder.v4}:51820`);
    expect(allowed.split(',').sort()).toEqual([`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4].sort());
    expect(Number(handshake)).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(Number(rx)).toBeGreaterThan(0);
    expect(Number(tx)).toBeGreaterThan(0);
    expect(keepalive).toBe('25');

    const show = (await bed.ta.exec('wg', ['show', IF])).stdout;
    expect(show).toContain(`interface: ${IF}`);
    expect(show).toContain(`peer: ${b.publicKey}`);
    expect(show).toMatch(/latest handshake: (Now|.* ago)/);
    expect(show).not.toContain(a.privateKey);

    const conf = (await bed.ta.exec('wg', ['showconf', IF])).stdout;
    expect(conf).toMatch(/ListenPort = 51820/);
    expect(conf).toContain(`PublicKey = ${b.publicKey}`);
    expect(conf).toContain(`Endpoint = ${ADDR.tbUnder.v4}:51820`);

    const ours = (await bed.ta.exec(process.execPath, [cliPath(), 'show', IF, '--json'])).stdout;
    const parsed = JSON.parse(ours) as Record<string, { publicKey: string; peers: { publicKey: string }[] }>;
    expect(parsed[IF].publicKey).toBe(a.publicKey);
    expect(parsed[IF].peers[0].publicKey).toBe(b.publicKey);
    expect(ours).not.toContain(a.privateKey);
  });

  it('wg set allowed-ips changes routing, and the routes follow', async () => {
    await bed.ta.exec('wg', ['set', IF, 'peer', b.publicKey, 'allowed-ips', `${ADDR.tbTun.v4}/32,${ADDR.lanB.v4},10.61.3.0/24`]);
    const routes = (await bed.ta.exec('ip', ['-o', 'route', 'show', 'dev', IF])).stdout;
    expect(routes).toContain('10.61.3.0/24');
    const allowed = (await bed.ta.exec('wg', ['show', IF, 'allowed-ips'])).stdout;
    expect(allowed).toContain('10.61.3.0/24');
  });

  it('garbage, unknown keys and a megabyte line on the socket get an errno; forwarding goes on', async () => {
    expect(await uapiRequest(IF, 'hello\n\n')).toMatch(/errno=-\d+/);
    expect(await uapiRequest(IF, 'set=1\nbogus_key=1\n\n')).toMatch(/errno=-22/);
    expect(await uapiRequest(IF, Buffer.concat([Buffer.from('set=1\nprivate_key='), Buffer.alloc(1 << 20, 0x61), Buffer.from('\n\n')]))).toMatch(/errno=-\d+/);
    // A client that leaves mid-request.
    const sock = connect(`/var/run/wireguard/${IF}.sock`);
    sock.write('set=1\nlisten_po');
    sock.destroy();
    await Promise.all(Array.from({ length: 50 }, () => uapiRequest(IF, 'get=1\n\n')));
    expect(await pingUntil(bed.la, ADDR.lb.v4, 5_000)).toMatch(/1 received/);
    expect(await uapiRequest(IF, 'get=1\n\n')).toMatch(/errno=0\n\n$/);
  });

  it('wg set listen-port rebinds, and the peer follows us to the new port', async () => {
    await bed.ta.exec('wg', ['set', IF, 'listen-port', '51821']);
    expect((await bed.ta.exec('wg', ['show', IF, 'listen-port'])).stdout.trim()).toBe('51821');
    expect(await pingUntil(bed.la, ADDR.lb.v4, 10_000)).toMatch(/1 received/);
    const bSeesA = (await bed.tb.exec('ip', ['-o', 'link'])).stdout;
    expect(bSeesA).toContain('ctlb0');
  });

  it('metrics count traffic while it flows', async () => {
    const before = await scrape(bed);
    const rx0 = metric(before, 'tunvpn_peer_receive_packets_total', 'peer="site-b"');
    expect(rx0).toBeGreaterThan(0);
    await bed.la.exec('ping', ['-n', '-c', '20', '-i', '0.05', ADDR.lb.v4]);
    const after = await scrape(bed);
    expect(metric(after, 'tunvpn_peer_receive_packets_total', 'peer="site-b"')).toBeGreaterThanOrEqual(rx0 + 20);
    expect(after).toContain('tunvpn_dropped_packets_total{reason="replay"}');
    // A TCP transfer from LAN A: host A reads it from the TUN as super-packets.
    const r = await tcpTransfer(bed.la, bed.lb, ADDR.lb.v4, 5301, 2 << 20);
    expect(r.remote).toBe(r.local);
    const tcp = await scrape(bed);
    expect(metric(tcp, 'tunvpn_tun_super_packets_total', 'direction="read"')).toBeGreaterThan(0);
    expect(metric(tcp, 'tunvpn_tun_super_packet_segments_total', 'direction="read"')).toBeGreaterThan(
      metric(tcp, 'tunvpn_tun_super_packets_total', 'direction="read"'),
    );
    expect(after).toContain('process_resident_memory_bytes');
    expect(after).not.toContain(a.privateKey);
  });

  it("wg set peer remove stops traffic; a reload restores the config file's peer", async () => {
    await bed.ta.exec('wg', ['set', IF, 'peer', b.publicKey, 'remove']);
    expect((await bed.ta.exec('wg', ['show', IF, 'peers'])).stdout.trim()).toBe('');
    const routes = (await bed.ta.exec('ip', ['-o', 'route', 'show', 'dev', IF])).stdout;
    expect(routes).not.toContain(ADDR.lanB.v4);
    await expect(pingUntil(bed.la, ADDR.lb.v4, 1_500)).rejects.toThrow();

    const from = da.records().length;
    da.signal('SIGHUP');
    await da.waitForLog(/configuration reloaded/, 10_000, from);
    expect((await bed.ta.exec('wg', ['show', IF, 'peers'])).stdout.trim()).toBe(b.publicKey);
    expect((await bed.ta.exec('wg', ['show', IF, 'listen-port'])).stdout.trim()).toBe('51820');
    expect(await pingUntil(bed.la, ADDR.lb.v4, 10_000)).toMatch(/1 received/);
    await sleep(10);
  });
});
