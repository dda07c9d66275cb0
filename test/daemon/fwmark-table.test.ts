/**
 * Issue 16: interface.fwmark (SO_MARK on the native sockets; the control
 * socket's fwmark=, `wg set IF fwmark`; reload without a rebind) and
 * interface.table (auto, off, a number; a reload moves the owned routes,
 * all or nothing). Two namespaces joined by a veth, tunvpn on both ends.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeIntegration, linkNamespaces, pingUntil, uniqueSuffix, Netns, run } from '../helpers/netns.js';
import { ConfigDir, cliPath, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, type KeyPairText } from '../helpers/daemon.js';

/** The marks `ss -e` reports for our UDP port in `ns` (one per socket; "none" for an unmarked one). */
async function socketMarks(ns: Netns, port: number): Promise<string[]> {
  const { stdout } = await ns.exec('ss', ['-u', '-a', '-n', '-e', 'sport', '=', `:${port}`]);
  return stdout
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '')
    .map((l) => /fwmark:(0x[0-9a-f]+)/.exec(l)?.[1] ?? 'none');
}

async function patchConfig(path: string, iface: Record<string, unknown>): Promise<void> {
  const cfg = JSON.parse(await readFile(path, 'utf8')) as { interface: Record<string, unknown> };
  Object.assign(cfg.interface, iface);
  for (const [k, v] of Object.entries(iface)) if (v === undefined) delete cfg.interface[k];
  await writeFile(path, JSON.stringify(cfg, null, 2) + '\n', { mode: 0o600 });
}

describeIntegration('interface.fwmark and interface.table (issue 16)', ['ping', 'wg', 'ss'], () => {
  let a: Netns;
  let b: Netns;
  let dir: ConfigDir;
  let ka: KeyPairText;
  let kb: KeyPairText;
  let cfgA: string;
  let cfgB: string;
  let underA: string;
  const suffix = uniqueSuffix();
  const ifA = `fma${suffix}`.slice(0, 15);
  const ifB = `fmb${suffix}`.slice(0, 15);
  const daemons: DaemonProcess[] = [];
  let da: DaemonProcess;

  beforeAll(async () => {
    a = await Netns.create('fma');
    b = await Netns.create('fmb');
    underA = (await linkNamespaces(a, b, '192.168.75.1/24', '192.168.75.2/24')).ifA;
    dir = await ConfigDir.create();
    ka = makeKeyPair();
    kb = makeKeyPair();
    cfgA = await dir.writeHost('a', {
      interfaceName: ifA,
      privateKey: ka.privateKey,
      listenPort: 51820,
      addresses: ['10.85.0.1/24'],
      peers: [{ name: 'b', publicKey: kb.publicKey, endpoint: '192.168.75.2:51820', allowedIPs: ['10.85.0.2/32', '10.86.0.0/24'] }],
    });
    cfgB = await dir.writeHost('b', {
      interfaceName: ifB,
      privateKey: kb.privateKey,
      listenPort: 51820,
      addresses: ['10.85.0.2/24'],
      peers: [{ name: 'a', publicKey: ka.publicKey, endpoint: '192.168.75.1:51820', allowedIPs: ['10.85.0.1/32'] }],
    });
    await patchConfig(cfgA, { fwmark: 0x1234 });
    da = await startDaemon(a, cfgA);
    daemons.push(da);
    daemons.push(await startDaemon(b, cfgB));
  });

  afterAll(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
    await a?.destroy();
    await b?.destroy();
    await dir?.destroy();
  });

  it('interface.fwmark marks both native sockets; get (wg show) reports it', async () => {
    expect(await socketMarks(a, 51820)).toEqual(['0x1234', '0x1234']);
    expect((await a.exec('wg', ['show', ifA, 'fwmark'])).stdout.trim()).toBe('0x1234');
    expect(await socketMarks(b, 51820)).toEqual(['none', 'none']);
  });

  it('wg set fwmark changes the mark of the running sockets (no rebind: same port, same session); 0 clears it', async () => {
    expect(await pingUntil(a, '10.85.0.2', 10_000)).toMatch(/1 received/);
    const hs0 = (await a.exec('wg', ['show', ifA, 'latest-handshakes'])).stdout.trim();
    await a.exec('wg', ['set', ifA, 'fwmark', '0x99']);
    expect(await socketMarks(a, 51820)).toEqual(['0x99', '0x99']);
    expect((await a.exec('wg', ['show', ifA, 'fwmark'])).stdout.trim()).toBe('0x99');
    expect(await pingUntil(a, '10.85.0.2', 5_000)).toMatch(/1 received/);
    // The same session: no new handshake was needed.
    expect((await a.exec('wg', ['show', ifA, 'latest-handshakes'])).stdout.trim()).toBe(hs0);
    await a.exec('wg', ['set', ifA, 'fwmark', '0']);
    expect(await socketMarks(a, 51820)).toEqual(['none', 'none']);
    expect((await a.exec('wg', ['show', ifA, 'fwmark'])).stdout.trim()).toBe('off');
  });

  it('a reload applies a changed fwmark in place', async () => {
    await patchConfig(cfgA, { fwmark: 4242 });
    const from = da.records().length;
    da.signal('SIGHUP');
    expect(await da.waitForLog(/^configuration reloaded/, 10_000, from)).toMatchObject({ interfaceChanged: ['fwmark'] });
    expect(await socketMarks(a, 51820)).toEqual(['0x1092', '0x1092']);
  });

  it('table N puts every route into table N; a reload moves them (to off: none; back to auto: main)', async () => {
    const routesIn = async (table: string): Promise<string> =>
      (await a.exec('ip', ['-4', 'route', 'show', 'table', table, 'dev', ifA]).catch(() => ({ stdout: '' }))).stdout;
    expect(await routesIn('main')).toContain('10.86.0.0/24');
    let from = da.records().length;
    await patchConfig(cfgA, { table: 1234 });
    da.signal('SIGHUP');
    await da.waitForLog(/^configuration reloaded/, 10_000, from);
    expect(await routesIn('1234')).toContain('10.86.0.0/24');
    expect(await routesIn('main')).not.toContain('10.86.0.0/24');

    // All or nothing: table 1235 already routes 10.86.0.0/24 elsewhere, so the move is refused and the routes stay in 1234.
    await a.exec('ip', ['-4', 'route', 'add', '10.86.0.0/24', 'dev', underA, 'table', '1235']);
    from = da.records().length;
    await patchConfig(cfgA, { table: 1235 });
    da.signal('SIGHUP');
    const rejected = await da.waitForLog(/^reload rejected/, 10_000, from);
    expect(String(rejected.reason)).toMatch(/route 10\.86\.0\.0\/24 exists via dev \S+ in table 1235/);
    expect(await routesIn('1234')).toContain('10.86.0.0/24');
    await a.exec('ip', ['-4', 'route', 'del', '10.86.0.0/24', 'dev', underA, 'table', '1235']);

    from = da.records().length;
    await patchConfig(cfgA, { table: 'off' });
    da.signal('SIGHUP');
    await da.waitForLog(/^configuration reloaded/, 10_000, from);
    expect(await routesIn('1234')).not.toContain('10.86.0.0/24');
    expect(await routesIn('main')).not.toContain('10.86.0.0/24');
    // The interface's own connected route is the kernel's, not ours: it stays.
    expect(await routesIn('main')).toContain('10.85.0.0/24');

    from = da.records().length;
    await patchConfig(cfgA, { table: undefined });
    da.signal('SIGHUP');
    await da.waitForLog(/^configuration reloaded/, 10_000, from);
    expect(await routesIn('main')).toContain('10.86.0.0/24');
  });
});

