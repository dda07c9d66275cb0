/**
 * `systemctl start tunvpn` for real: a minimal Debian with systemd as PID 1
 * (systemd-nspawn) follows the README's Install, Keys and config, and Run it
 * as a service sections as written, then the units are exercised: enable
 * --now, reload with a transfer running, restart, kill -9 and
 * Restart=on-failure, the journal, stop, and the template unit.
 *
 * All along, a root wireguard-go (wg0) shares /run/wireguard with tunvpn, as
 * on a real host: the directory and its socket must keep their owner, mode
 * and inode through every start, reload, restart and stop (issue 13: the
 * units' RuntimeDirectory= once chowned both to the tunvpn user), and `wg`
 * must keep working against both daemons.
 *
 *  [container ns: systemd, tunvpn0 10.62.0.1] ─veth 10.60.0.0/24─ [nspb: tunvpn 10.62.0.2, LAN 10.61.2.1]
 *                                              ─veth 10.60.1.0/24─ [nspd: tunvpn 10.62.0.3] (added by reload)
 *
 * The peers run the checkout's daemon on the host (startDaemon); only the
 * container's tunvpn is installed from the packed tarball.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, linkNamespaces, Netns, pingUntil, run, sleep } from '../helpers/netns.js';
import { ensureRootfs, hostNode, NspawnContainer } from '../helpers/nspawn.js';
import { makeKeyPair, tcpTransfer, type KeyPairText } from '../helpers/daemon.js';
import { ConfigDir, fromRoot, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';

const README = process.env.TUNVPN_NSPAWN_README ?? fromRoot('README.md');
/** Where the packed tarball is visible inside the container, as if a checkout. */
const SRC_IN_CONTAINER = '/usr/src/tunvpn';

const A_UNDER = '10.60.0.1';
const B_UNDER = '10.60.0.2';
const A_UNDER_C = '10.60.1.1';
const C_UNDER = '10.60.1.2';
const A_TUN = '10.62.0.1';
const B_TUN = '10.62.0.2';
const C_TUN = '10.62.0.3';
const LAN_B = '10.61.2.0/24';
const LAN_B_HOST = '10.61.2.1';

/** The shared socket directory, as the units create it. */
const WG_DIR = '/run/wireguard';
/** The other daemon: a root wireguard-go, started before tunvpn is installed. */
const OTHER_IF = 'wg0';
const OTHER_UNIT = 'other-wireguard-go';

/** The shell commands of a README section's ```sh blocks, continuations joined. */
function sectionCommands(readme: string, heading: string): string[] {
  const section = new RegExp(`^## ${heading}\\n([\\s\\S]*?)(?=^## |(?![\\s\\S]))`, 'm').exec(readme)?.[1] ?? '';
  const out: string[] = [];
  for (const m of section.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const joined = m[1].replace(/\\\n\s*/g, '');
    for (const line of joined.split('\n')) if (line.trim() && !line.trim().startsWith('#')) out.push(line.trim());
  }
  return out;
}

interface JournalRecord {
  level?: number | string;
  msg?: string;
  [k: string]: unknown;
}

/** JSON objects on journalctl lines (any output format: the JSON starts at the first "{"). */
function journalRecords(text: string): { records: JournalRecord[]; lines: string[] } {
  const records: JournalRecord[] = [];
  const lines = text.split('\n').filter((l) => l.trim() && !l.startsWith('-- '));
  for (const l of lines) {
    const i = l.indexOf('{');
    if (i < 0) continue;
    try {
      records.push(JSON.parse(l.slice(i)) as JournalRecord);
    } catch {
      /* not one of the daemon's lines */
    }
  }
  return { records, lines };
}

