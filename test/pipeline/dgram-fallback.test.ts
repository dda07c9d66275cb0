/**
 * The portable fallback really is one: a copy of the compiled package
 * without the native UDP addon (build/Release/tunvpn_udp.node absent, the
 * TUN addon present), two daemons started from it in two namespaces, no
 * TUNVPN_UDP switch. Each falls back to node:dgram by itself and the
 * tunnel carries pings both ways, the endpoint B learns from A's packets
 * included. Before the endpoint codec moved to TypeScript this could not
 * work: every datagram (and every configured endpoint) went through the
 * addon's encodeEndpoint.
 */
import { cp, mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, linkNamespaces, Netns, pingUntil } from '../helpers/netns.js';
import { ConfigDir, DaemonProcess, projectRoot } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, type KeyPairText } from '../helpers/daemon.js';

interface Status {
  peers: { endpoint?: string; rxBytes: number; txBytes: number }[];
}

async function status(d: DaemonProcess): Promise<Status> {
  const from = d.records().length;
  d.signal('SIGUSR1');
  const rec = await d.waitForLog(/^status$/, 5_000, from);
  return rec.status as Status;
}

describeIntegration('node:dgram fallback with the UDP addon absent', ['ip', 'ping'], () => {
  let pkg: string;
  let ta: Netns;
  let tb: Netns;
  let dir: ConfigDir;
  let a: KeyPairText;
  let b: KeyPairText;
  const daemons: DaemonProcess[] = [];

  beforeAll(async () => {
    // The package as npm would lay it out, minus one file.
    const root = projectRoot();
    pkg = await mkdtemp(join(tmpdir(), 'tunvpn-noudp-'));
    await cp(join(root, 'dist'), join(pkg, 'dist'), { recursive: true });
    for (const f of ['package.json', 'binding.gyp']) await cp(join(root, f), join(pkg, f));
    await mkdir(join(pkg, 'build', 'Release'), { recursive: true });
    await cp(join(root, 'build', 'Release', 'tunvpn_tun.node'), join(pkg, 'build', 'Release', 'tunvpn_tun.node'));
    await symlink(join(root, 'node_modules'), join(pkg, 'node_modules'));
    ta = await Netns.create('fbka');
    tb = await Netns.create('fbkb');
    await linkNamespaces(ta, tb, '10.73.0.1/24', '10.73.0.2/24');
    dir = await ConfigDir.create();
    [a, b] = await Promise.all([makeKeyPair(), makeKeyPair()]);
  });

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
    await Promise.all([ta?.destroy(), tb?.destroy()]);
    await dir?.destroy();
    if (pkg) await rm(pkg, { recursive: true, force: true });
  });

  function start(ns: Netns, config: string): Promise<DaemonProcess> {
    const env = { ...process.env };
    delete env.TUNVPN_UDP;
    const child = ns.spawn(process.execPath, [join(pkg, 'dist', 'src', 'cli', 'main.js'), 'run', '--config', config], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env,
    });
    const d = new DaemonProcess(child);
    daemons.push(d);
    return d.waitForLog(/^tunvpn up/, 15_000).then(() => d);
  }

  it("falls back by itself and carries pings both ways; B learns A's endpoint from its packets", async () => {
    expect((await readdir(join(pkg, 'build', 'Release'))).sort()).toEqual(['tunvpn_tun.node']);
    const cfgA = await dir.writeHost('a', {
      interfaceName: 'fbk0',
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: ['10.74.0.1/24'],
      peers: [{ name: 'b', publicKey: b.publicKey, endpoint: '10.73.0.2:51821', allowedIPs: ['10.74.0.2/32'] }],
    });
    const cfgB = await dir.writeHost('b', {
      interfaceName: 'fbk1',
      privateKey: b.privateKey,
      listenPort: 51821,
      addresses: ['10.74.0.2/24'],
      peers: [{ name: 'a', publicKey: a.publicKey, allowedIPs: ['10.74.0.1/32'] }],
    });
    const da = await start(ta, cfgA);
    const db = await start(tb, cfgB);
    for (const d of [da, db]) expect(d.records().find((r) => r.msg === 'UDP transport open')).toMatchObject({ transport: 'dgram' });
    expect(await pingUntil(ta, '10.74.0.2', 10_000)).toMatch(/1 received/);
    expect(await pingUntil(tb, '10.74.0.1', 5_000)).toMatch(/1 received/);
    const { stdout } = await ta.exec('ping', ['-n', '-c', '20', '-i', '0.01', '-W', '2', '10.74.0.2']);
    expect(stdout).toMatch(/20 received/);
    const sb = await status(db);
    expect(sb.peers[0].endpoint).toBe('10.73.0.1:51820');
    expect(sb.peers[0].rxBytes).toBeGreaterThan(20 * 84);
    const sa = await status(da);
    expect(sa.peers[0].txBytes).toBeGreaterThan(20 * 84);
  });
});
