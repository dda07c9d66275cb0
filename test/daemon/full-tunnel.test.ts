/**
 * Issue 16 item 1: a full tunnel as wg-quick makes one. A client whose
 * underlay has a default route through its own gateway takes 0.0.0.0/0 and
 * ::/0 through the tunnel to a server; a host beyond the server (reached
 * through nftables masquerade on the server) answers ping and TCP; the
 * client's datagrams to the server leave by the underlay (counted by
 * nftables on the client's output: on the underlay, never on the tunnel).
 * Then the same against Debian's wireguard-go as the server.
 *
 *   client ──underlay── gw ──underlay── server ──── beyond
 *   192.168.70.2        .1 / 198.51.100.1   .2 / 203.0.113.1   203.0.113.2
 *   fd70::2             ::1 / fd71::1       ::2 / fd72::1      fd72::2
 *
 * And routes and rules are owned: `ip rule` and `ip route show table all`
 * (both families) are the same before start and after stop, and after a
 * kill -9, a restart and a stop.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, linkNamespaces, pingUntil, sleep, uniqueSuffix, Netns } from '../helpers/netns.js';
import { ConfigDir, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, tcpTransfer, type KeyPairText } from '../helpers/daemon.js';

const WG_ENV = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };

const A = {
  client: { v4: '192.168.70.2', v6: 'fd70::2' },
  gwC: { v4: '192.168.70.1', v6: 'fd70::1' },
  gwS: { v4: '198.51.100.1', v6: 'fd71::1' },
  server: { v4: '198.51.100.2', v6: 'fd71::2' },
  serverB: { v4: '203.0.113.1', v6: 'fd72::1' },
  beyond: { v4: '203.0.113.2', v6: 'fd72::2' },
  tunC: { v4: '10.80.0.2', v6: 'fd80::2' },
  tunS: { v4: '10.80.0.1', v6: 'fd80::1' },
};

/** Everything routing-related a start could change, both families. */
async function routingDump(ns: Netns): Promise<string> {
  const parts: string[] = [];
  for (const args of [
    ['-4', 'rule', 'show'],
    ['-6', 'rule', 'show'],
    ['-4', 'route', 'show', 'table', 'all'],
    ['-6', 'route', 'show', 'table', 'all'],
  ]) {
    parts.push(`## ip ${args.join(' ')}`, (await ns.exec('ip', args)).stdout.trim());
  }
  return parts.join('\n');
}

/**
 * The byte count of the nftables counter named `name` in table inet
 * ftcount. Bytes, not packets: with UDP GSO one packet at the output hook
 * is many datagrams on the wire.
 */
async function counter(ns: Netns, name: string): Promise<number> {
  const { stdout } = await ns.exec('nft', ['-j', 'list', 'counter', 'inet', 'ftcount', name]);
  const parsed = JSON.parse(stdout) as { nftables: { counter?: { bytes: number } }[] };
  const c = parsed.nftables.find((x) => x.counter !== undefined)?.counter;
  if (c === undefined) throw new Error(`no counter ${name}`);
  return c.bytes;
}