describeIntegration('systemd: tunvpn as a service with systemd as PID 1 (systemd-nspawn)', ['systemd-nspawn', 'debootstrap', 'nsenter', 'ping'], () => {
  let nc: Netns | undefined;
  let nb: Netns | undefined;
  let nd: Netns | undefined;
  let ct: NspawnContainer | undefined;
  let dir: ConfigDir | undefined;
  let packDir: string | undefined;
  let db: DaemonProcess | undefined;
  let dd: DaemonProcess | undefined;
  let b: KeyPairText;
  let c: KeyPairText;
  let readme: string;
  let containerPublicKey = '';
  let configPath = '';
  const timings: Record<string, number> = {};

  let installed = false;

  const container = (): NspawnContainer => {
    if (!ct) throw new Error('container not booted');
    return ct;
  };

  /** Later steps need the service the first test installs; say so instead of cascading. */
  const requireInstalled = (): void => {
    if (!installed) throw new Error('tunvpn was not installed and started (see the first test)');
  };

  /** The daemon's config as the user writes it after `cp` of the example. */
  async function writeConfig(path: string, edit: (cfg: Record<string, unknown>) => void): Promise<void> {
    const cfg = JSON.parse((await container().exec(['cat', path])).stdout) as Record<string, unknown>;
    edit(cfg);
    // Like an editor: rewrite the file in place, keeping its owner and mode.
    await container().exec(['sh', '-c', 'cat > "$1"', 'sh', path], { input: JSON.stringify(cfg, null, 2) + '\n' });
  }

  function siteB(): Record<string, unknown> {
    return { name: 'site-b', publicKey: b.publicKey, endpoint: `${B_UNDER}:51820`, allowedIPs: [`${B_TUN}/32`, LAN_B], persistentKeepalive: 25 };
  }

  async function journal(unit: string): Promise<string> {
    return (await container().exec(['journalctl', '-u', unit, '--no-pager', '-o', 'cat'])).stdout;
  }

  /** Runs `work`; a failure carries the unit's status and journal, which say why. */
  async function explained<T>(unit: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      const status = await container().execAllowFail(['systemctl', 'status', '--no-pager', '-l', unit]);
      const log = await container().execAllowFail(['journalctl', '--no-pager', '-n', '40', '-u', unit]);
      throw new Error(`${String(err)}\n--- systemctl status ${unit}\n${status.stdout}\n--- journalctl -u ${unit}\n${log.stdout}`);
    }
  }

  async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  }

  /** `uid:gid mode type inode` of each entry of the shared directory, and of the directory itself as ".". */
  async function wgDirState(): Promise<Map<string, string>> {
    const out = (await container().sh(`cd ${WG_DIR} && stat -c '%n %u:%g %a %F %i' . * 2>/dev/null || true`)).stdout;
    const m = new Map<string, string>();
    for (const line of out.split('\n').filter(Boolean)) {
      const [name, ...rest] = line.split(' ');
      m.set(name, rest.join(' '));
    }
    return m;
  }

  let wgDirBaseline: Map<string, string> | undefined;

  /**
   * The shared directory is as it was before tunvpn came: still root's,
   * 0755; the other daemon's socket the same file (inode), root's, 0700, its
   * daemon answering `wg`; and the tunvpn user can neither reach that socket
   * nor write in the directory. `ours` are tunvpn's own sockets expected
   * now: root's, 0600.
   */
  async function expectSharedDirIntact(when: string, ours: string[]): Promise<void> {
    if (!wgDirBaseline) throw new Error('no baseline of /run/wireguard');
    const now = await wgDirState();
    const others = new Map([...now].filter(([name]) => !ours.includes(name)));
    expect(Object.fromEntries(others), `${WG_DIR} ${when}`).toEqual(Object.fromEntries(wgDirBaseline));
    for (const name of ours) expect(now.get(name)?.replace(/ \d+$/, ''), `${WG_DIR}/${name} ${when}`).toBe('0:0 600 socket');
    expect((await container().exec(['wg', 'show', OTHER_IF, 'listen-port'])).stdout.trim(), `wg show ${OTHER_IF} ${when}`).toMatch(/^\d+$/);
    const asTunvpn = ['setpriv', '--reuid=tunvpn', '--regid=tunvpn', '--clear-groups'];
    const stolen = await container().execAllowFail([...asTunvpn, 'wg', 'show', OTHER_IF, 'private-key']);
    expect(stolen.code, `tunvpn reads ${OTHER_IF}'s key ${when}: ${stolen.stdout}`).not.toBe(0);
    expect(stolen.stderr).toMatch(/Permission denied/);
    const planted = await container().execAllowFail([...asTunvpn, 'sh', '-c', `: > ${WG_DIR}/planted.sock`]);
    expect(planted.code, `tunvpn writes in ${WG_DIR} ${when}`).not.toBe(0);
  }

  /** `wg show IFACE` as root, against tunvpn: the peers it lists. */
  async function wgShowPeers(ifname: string): Promise<string[]> {
    const out = (await container().exec(['wg', 'show', ifname, 'peers'], { timeoutMs: 20_000 })).stdout;
    return out.split('\n').filter(Boolean).sort();
  }

  /** Inode of tunvpn's socket file: the same one while systemd holds the socket. */
  async function socketInode(ifname: string): Promise<string> {
    return (await container().exec(['stat', '-c', '%i', `${WG_DIR}/${ifname}.sock`])).stdout.trim();
  }

  async function linkExists(ifname: string): Promise<boolean> {
    return run('ip', ['-n', nc?.name ?? '', 'link', 'show', ifname]).then(
      () => true,
      () => false,
    );
  }

  async function routes(): Promise<string> {
    return (await run('ip', ['-n', nc?.name ?? '', 'route', 'show'])).stdout;
  }

  /** Until the unit is active with a main process that has its interface up. */
  async function waitActive(unit: string, ifname: string): Promise<number> {
    await waitFor(`${unit} active`, async () => (await container().property(unit, 'ActiveState')) === 'active');
    await waitFor(`${ifname} in the container`, () => linkExists(ifname));
    return Number(await container().property(unit, 'MainPID'));
  }

  /** kill -9 of the main process: systemd restarts it and traffic resumes. */
  async function killAndRecover(unit: string, ifname: string): Promise<void> {
    const pid = await container().property(unit, 'MainPID');
    const restarts = Number(await container().property(unit, 'NRestarts'));
    const ino = await socketInode(ifname);
    expect(Number(pid)).toBeGreaterThan(1);
    const t0 = Date.now();
    // The shell's kill: procps (/bin/kill) is not part of a minimal Debian.
    await container().sh(`kill -9 ${pid}`);
    await waitFor(`${unit} restarted`, async () => Number(await container().property(unit, 'NRestarts')) === restarts + 1, 20_000);
    const newPid = await waitActive(unit, ifname);
    expect(newPid).not.toBe(Number(pid));
    // The restarted daemon handshakes at once; the peer replaces its stale session.
    await pingUntil(container().netns, LAN_B_HOST, 15_000);
    const ms = Date.now() - t0;
    timings[`${unit} kill -9 to traffic`] = ms;
    // RestartSec=2s plus a handshake and a margin.
    expect(ms).toBeLessThan(12_000);
    const j = await journal(unit);
    expect(j).toMatch(/Main process exited, code=killed, status=9\/KILL|code=killed/);
    // The socket unit stayed up across Restart=: same file, held by systemd.
    expect(await socketInode(ifname)).toBe(ino);
    await expectSharedDirIntact(`after kill -9 of ${unit}`, [`${ifname}.sock`]);
    expect(await wgShowPeers(ifname)).toContain(b.publicKey);
  }

  /** stop: the interface and the routes to the peers' prefixes are gone. */
  async function stopAndCheckCleanup(unit: string, ifname: string): Promise<void> {
    expect(await routes()).toContain(`${LAN_B} dev ${ifname}`);
    await explained(unit, () => container().exec(['systemctl', 'stop', unit], { timeoutMs: 20_000 }));
    expect(await container().property(unit, 'ActiveState')).toBe('inactive');
    // A clean stop, not a kill after TimeoutStopSec.
    expect(await container().property(unit, 'Result')).toBe('success');
    expect(await linkExists(ifname)).toBe(false);
    expect(await routes()).not.toContain(ifname);
    const { records } = journalRecords(await journal(unit));
    expect(records.some((r) => r.msg === 'tunvpn stopped')).toBe(true);
    // The socket unit goes with the service, and its file with it.
    const socketUnit = unit.replace(/(\.service)?$/, '.socket');
    await waitFor(`${socketUnit} stopped`, async () => (await container().property(socketUnit, 'ActiveState')) === 'inactive');
    await expectSharedDirIntact(`after systemctl stop ${unit}`, []);
    await expectNotStartedByWg(unit, ifname);
  }

  /** With the service stopped, `wg show` finds nothing, and starts nothing. */
  async function expectNotStartedByWg(unit: string, ifname: string): Promise<void> {
    const r = await container().execAllowFail(['wg', 'show', ifname]);
    expect(r.code, `wg show ${ifname} with ${unit} stopped`).not.toBe(0);
    await sleep(1_000);
    expect(await container().property(unit, 'ActiveState')).not.toMatch(/^(active|activating)$/);
    expect((await container().exec(['ls', '-A', WG_DIR])).stdout.split('\n')).not.toContain(`${ifname}.sock`);
  }

  beforeAll(async () => {
    let t = Date.now();
    const rootfs = await ensureRootfs(undefined, (m) => console.info(m));
    timings[rootfs.built ? 'rootfs build (debootstrap)' : 'rootfs (cached)'] = rootfs.ms;
    readme = await readFile(README, 'utf8');
    [b, c] = [makeKeyPair(), makeKeyPair()];

    t = Date.now();
    nc = await Netns.create('nspc');
    nb = await Netns.create('nspb');
    nd = await Netns.create('nspd');
    await linkNamespaces(nc, nb, `${A_UNDER}/24`, `${B_UNDER}/24`);
    await linkNamespaces(nc, nd, `${A_UNDER_C}/24`, `${C_UNDER}/24`);
    // Site B's LAN: an address only reachable through the tunnel.
    await nb.exec('ip', ['addr', 'add', `${LAN_B_HOST}/32`, 'dev', 'lo']);

    // README Install, `npm ci` and `npm pack`: run in this checkout. The
    // vitest global setup has built the binding and dist/ (what `npm ci`
    // does); --ignore-scripts because `prepare` would run tsc again.
    packDir = await mkdtemp(join(tmpdir(), 'tunvpn-pack-'));
    await run('npm', ['pack', '--ignore-scripts', '--pack-destination', packDir], { timeoutMs: 60_000 });
    timings['namespaces + npm pack'] = Date.now() - t;
    // The container installs offline from the host's npm cache. `npm ci`
    // caches tarballs only, not the registry metadata that installing a
    // tarball resolves its dependency ranges with (a fresh machine failed
    // with ENOTCACHED). The same install on the host, scripts off, into a
    // directory thrown away, caches both.
    t = Date.now();
    const tgz = (await readdir(packDir)).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error(`npm pack left no tarball in ${packDir}`);
    const warmPrefix = await mkdtemp(join(tmpdir(), 'tunvpn-npm-warm-'));
    try {
      await run('npm', ['install', '-g', '--prefix', warmPrefix, '--ignore-scripts', '--no-audit', '--no-fund', join(packDir, tgz)], { timeoutMs: 300_000 });
    } finally {
      await rm(warmPrefix, { recursive: true, force: true });
    }
    timings['npm cache warm-up (host)'] = Date.now() - t;

    t = Date.now();
    ct = await NspawnContainer.boot({ rootfs: rootfs.path, netns: nc, node: hostNode(), bindRo: [[packDir, SRC_IN_CONTAINER]] });
    timings['container boot'] = Date.now() - t;
    dir = await ConfigDir.create();

    // Another daemon's socket in /run/wireguard before tunvpn is installed:
    // a real wireguard-go, as root, as a host would run it.
    await container().exec([
      'systemd-run',
      `--unit=${OTHER_UNIT}`,
      '--setenv=WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1',
      '/usr/bin/wireguard-go',
      '--foreground',
      OTHER_IF,
    ]);
    await waitFor(`${OTHER_IF}.sock`, async () => (await wgDirState()).has(`${OTHER_IF}.sock`));
    wgDirBaseline = await wgDirState();
    // What the issue found turned into tunvpn:tunvpn: the premise, checked.
    expect(wgDirBaseline.get('.')).toMatch(/^0:0 755 directory \d+$/);
    expect(wgDirBaseline.get(`${OTHER_IF}.sock`)).toMatch(/^0:0 700 socket \d+$/);
  }, 20 * 60_000);

  afterAll(async () => {
    await Promise.all([db?.stop(), dd?.stop()]);
    await ct?.destroy();
    await Promise.all([nc?.destroy(), nb?.destroy(), nd?.destroy()]);
    await dir?.destroy();
    if (packDir) await rm(packDir, { recursive: true, force: true });
    console.info(`nspawn timings (ms): ${JSON.stringify(timings)}`);
  }, 60_000);

  it('installs as the README says and `systemctl enable --now tunvpn` carries traffic', async () => {
    const t0 = Date.now();
    const steps = [...sectionCommands(readme, 'Install'), ...sectionCommands(readme, 'Keys and config'), ...sectionCommands(readme, 'Run it as a service')];
    // The steps this test relies on are in the README at all.
    for (const re of [
      /^npm install -g /,
      /^useradd /,
      /tunvpn genkey/,
      /tunvpn pubkey/,
      /^cp .*tunvpn\.service/,
      /^cp .*tunvpn\.socket .*tunvpn@\.socket/,
      /^systemctl enable --now tunvpn\b/,
    ]) {
      expect(
        steps.some((s) => re.test(s)),
        `README step ${re}`,
      ).toBe(true);
    }
    // The container has no registry access: npm resolves from the host's
    // cache (filled by `npm ci`), node-gyp builds against the host's headers.
    const npmEnv = {
      npm_config_offline: 'true',
      npm_config_nodedir: '/usr',
      npm_config_logs_dir: '/tmp/npm-logs',
      npm_config_update_notifier: 'false',
      npm_config_fund: 'false',
      npm_config_audit: 'false',
    };
    const transcript: string[] = [];
    for (const step of steps) {
      if (/^npm (ci|pack)\b/.test(step)) {
        transcript.push(`(host: vitest global setup built the checkout; npm pack --ignore-scripts above) ${step}`);
        continue;
      }
      const editor = /^editor\s+(\S+)/.exec(step);
      if (editor) {
        configPath = editor[1];
        transcript.push(`(test edits) ${configPath}`);
        await writeConfig(configPath, (cfg) => {
          const iface = cfg.interface as Record<string, unknown>;
          iface.addresses = [`${A_TUN}/24`];
          cfg.peers = [siteB()];
        });
        // Site B's daemon knows the container's key from `tunvpn pubkey`.
        expect(containerPublicKey).toMatch(/^[A-Za-z0-9+/]{43}=$/);
        continue;
      }
      if (/^systemctl reload\b|^journalctl\b/.test(step)) continue; // later tests
      if (/^systemctl enable --now tunvpn\b/.test(step)) {
        const cfgB = await dir?.writeHost('b', {
          interfaceName: 'nspb0',
          privateKey: b.privateKey,
          listenPort: 51820,
          addresses: [`${B_TUN}/24`],
          peers: [{ name: 'site-a', publicKey: containerPublicKey, endpoint: `${A_UNDER}:51820`, allowedIPs: [`${A_TUN}/32`] }],
        });
        if (!nb || !cfgB) throw new Error('no site B');
        db = await startDaemon(nb, cfgB);
      }
      const result = await explained('tunvpn', () => container().sh(`cd ${SRC_IN_CONTAINER} && ${step}`, { env: npmEnv, timeoutMs: 180_000 }));
      transcript.push(`(container) ${step}`);
      if (/tunvpn pubkey/.test(step)) containerPublicKey = result.stdout.trim();
      if (/^npm install -g /.test(step)) {
        // The units start this path: the install must have put tunvpn there.
        const unit = await readFile(fromRoot('systemd', 'tunvpn.service'), 'utf8');
        const exe = /^ExecStart=(\S+)/m.exec(unit)?.[1] ?? '';
        const where = (await container().sh('command -v tunvpn')).stdout.trim();
        expect(where, `npm install -g put tunvpn at ${where}; the units run ${exe}`).toBe(exe);
      }
    }
    timings['README steps'] = Date.now() - t0;
    console.info(`README steps followed:\n  ${transcript.join('\n  ')}`);
    expect(configPath).toBe('/etc/tunvpn/tunvpn.json');

    // What the README's steps left behind.
    const key = (await container().exec(['stat', '-c', '%U:%G %a', '/etc/tunvpn/private.key'])).stdout.trim();
    expect(key).toBe('tunvpn:tunvpn 600');
    expect(
      await container()
        .exec(['systemctl', 'is-enabled', 'tunvpn'])
        .then((r) => r.stdout.trim()),
    ).toBe('enabled');
    await explained('tunvpn', () => waitActive('tunvpn', 'tunvpn0'));
    expect(await container().property('tunvpn', 'User')).toBe('tunvpn');
    // Least privilege as the units promise: the daemon holds CAP_NET_ADMIN (bit 12) and nothing else.
    const mainPid = await container().property('tunvpn', 'MainPID');
    const caps = (await container().exec(['grep', '^CapEff:', `/proc/${mainPid}/status`])).stdout;
    expect(caps.trim()).toBe('CapEff:\t0000000000001000');
    // The control socket came from tunvpn.socket, and nothing else in /run/wireguard moved.
    await expectSharedDirIntact('after systemctl enable --now tunvpn', ['tunvpn0.sock']);
    expect(await wgShowPeers('tunvpn0')).toEqual([b.publicKey]);
    expect(await container().property('tunvpn.socket', 'ActiveState')).toBe('active');
    // The inherited socket (fd 3) does not leak into what the daemon runs: close-on-exec.
    const fdinfo = (await container().exec(['cat', `/proc/${mainPid}/fdinfo/3`])).stdout;
    const flags = Number.parseInt(/^flags:\s*([0-7]+)$/m.exec(fdinfo)?.[1] ?? '0', 8);
    expect(flags & 0o2000000, fdinfo).toBe(0o2000000);

    // Traffic both ways: container → site B's LAN, and site B → container.
    await pingUntil(container().netns, LAN_B_HOST, 15_000);
    if (!nb) throw new Error('no site B');
    expect(await pingUntil(nb, A_TUN, 5_000)).toMatch(/1 received/);
    timings['install to traffic'] = Date.now() - t0;
    installed = true;
  }, 240_000);

  it('`systemctl reload tunvpn` adds a peer without interrupting a transfer to the old one', async () => {
    requireInstalled();
    if (!nb || !nd || !nc || !dir) throw new Error('no bed');
    // Site C knows the container; the container does not know C yet.
    const cfgC = await dir.writeHost('c', {
      interfaceName: 'nspd0',
      privateKey: c.privateKey,
      listenPort: 51820,
      addresses: [`${C_TUN}/24`],
      peers: [{ name: 'site-a', publicKey: containerPublicKey, endpoint: `${A_UNDER_C}:51820`, allowedIPs: [`${A_TUN}/32`] }],
    });
    dd = await startDaemon(nd, cfgC);
    await expect(pingUntil(nd, A_TUN, 1_500)).rejects.toThrow();

    const reloadLine = sectionCommands(readme, 'Run it as a service').find((s) => /^systemctl reload tunvpn\b/.test(s));
    expect(reloadLine, 'README: systemctl reload tunvpn').toBeDefined();
    const pid = await container().property('tunvpn', 'MainPID');
    // Several seconds through the tunnel on this machine class, so the reload lands mid-transfer.
    const bytes = 192 * 1024 * 1024;
    const transferStart = Date.now();
    const transfer = tcpTransfer(nc, nb, B_TUN, 5102, bytes, 90);
    // Awaited below; this keeps an early failure from also being an unhandled rejection.
    transfer.catch(() => undefined);
    await sleep(300);
    await writeConfig(configPath, (cfg) => {
      cfg.peers = [siteB(), { name: 'site-c', publicKey: c.publicKey, endpoint: `${C_UNDER}:51820`, allowedIPs: [`${C_TUN}/32`] }];
    });
    await explained('tunvpn', () => container().sh(reloadLine ?? 'false'));
    await waitFor('configuration reloaded in the journal', async () =>
      journalRecords(await journal('tunvpn')).records.some((r) => r.msg === 'configuration reloaded'),
    );
    const reloadedAt = Date.now();
    const r = await transfer;
    timings['transfer (192 MiB) across reload'] = r.ms;
    expect(r.received).toBe(bytes);
    expect(r.remote).toBe(r.local);
    // The reload landed while the transfer was running, or this proves nothing.
    expect(transferStart + r.ms).toBeGreaterThan(reloadedAt);
    // Reload is SIGHUP to the same process, not a restart.
    expect(await container().property('tunvpn', 'MainPID')).toBe(pid);
    expect(await pingUntil(nd, A_TUN, 10_000)).toMatch(/1 received/);
    await expectSharedDirIntact('after systemctl reload tunvpn', ['tunvpn0.sock']);
    expect(await wgShowPeers('tunvpn0')).toEqual([b.publicKey, c.publicKey].sort());
  }, 120_000);

  it('`systemctl restart tunvpn`: a new process on the same control socket, /run/wireguard untouched', async () => {
    requireInstalled();
    const pid = await container().property('tunvpn', 'MainPID');
    const ino = await socketInode('tunvpn0');
    await explained('tunvpn', () => container().exec(['systemctl', 'restart', 'tunvpn'], { timeoutMs: 30_000 }));
    const newPid = await waitActive('tunvpn', 'tunvpn0');
    expect(newPid).not.toBe(Number(pid));
    await pingUntil(container().netns, LAN_B_HOST, 15_000);
    // systemd kept the listening socket: `wg` never saw it missing.
    expect(await socketInode('tunvpn0')).toBe(ino);
    await expectSharedDirIntact('after systemctl restart tunvpn', ['tunvpn0.sock']);
    expect(await wgShowPeers('tunvpn0')).toEqual([b.publicKey, c.publicKey].sort());
  }, 60_000);

  it('kill -9 of the main process: systemd restarts it and traffic resumes', async () => {
    requireInstalled();
    await killAndRecover('tunvpn', 'tunvpn0');
  }, 60_000);

  it("`journalctl -u tunvpn` shows the daemon's JSON log lines and no key", async () => {
    requireInstalled();
    const journalLine = sectionCommands(readme, 'Run it as a service').find((s) => /^journalctl -u tunvpn\b/.test(s));
    expect(journalLine, 'README: journalctl -u tunvpn').toBeDefined();
    const { records, lines } = journalRecords((await container().sh(journalLine ?? 'false')).stdout);
    const msgs = records.map((r) => r.msg);
    expect(msgs.filter((m) => typeof m === 'string' && m.startsWith('tunvpn up')).length).toBeGreaterThanOrEqual(2); // start + restart
    expect(msgs).toContain('configuration reloaded');
    for (const r of records) expect(r.level).toBeDefined();
    // Lines from the daemon (not systemd's own) are all JSON.
    const daemonLines = lines.filter((l) => /tunvpn\[\d+\]: /.test(l) && !/systemd\[/.test(l));
    expect(daemonLines.length).toBeGreaterThan(0);
    for (const l of daemonLines) expect(() => JSON.parse(l.slice(l.indexOf(': ') + 2)) as unknown, l).not.toThrow();

    const priv = (await container().exec(['cat', '/etc/tunvpn/private.key'])).stdout.trim();
    expect(priv).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    const all = (await container().exec(['journalctl', '--no-pager', '-o', 'verbose'])).stdout;
    expect(all).toContain('tunvpn up');
    expect(all).not.toContain(priv);
    expect(all).not.toContain(Buffer.from(priv, 'base64').toString('hex'));
  }, 30_000);

  it('`systemctl stop tunvpn` removes the interface and its routes', async () => {
    requireInstalled();
    await stopAndCheckCleanup('tunvpn', 'tunvpn0');
  }, 30_000);

  it('tunvpn@NAME.service runs /etc/tunvpn/NAME.json the same way', async () => {
    requireInstalled();
    const t0 = Date.now();
    const inst = 'tunvpn@office';
    const path = '/etc/tunvpn/office.json';
    await container().sh(`cp ${configPath} ${path}`);
    // Its own interface name proves which file the instance read; it is
    // the instance name, the name of the socket tunvpn@office.socket makes.
    await writeConfig(path, (cfg) => {
      (cfg.interface as Record<string, unknown>).name = 'office';
      cfg.peers = [siteB()];
    });
    await explained(inst, () => container().exec(['systemctl', 'enable', '--now', inst]));
    expect((await container().exec(['systemctl', 'is-enabled', inst])).stdout.trim()).toBe('enabled');
    const pid = await waitActive(inst, 'office');
    await pingUntil(container().netns, LAN_B_HOST, 15_000);
    await expectSharedDirIntact(`after systemctl enable --now ${inst}`, ['office.sock']);
    expect(await wgShowPeers('office')).toEqual([b.publicKey]);

    await writeConfig(path, (cfg) => {
      cfg.peers = [siteB(), { name: 'site-c', publicKey: c.publicKey, endpoint: `${C_UNDER}:51820`, allowedIPs: [`${C_TUN}/32`] }];
    });
    await explained(inst, () => container().exec(['systemctl', 'reload', inst]));
    await waitFor(`${inst} reloaded`, async () => journalRecords(await journal(inst)).records.some((r) => r.msg === 'configuration reloaded'));
    expect(Number(await container().property(inst, 'MainPID'))).toBe(pid);
    if (!nd) throw new Error('no site C');
    // From the container's side: site C still holds a session with the
    // stopped tunvpn.service (same key) and would wait out Rekey-Timeout;
    // the instance has C's endpoint and handshakes at once.
    expect(await pingUntil(container().netns, C_TUN, 10_000)).toMatch(/1 received/);
    expect(await pingUntil(nd, A_TUN, 5_000)).toMatch(/1 received/);
    await expectSharedDirIntact(`after systemctl reload ${inst}`, ['office.sock']);
    expect(await wgShowPeers('office')).toEqual([b.publicKey, c.publicKey].sort());

    await killAndRecover(inst, 'office');
    const { records } = journalRecords(await journal(inst));
    expect(records.some((r) => typeof r.msg === 'string' && r.msg.startsWith('tunvpn up'))).toBe(true);
    await stopAndCheckCleanup(inst, 'office');
    timings['template unit'] = Date.now() - t0;
  }, 120_000);

  it('deleting the control socket file stops the service cleanly, and it stays stopped', async () => {
    requireInstalled();
    const inst = 'tunvpn@office';
    await explained(inst, () => container().exec(['systemctl', 'start', inst]));
    await waitActive(inst, 'office');
    // Answering `wg`: the daemon is up and watching its socket file.
    expect(await wgShowPeers('office')).toContain(b.publicKey);
    const restarts = await container().property(inst, 'NRestarts');
    // The cross-platform API's "shut down" request, as root would make it.
    await container().exec(['rm', `${WG_DIR}/office.sock`]);
    await waitFor(`${inst} stopped`, async () => (await container().property(inst, 'ActiveState')) === 'inactive');
    expect(await container().property(inst, 'Result')).toBe('success');
    expect(await container().property(inst, 'NRestarts')).toBe(restarts);
    expect(journalRecords(await journal(inst)).records.some((r) => r.msg === 'control socket removed: shutting down')).toBe(true);
    await waitFor(`${inst}.socket stopped`, async () => (await container().property(`${inst}.socket`, 'ActiveState')) === 'inactive');
    expect(await linkExists('office')).toBe(false);
    await expectSharedDirIntact(`after rm ${WG_DIR}/office.sock`, []);
    await expectNotStartedByWg(inst, 'office');
  }, 60_000);

  it('an interface name that is not the instance name: exit 78 naming both, no restart, no socket left', async () => {
    requireInstalled();
    const inst = 'tunvpn@branch';
    await container().sh(`cp ${configPath} /etc/tunvpn/branch.json`);
    await writeConfig('/etc/tunvpn/branch.json', (cfg) => {
      (cfg.interface as Record<string, unknown>).name = 'tunvpn2';
      cfg.peers = [siteB()];
    });
    // Type=exec: the start job succeeds, the daemon exits 78 right after.
    await container().execAllowFail(['systemctl', 'start', inst]);
    await waitFor(`${inst} failed`, async () => (await container().property(inst, 'ActiveState')) === 'failed');
    expect(await container().property(inst, 'ExecMainStatus')).toBe('78');
    expect(await container().property(inst, 'NRestarts')).toBe('0');
    const j = await journal(inst);
    expect(j).toContain('interface.name is "tunvpn2"');
    expect(j).toContain(`${WG_DIR}/branch.sock (from tunvpn@branch.socket)`);
    expect(await linkExists('tunvpn2')).toBe(false);
    await waitFor(`${inst}.socket stopped`, async () => (await container().property(`${inst}.socket`, 'ActiveState')) === 'inactive');
    await expectSharedDirIntact(`after ${inst} refused its socket`, []);
    await expectNotStartedByWg(inst, 'branch');
    await container().exec(['systemctl', 'reset-failed', inst]);
  }, 60_000);

  it("an instance named like the other daemon's interface leaves that daemon's socket alone", async () => {
    requireInstalled();
    // systemd unlinks whatever is at ListenStream= before binding, a live
    // wireguard-go's socket included; the socket unit refuses instead.
    const inst = `tunvpn@${OTHER_IF}`;
    await container().sh(`cp ${configPath} /etc/tunvpn/${OTHER_IF}.json`);
    await writeConfig(`/etc/tunvpn/${OTHER_IF}.json`, (cfg) => {
      (cfg.interface as Record<string, unknown>).name = OTHER_IF;
      (cfg.interface as Record<string, unknown>).listenPort = 51830;
      cfg.peers = [siteB()];
    });
    const r = await container().execAllowFail(['systemctl', 'start', inst]);
    expect(r.code).not.toBe(0);
    expect(await container().property(`${inst}.socket`, 'ActiveState')).toBe('failed');
    expect(await container().property(inst, 'ActiveState')).toBe('inactive');
    expect(await journal(`${inst}.socket`)).toContain(`${WG_DIR}/${OTHER_IF}.sock already exists`);
    expect(await container().property(OTHER_UNIT, 'ActiveState')).toBe('active');
    await expectSharedDirIntact(`after ${inst} was refused`, []);
    await container().exec(['systemctl', 'reset-failed', `${inst}.socket`]);
  }, 60_000);
});