describeIntegration('fwmark on the node:dgram fallback (issue 16)', ['wg'], () => {
  let ns: Netns;
  let dir: ConfigDir;
  const ifname = `fmd${uniqueSuffix()}`.slice(0, 15);

  beforeAll(async () => {
    ns = await Netns.create('fmd');
    dir = await ConfigDir.create();
  });

  afterAll(async () => {
    await ns?.destroy();
    await dir?.destroy();
  });

  describe('node:dgram cannot set SO_MARK', () => {
    it('refuses to start with a fwmark, saying why; wg set fwmark on a running one is EINVAL and changes nothing', async () => {
      const k = makeKeyPair();
      const p = makeKeyPair();
      const cfg = await dir.writeHost('d', {
        interfaceName: ifname,
        privateKey: k.privateKey,
        listenPort: 51830,
        addresses: ['10.87.0.1/24'],
        peers: [{ name: 'p', publicKey: p.publicKey, allowedIPs: ['10.87.0.2/32'] }],
      });
      await patchConfig(cfg, { fwmark: 7 });
      const r = await run('ip', ['netns', 'exec', ns.name, 'env', 'TUNVPN_UDP=dgram', process.execPath, cliPath(), 'run', '--config', cfg], {
        timeoutMs: 20_000,
      }).then(
        () => ({ code: 0, stderr: '', stdout: '' }),
        (err: { code?: number; stderr?: string; stdout?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '', stdout: err.stdout ?? '' }),
      );
      expect(r.code).not.toBe(0);
      expect(r.stderr + r.stdout).toMatch(/a fwmark \(interface\.fwmark, or a full tunnel's own mark\) needs the native UDP binding/);

      await patchConfig(cfg, { fwmark: 0 });
      process.env.TUNVPN_UDP = 'dgram';
      let d: DaemonProcess;
      try {
        d = await startDaemon(ns, cfg);
      } finally {
        delete process.env.TUNVPN_UDP;
      }
      try {
        const failed = await ns.exec('wg', ['set', ifname, 'fwmark', '5']).then(
          () => 'applied',
          (err: { stderr?: string }) => err.stderr ?? 'failed',
        );
        expect(failed).toMatch(/Invalid argument/);
        expect(await d.waitForLog(/^control socket change rejected/)).toMatchObject({ field: 'interface.fwmark' });
        expect((await ns.exec('wg', ['show', ifname, 'fwmark'])).stdout.trim()).toBe('off');
      } finally {
        await d.stop();
      }
    });
  });
});