describeIntegration('full tunnel (issue 16 item 1)', ['ping', 'nft', 'wg', 'wireguard-go'], () => {
  let client: Netns;
  let gw: Netns;
  let server: Netns;
  let beyond: Netns;
  let dir: ConfigDir;
  let stateDir: string;
  let c: KeyPairText;
  let s: KeyPairText;
  let clientUnderlay: string;
  let clientCfg: string;
  const suffix = uniqueSuffix();
  const cIf = `ftc${suffix}`.slice(0, 15);
  const sIf = `fts${suffix}`.slice(0, 15);
  const wgIf = `ftw${suffix}`.slice(0, 15);
  let serverDaemon: DaemonProcess | undefined;
  const running: DaemonProcess[] = [];
  let wgProcess: ReturnType<Netns['spawn']> | undefined;
  let baseline = '';

  beforeAll(async () => {
    process.env.TUNVPN_STATE_DIR = stateDir = await mkdtemp(join(tmpdir(), 'tunvpn-state-'));
    client = await Netns.create('ftc');
    gw = await Netns.create('ftg');
    server = await Netns.create('fts');
    beyond = await Netns.create('ftb');
    const cg = await linkNamespaces(client, gw, [`${A.client.v4}/24`, `${A.client.v6}/64`], [`${A.gwC.v4}/24`, `${A.gwC.v6}/64`]);
    clientUnderlay = cg.ifA;
    await linkNamespaces(gw, server, [`${A.gwS.v4}/24`, `${A.gwS.v6}/64`], [`${A.server.v4}/24`, `${A.server.v6}/64`]);
    const sb = await linkNamespaces(server, beyond, [`${A.serverB.v4}/24`, `${A.serverB.v6}/64`], [`${A.beyond.v4}/24`, `${A.beyond.v6}/64`]);
    await gw.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    await server.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    // The client's underlay: a default route through its own gateway (what a full tunnel must not break).
    await client.exec('ip', ['-4', 'route', 'add', 'default', 'via', A.gwC.v4]);
    await client.exec('ip', ['-6', 'route', 'add', 'default', 'via', A.gwC.v6]);
    await server.exec('ip', ['-4', 'route', 'add', 'default', 'via', A.gwS.v4]);
    await server.exec('ip', ['-6', 'route', 'add', 'default', 'via', A.gwS.v6]);
    // NAT on the server towards the host beyond: it has no route to the tunnel's addresses.
    const nat = `table inet ftnat {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname "${sb.ifA}" masquerade\n }\n}\n`;
    await writeFile(join(stateDir, 'nat.nft'), nat);
    await server.exec('nft', ['-f', join(stateDir, 'nat.nft')]);
    // Counts the client's datagrams to the server's port by the interface they leave by.
    const count =
      `table inet ftcount {\n counter under {}\n counter tunnel {}\n chain out {\n  type filter hook output priority 0; policy accept;\n` +
      `  oifname "${clientUnderlay}" udp dport 51820 counter name "under"\n  oifname "${cIf}" udp dport 51820 counter name "tunnel"\n }\n}\n`;
    await writeFile(join(stateDir, 'count.nft'), count);
    await client.exec('nft', ['-f', join(stateDir, 'count.nft')]);

    dir = await ConfigDir.create();
    c = makeKeyPair();
    s = makeKeyPair();
    clientCfg = await dir.writeHost('client', {
      interfaceName: cIf,
      privateKey: c.privateKey,
      listenPort: 51820,
      addresses: [`${A.tunC.v4}/24`, `${A.tunC.v6}/64`],
      peers: [{ name: 'server', publicKey: s.publicKey, endpoint: `${A.server.v4}:51820`, allowedIPs: ['0.0.0.0/0', '::/0'], persistentKeepalive: 5 }],
    });
    const serverCfg = await dir.writeHost('server', {
      interfaceName: sIf,
      privateKey: s.privateKey,
      listenPort: 51820,
      addresses: [`${A.tunS.v4}/24`, `${A.tunS.v6}/64`],
      peers: [{ name: 'client', publicKey: c.publicKey, allowedIPs: [`${A.tunC.v4}/32`, `${A.tunC.v6}/128`] }],
    });
    baseline = await routingDump(client);
    serverDaemon = await startDaemon(server, serverCfg);
    running.push(serverDaemon);
  });

  afterAll(async () => {
    await Promise.all(running.map((d) => d.stop()));
    wgProcess?.kill('SIGKILL');
    await rm(`/var/run/wireguard/${wgIf}.sock`, { force: true });
    for (const ns of [client, gw, server, beyond]) await ns?.destroy();
    await dir?.destroy();
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
    delete process.env.TUNVPN_STATE_DIR;
  });

  it('through a tunvpn server: the default routes go to table 51820, with the two rules per family, the sockets marked 51820', async () => {
    const d = await startDaemon(client, clientCfg);
    running.push(d);
    try {
      const rules4 = (await client.exec('ip', ['-4', 'rule', 'show'])).stdout;
      const rules6 = (await client.exec('ip', ['-6', 'rule', 'show'])).stdout;
      for (const rules of [rules4, rules6]) {
        expect(rules).toMatch(/^32764:\s+from all lookup main suppress_prefixlength 0/m);
        expect(rules).toMatch(/^32765:\s+not from all fwmark 0xca6c lookup 51820/m);
      }
      expect((await client.exec('ip', ['-4', 'route', 'show', 'table', '51820'])).stdout).toMatch(new RegExp(`^default dev ${cIf}`, 'm'));
      expect((await client.exec('ip', ['-6', 'route', 'show', 'table', '51820'])).stdout).toMatch(new RegExp(`^default dev ${cIf}`, 'm'));
      // The main table keeps the underlay's default route.
      expect((await client.exec('ip', ['-4', 'route', 'show', 'table', 'main'])).stdout).toMatch(new RegExp(`^default via ${A.gwC.v4}`, 'm'));
      // The sockets carry the mark; get (wg show) reports the configured one (none), as wireguard-go reports what was set.
      expect((await client.exec('ss', ['-u', '-a', '-n', '-e', 'sport', '=', ':51820'])).stdout).toMatch(/fwmark:0xca6c/);
      expect((await client.exec('wg', ['show', cIf, 'fwmark'])).stdout.trim()).toBe('off');
      // The kernel's decision, both ways: unmarked traffic into the tunnel, marked traffic by the underlay.
      expect((await client.exec('ip', ['-4', 'route', 'get', A.beyond.v4])).stdout).toContain(`dev ${cIf}`);
      expect((await client.exec('ip', ['-4', 'route', 'get', A.server.v4, 'mark', '51820'])).stdout).toContain(`dev ${clientUnderlay}`);
      // A more specific main-table route still wins (suppress_prefixlength 0).
      expect((await client.exec('ip', ['-4', 'route', 'get', A.gwC.v4])).stdout).toContain(`dev ${clientUnderlay}`);

      const under0 = await counter(client, 'under');
      expect(await pingUntil(client, A.beyond.v4, 15_000)).toMatch(/1 received/);
      expect(await pingUntil(client, A.beyond.v6, 10_000)).toMatch(/1 received/);
      const t = await tcpTransfer(client, beyond, A.beyond.v4, 5201, 2 * 1024 * 1024, 60);
      expect(t.received).toBe(t.sent);
      const under = (await counter(client, 'under')) - under0;
      // 2 MB of payload left by the underlay (encrypted, so more), none of it into the tunnel.
      expect(under).toBeGreaterThan(2 * 1024 * 1024);
      expect(await counter(client, 'tunnel')).toBe(0);
    } finally {
      await d.stop();
    }
    expect(await routingDump(client)).toBe(baseline);
  });

  it('a kill -9 leaves the rules; the next start removes exactly those, and its stop leaves everything as before', async () => {
    // Someone else's rule with the same mark and table but another priority is never touched.
    await client.exec('ip', ['-4', 'rule', 'add', 'not', 'fwmark', '51820', 'table', '51820', 'priority', '30000']);
    const withForeign = await routingDump(client);
    const d1 = await startDaemon(client, clientCfg);
    running.push(d1);
    d1.signal('SIGKILL');
    await d1.wait();
    // The interface went with the process (and its routes); the rules stayed.
    await sleep(200);
    const left = await routingDump(client);
    expect(left).not.toBe(withForeign);
    expect(left).toMatch(/^32765:\s+not from all fwmark 0xca6c lookup 51820/m);
    const d2 = await startDaemon(client, clientCfg);
    running.push(d2);
    expect(d2.records().filter((r) => r.msg === 'removed a rule an earlier run of this interface left behind')).toHaveLength(4);
    expect(await pingUntil(client, A.beyond.v4, 15_000)).toMatch(/1 received/);
    // Exit 0: a stop that outran the 5 s grace (SIGKILL) would leave its rules, and say so here first.
    expect(await d2.stop()).toBe(0);
    expect(await routingDump(client)).toBe(withForeign);
    await client.exec('ip', ['-4', 'rule', 'del', 'priority', '30000']);
    expect(await routingDump(client)).toBe(baseline);
  });

  it('the same after kill -9 when the rules cannot be recorded (read-only /run under the systemd units)', async () => {
    const saved = process.env.TUNVPN_STATE_DIR;
    const blocked = join(stateDir, 'not-a-dir');
    await writeFile(blocked, '');
    process.env.TUNVPN_STATE_DIR = blocked;
    try {
      const d1 = await startDaemon(client, clientCfg);
      running.push(d1);
      expect(d1.records().some((r) => r.msg === 'cannot record the policy rules: after a crash only those the next start wants itself are found again')).toBe(
        true,
      );
      d1.signal('SIGKILL');
      await d1.wait();
      await sleep(200);
      expect(await routingDump(client)).not.toBe(baseline);
      const d2 = await startDaemon(client, clientCfg);
      running.push(d2);
      expect(d2.records().filter((r) => r.msg === 'removed a rule an earlier run of this interface left behind')).toHaveLength(4);
      expect(await d2.stop()).toBe(0);
      expect(await routingDump(client)).toBe(baseline);
    } finally {
      process.env.TUNVPN_STATE_DIR = saved;
    }
  });

  it('a reload makes and unmakes a full tunnel; wg set fwmark moves it to table M; all in place, the session kept', async () => {
    const cfg = JSON.parse(await readFile(clientCfg, 'utf8')) as { peers: { allowedIPs: string[] }[] };
    const split = join(dir.path, 'split.json');
    cfg.peers[0].allowedIPs = [`${A.beyond.v4}/32`];
    await writeFile(split, JSON.stringify(cfg), { mode: 0o600 });
    const d = await startDaemon(client, split);
    running.push(d);
    try {
      expect(await routingDump(client)).not.toMatch(/fwmark|lookup 51820/);
      expect((await client.exec('ss', ['-u', '-a', '-n', '-e', 'sport', '=', ':51820'])).stdout).not.toMatch(/fwmark/);
      expect(await pingUntil(client, A.beyond.v4, 15_000)).toMatch(/1 received/);
      const hs0 = (await client.exec('wg', ['show', cIf, 'latest-handshakes'])).stdout.trim();

      cfg.peers[0].allowedIPs = ['0.0.0.0/0', '::/0'];
      await writeFile(split, JSON.stringify(cfg), { mode: 0o600 });
      let from = d.records().length;
      d.signal('SIGHUP');
      await d.waitForLog(/^configuration reloaded/, 10_000, from);
      expect((await client.exec('ip', ['-4', 'rule', 'show'])).stdout).toMatch(/^32765:\s+not from all fwmark 0xca6c lookup 51820/m);
      expect((await client.exec('ss', ['-u', '-a', '-n', '-e', 'sport', '=', ':51820'])).stdout).toMatch(/fwmark:0xca6c/);
      expect(await pingUntil(client, A.beyond.v6, 10_000)).toMatch(/1 received/);

      await client.exec('wg', ['set', cIf, 'fwmark', '0x77']);
      const moved = await routingDump(client);
      expect(moved).toMatch(/^32765:\s+not from all fwmark 0x77 lookup 119/m);
      expect(moved).not.toMatch(/lookup 51820/);
      expect((await client.exec('ip', ['-4', 'route', 'show', 'table', '119'])).stdout).toMatch(new RegExp(`^default dev ${cIf}`, 'm'));
      expect((await client.exec('ss', ['-u', '-a', '-n', '-e', 'sport', '=', ':51820'])).stdout).toMatch(/fwmark:0x77/);
      expect(await pingUntil(client, A.beyond.v4, 10_000)).toMatch(/1 received/);
      expect((await client.exec('wg', ['show', cIf, 'latest-handshakes'])).stdout.trim()).toBe(hs0);

      // Back to the file (split tunnel): rules and marks gone, the main table as before.
      cfg.peers[0].allowedIPs = [`${A.beyond.v4}/32`];
      await writeFile(split, JSON.stringify(cfg), { mode: 0o600 });
      from = d.records().length;
      d.signal('SIGHUP');
      await d.waitForLog(/^configuration reloaded/, 10_000, from);
      expect(await routingDump(client)).not.toMatch(/fwmark|lookup 51820|lookup 119/);
      expect((await client.exec('ss', ['-u', '-a', '-n', '-e', 'sport', '=', ':51820'])).stdout).not.toMatch(/fwmark/);
      expect(await pingUntil(client, A.beyond.v4, 10_000)).toMatch(/1 received/);
    } finally {
      await d.stop();
    }
    expect(await routingDump(client)).toBe(baseline);
  });

  it('through wireguard-go as the server: the same full tunnel reaches the host beyond, datagrams by the underlay only', async () => {
    await serverDaemon?.stop();
    wgProcess = server.spawn('wireguard-go', ['-f', wgIf], { env: WG_ENV, stdio: 'ignore' });
    const sock = `/var/run/wireguard/${wgIf}.sock`;
    for (let i = 0; i < 100; i++) {
      const ok = await readFile(sock).then(
        () => true,
        (e: NodeJS.ErrnoException) => e.code !== 'ENOENT',
      );
      if (ok) break;
      await sleep(50);
    }
    await writeFile(join(dir.path, 'wgs.key'), s.privateKey + '\n', { mode: 0o600 });
    await server.exec('wg', [
      'set',
      wgIf,
      'private-key',
      join(dir.path, 'wgs.key'),
      'listen-port',
      '51820',
      'peer',
      c.publicKey,
      'allowed-ips',
      `${A.tunC.v4}/32,${A.tunC.v6}/128`,
    ]);
    await server.exec('ip', ['addr', 'add', `${A.tunS.v4}/24`, 'dev', wgIf]);
    await server.exec('ip', ['-6', 'addr', 'add', `${A.tunS.v6}/64`, 'dev', wgIf, 'nodad']);
    await server.exec('ip', ['link', 'set', wgIf, 'up']);
    const d = await startDaemon(client, clientCfg);
    running.push(d);
    try {
      const tunnel0 = await counter(client, 'tunnel');
      expect(await pingUntil(client, A.beyond.v4, 15_000)).toMatch(/1 received/);
      expect(await pingUntil(client, A.beyond.v6, 10_000)).toMatch(/1 received/);
      const t = await tcpTransfer(client, beyond, A.beyond.v4, 5202, 1024 * 1024, 60);
      expect(t.received).toBe(t.sent);
      expect(await counter(client, 'tunnel')).toBe(tunnel0);
      const hs = (await server.exec('wg', ['show', wgIf, 'latest-handshakes'])).stdout;
      expect(hs).toContain(c.publicKey);
    } finally {
      await d.stop();
    }
    expect(await routingDump(client)).toBe(baseline);
  });
});
