/**
 * Up/down hooks in a real daemon, in a namespace of the test's own: postUp
 * adds a real nftables NAT table once the interface, its address and its
 * routes exist, postDown deletes it after the interface is gone; preUp runs
 * before the interface exists, preDown while it still does. A failing preUp
 * or postUp ends the start: exit 1, one line naming the hook, no interface,
 * no control socket, no later hook. A reload that changes the hooks never
 * re-runs postUp; the stop runs the new postDown.
 */
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, Netns, pingUntil } from '../helpers/netns.js';
import { ADDR, cliPath, ConfigDir, DaemonProcess, SiteToSite, startDaemon } from '../../src/testbed/site-to-site.js';
import { makeKeyPair } from '../helpers/daemon.js';
import { AS_NOBODY_SCRIPT, NOBODY_NET_ADMIN } from '../helpers/unprivileged.js';

/** Unique across namespaces: wireguard-go's socket directory is shared. */
function ifname(tag: string): string {
  return `hk${tag}${randomBytes(3).toString('hex')}`;
}

async function runExpectingFailure(ns: Netns, argv: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = ns.spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  return { code, stdout, stderr };
}

function read(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : '<missing>';
}

describeIntegration('daemon hooks: preUp, postUp, preDown, postDown', ['nft', 'setpriv', 'wg'], () => {
  let ns: Netns;
  let dir: ConfigDir;
  let keyFile: string;
  let peerKey: string;
  const running: DaemonProcess[] = [];

  beforeAll(async () => {
    ns = await Netns.create('hk');
    dir = await ConfigDir.create();
    const me = makeKeyPair();
    peerKey = makeKeyPair().publicKey;
    keyFile = join(dir.path, 'hk.key');
    await writeFile(keyFile, `${me.privateKey}\n`, { mode: 0o600 });
  });

  afterAll(async () => {
    await Promise.all(running.map((d) => d.stop()));
    await ns?.destroy();
    await dir?.destroy();
  });

  async function writeConfig(name: string, iface: string, port: number, hooks: Record<string, string[][]>): Promise<string> {
    const path = join(dir.path, `${name}.json`);
    const config = {
      interface: { name: iface, privateKeyFile: keyFile, listenPort: port, addresses: ['10.97.0.1/24'], hooks },
      peers: [{ name: 'p', publicKey: peerKey, allowedIPs: ['10.97.5.0/24'] }],
      log: { level: 'debug' },
    };
    await writeFile(path, JSON.stringify(config, null, 2), { mode: 0o600 });
    return path;
  }

  async function nftTable(table: string): Promise<string | undefined> {
    return ns.exec('nft', ['list', 'table', 'ip', table]).then(
      (r) => r.stdout,
      () => undefined,
    );
  }

  it('postUp adds a NAT rule once address and routes are up; postDown removes it after the interface is gone', async () => {
    const iface = ifname('a');
    const out = (f: string) => join(dir.path, `${iface}-${f}`);
    const table = `tvhook_${iface}`;
    const cfg = await writeConfig('updown', iface, 51911, {
      preUp: [['/bin/sh', '-c', `ip link show %i > /dev/null 2>&1; echo $? > ${out('preup')}`]],
      postUp: [
        ['nft', 'add', 'table', 'ip', 'tvhook_%i'],
        ['nft', 'add', 'chain', 'ip', 'tvhook_%i', 'post', '{ type nat hook postrouting priority 100 ; }'],
        ['/usr/sbin/nft', 'add', 'rule', 'ip', 'tvhook_%i', 'post', 'ip', 'saddr', '10.97.0.0/24', 'oifname', '!=', '%i', 'masquerade'],
        ['/bin/sh', '-c', `{ ip -o addr show dev %i; ip route show dev %i; } > ${out('postup')}`],
        // The control socket answers already: `wg` works from postUp.
        ['/bin/sh', '-c', `wg show %i listen-port > ${out('wg')}`],
      ],
      preDown: [['/bin/sh', '-c', `ip link show %i > /dev/null 2>&1; echo $? > ${out('predown')}`]],
      postDown: [
        ['nft', 'delete', 'table', 'ip', 'tvhook_%i'],
        ['/bin/sh', '-c', `ip link show %i > /dev/null 2>&1; echo $? > ${out('postdown')}`],
      ],
    });
    const d = await startDaemon(ns, cfg);
    running.push(d);
    // preUp ran before the interface existed.
    expect(read(out('preup')).trim()).not.toBe('0');
    const rules = await nftTable(table);
    expect(rules).toContain(`oifname != "${iface}"`);
    expect(rules).toContain('masquerade');
    // postUp saw the address and the allowed IPs' route.
    expect(read(out('postup'))).toContain('10.97.0.1/24');
    expect(read(out('postup'))).toContain('10.97.5.0/24');
    expect(read(out('wg')).trim()).toBe('51911');
    // Every hook logged with its expanded command and status; postUp before "tunvpn up".
    const recs = d.records();
    const ran = recs.filter((r) => typeof r.msg === 'string' && /^postUp hook ran: exit status 0$/.test(r.msg));
    expect(ran.map((r) => r.hook)).toEqual([0, 1, 2, 3, 4].map((i) => `interface.hooks.postUp[${i}]`));
    expect(ran[0].argv).toEqual(['nft', 'add', 'table', 'ip', table]);
    const upAt = recs.findIndex((r) => typeof r.msg === 'string' && r.msg.startsWith('tunvpn up'));
    expect(recs.indexOf(ran[4])).toBeLessThan(upAt);

    expect(await d.stop()).toBe(0);
    expect(await nftTable(table)).toBeUndefined();
    expect(read(out('predown')).trim()).toBe('0'); // the interface still existed
    expect(read(out('postdown')).trim()).not.toBe('0'); // it was gone
    const after = d.records();
    const msgs = after.map((r) => String(r.msg));
    expect(msgs.filter((m) => m === 'postDown hook ran: exit status 0')).toHaveLength(2);
    expect(msgs.indexOf('preDown hook ran: exit status 0')).toBeLessThan(msgs.indexOf('postDown hook ran: exit status 0'));
    expect(msgs.indexOf('postDown hook ran: exit status 0')).toBeLessThan(msgs.indexOf('tunvpn stopped'));
  });

  it('a failing postUp: exit 1, one line naming the hook, no interface or socket left, nothing more run', async () => {
    const iface = ifname('b');
    const out = (f: string) => join(dir.path, `${iface}-${f}`);
    const table = `tvhook_${iface}`;
    const cfg = await writeConfig('badup', iface, 51912, {
      postUp: [
        ['nft', 'add', 'table', 'ip', 'tvhook_%i'],
        ['/bin/sh', '-c', 'exit 4', '%i'],
        ['/usr/bin/touch', out('third')],
      ],
      preDown: [['/usr/bin/touch', out('predown')]],
      postDown: [['/usr/bin/touch', out('postdown')]],
    });
    const r = await runExpectingFailure(ns, [process.execPath, cliPath(), 'run', '-c', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      `tunvpn: cannot start: postUp hook interface.hooks.postUp[1] ["/bin/sh","-c","exit 4","${iface}"] failed: exit status 4 (HOOK_FAILED)`,
    ]);
    expect(r.stdout).toContain('start abandoned: no further hooks run, the interface is removed');
    expect((await ns.exec('ip', ['-o', 'link'])).stdout).not.toContain(iface);
    expect(existsSync(`/var/run/wireguard/${iface}.sock`)).toBe(false);
    for (const f of ['third', 'predown', 'postdown']) expect(existsSync(out(f)), f).toBe(false);
    // As wg-quick: what the hooks before it did stays (the operator's hooks must cope).
    expect(await nftTable(table)).toBeDefined();
    await ns.exec('nft', ['delete', 'table', 'ip', table]);
  });

  it('a failing preUp: exit 1, the interface is never created', async () => {
    const iface = ifname('c');
    const cfg = await writeConfig('badpre', iface, 51913, {
      preUp: [['/nonexistent/prepare-%i']],
      postUp: [['/bin/true']],
    });
    const r = await runExpectingFailure(ns, [process.execPath, cliPath(), 'run', '-c', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^tunvpn: cannot start: preUp hook interface\\.hooks\\.preUp\\[0\\] \\["/nonexistent/prepare-${iface}"\\] failed: could not be started: .*ENOENT`,
      ),
    );
    expect(r.stdout).not.toContain('UDP transport open');
    expect(r.stdout).not.toContain('postUp hook');
    expect((await ns.exec('ip', ['-o', 'link'])).stdout).not.toContain(iface);
  });

  it('as the unit runs it (nobody, ambient CAP_NET_ADMIN only), hooks inherit the capability: nft works', async () => {
    const iface = ifname('e');
    const table = `tvhook_${iface}`;
    const cfg = await writeConfig('nobody', iface, 51915, {
      postUp: [
        ['nft', 'add', 'table', 'ip', 'tvhook_%i'],
        // The hook's own capability set is the daemon's: CAP_NET_ADMIN (bit 12) only.
        ['/bin/sh', '-c', 'grep -q "^CapEff:[[:space:]]*0000000000001000$" /proc/self/status'],
      ],
      postDown: [['nft', 'delete', 'table', 'ip', 'tvhook_%i']],
    });
    await chmod(dir.path, 0o711);
    await chown(cfg, 65534, 65534);
    await chown(keyFile, 65534, 65534);
    const child = ns.spawn('sh', ['-c', AS_NOBODY_SCRIPT, 'sh', ...NOBODY_NET_ADMIN, process.execPath, cliPath(), 'run', '--config', cfg], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const d = new DaemonProcess(child);
    running.push(d);
    try {
      await d.waitForLog(/^tunvpn up/);
      expect(await nftTable(table)).toContain(`table ip ${table}`);
      expect(await d.stop()).toBe(0);
      expect(await nftTable(table)).toBeUndefined();
    } finally {
      await chown(keyFile, 0, 0);
      await chmod(dir.path, 0o700);
    }
  });

  it('reload: changed hooks are logged, postUp is not run again, the stop runs the new postDown', async () => {
    const iface = ifname('d');
    const out = (f: string) => join(dir.path, `${iface}-${f}`);
    const hooks = {
      postUp: [['/bin/sh', '-c', `echo up >> ${out('ups')}`]],
      postDown: [['/usr/bin/touch', out('old-postdown')]],
    };
    const cfg = await writeConfig('reload', iface, 51914, hooks);
    const d = await startDaemon(ns, cfg);
    running.push(d);
    expect(read(out('ups'))).toBe('up\n');
    await writeConfig('reload', iface, 51914, {
      postUp: [['/bin/sh', '-c', `echo new-up >> ${out('ups')}`]],
      postDown: [['/usr/bin/touch', out('new-postdown')]],
    });
    const from = d.records().length;
    d.signal('SIGHUP');
    await d.waitForLog(/^interface\.hooks changed: the new hooks run at the next stop and start; postUp is not run again$/, 10_000, from);
    await d.waitForLog(/configuration reloaded/, 10_000, from);
    expect(read(out('ups'))).toBe('up\n');
    expect(await d.stop()).toBe(0);
    expect(existsSync(out('new-postdown'))).toBe(true);
    expect(existsSync(out('old-postdown'))).toBe(false);
  });
});

/**
 * The README's site-to-site NAT recipe, as written there: gateway B
 * masquerades what comes out of the tunnel towards LAN B, so LAN B's hosts
 * need no route back to LAN A. Host lb's routes to LAN A are deleted: a
 * ping from la gets an answer only through the NAT, and not once the
 * daemon (and with it the postDown hook) has removed the NAT table.
 */
describeIntegration('daemon hooks: the site-to-site NAT recipe', ['nft', 'ping'], () => {
  let bed: SiteToSite;
  let dir: ConfigDir;
  let da: DaemonProcess | undefined;
  let db: DaemonProcess | undefined;

  beforeAll(async () => {
    bed = await SiteToSite.create('hn', { underlayFamily: 'v4' });
    dir = await ConfigDir.create();
  });

  afterAll(async () => {
    await Promise.all([da?.stop(), db?.stop()]);
    await bed?.destroy();
    await dir?.destroy();
  });

  it('postUp masquerades LAN A behind gateway B; postDown removes the NAT table', async () => {
    const [a, b] = [makeKeyPair(), makeKeyPair()];
    const ifA = ifname('n');
    const ifB = ifname('m');
    // Gateway B's link to LAN B, for the rule's oifname (eth1 in the README).
    const lanDev = /^\d+:\s+(\S+)/.exec((await bed.tb.exec('ip', ['-o', '-4', 'addr', 'show', 'to', ADDR.tbLan.v4])).stdout)?.[1]?.split('@')[0];
    expect(lanDev).toBeDefined();
    const cfgA = await dir.writeHost('a', {
      interfaceName: ifA,
      privateKey: a.privateKey,
      listenPort: 51921,
      addresses: [`${ADDR.taTun.v4}/24`],
      peers: [{ name: 'b', publicKey: b.publicKey, endpoint: `${ADDR.tbUnder.v4}:51922`, allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4] }],
    });
    const cfgB = await dir.writeHost('b', {
      interfaceName: ifB,
      privateKey: b.privateKey,
      listenPort: 51922,
      addresses: [`${ADDR.tbTun.v4}/24`],
      peers: [{ name: 'a', publicKey: a.publicKey, endpoint: `${ADDR.taUnder.v4}:51921`, allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4] }],
    });
    // writeHost knows no hooks: add the README's, with this bed's device name.
    const raw = JSON.parse(readFileSync(cfgB, 'utf8')) as { interface: Record<string, unknown> };
    raw.interface.hooks = {
      postUp: [
        ['nft', 'add', 'table', 'ip', 'tunvpn_%i'],
        ['nft', 'add', 'chain', 'ip', 'tunvpn_%i', 'postrouting', '{ type nat hook postrouting priority srcnat ; }'],
        ['nft', 'add', 'rule', 'ip', 'tunvpn_%i', 'postrouting', 'iifname', '%i', 'oifname', String(lanDev), 'masquerade'],
      ],
      postDown: [['nft', 'delete', 'table', 'ip', 'tunvpn_%i']],
    };
    await writeFile(cfgB, JSON.stringify(raw), { mode: 0o600 });
    // LAN B's host has no way back to LAN A but the NAT.
    await bed.lb.exec('ip', ['route', 'del', 'default']);
    await bed.lb.exec('ip', ['route', 'del', ADDR.lanA.v4]).catch(() => undefined);

    da = await startDaemon(bed.ta, cfgA);
    db = await startDaemon(bed.tb, cfgB);
    expect(await pingUntil(bed.la, ADDR.lb.v4, 15_000)).toMatch(/1 received/);
    const table = (await bed.tb.exec('nft', ['list', 'table', 'ip', `tunvpn_${ifB}`])).stdout;
    expect(table).toMatch(/masquerade/);
    expect(await db.stop()).toBe(0);
    db = undefined;
    await expect(bed.tb.exec('nft', ['list', 'table', 'ip', `tunvpn_${ifB}`])).rejects.toThrow();
    // Tunnel up again without hooks: the same ping has no way back now.
    const plain = await dir.writeHost('b', {
      interfaceName: ifB,
      privateKey: b.privateKey,
      listenPort: 51922,
      addresses: [`${ADDR.tbTun.v4}/24`],
      peers: [{ name: 'a', publicKey: a.publicKey, endpoint: `${ADDR.taUnder.v4}:51921`, allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4] }],
    });
    db = await startDaemon(bed.tb, plain);
    expect(await pingUntil(bed.la, ADDR.tbTun.v4, 15_000)).toMatch(/1 received/);
    await expect(pingUntil(bed.la, ADDR.lb.v4, 2_000)).rejects.toThrow();
  });
});
