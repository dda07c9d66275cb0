/**
 * Fatal start-up errors: each prints one clear line on stderr, exits
 * non-zero (78 for a bad config) and leaves nothing behind.
 */
import { chown, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, Netns } from '../helpers/netns.js';
import { cliPath, ConfigDir, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair } from '../helpers/daemon.js';

interface Outcome {
  code: number | null;
  stderr: string;
}

async function runExpectingFailure(ns: Netns, argv: string[]): Promise<Outcome> {
  const child = ns.spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  return { code, stderr };
}

const NOBODY_NO_CAPS = ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'];

/**
 * A `sh -c` script (for `unshare -m`) that puts a TUN device node with
 * `mode` over /dev/net/tun in the new mount namespace, then runs "$0" "$@".
 */
function withTunNode(mode: string): string {
  return [
    'mkdir -p /run/tunvpn-dev',
    'mount -t tmpfs -o size=64k,mode=0755 tunvpn-dev /run/tunvpn-dev',
    `mknod -m ${mode} /run/tunvpn-dev/tun c 10 200`,
    'mount --bind /run/tunvpn-dev/tun /dev/net/tun',
    'exec "$0" "$@"',
  ].join(' && ');
}

describeIntegration('daemon start-up errors', ['setpriv', 'unshare'], () => {
  let ns: Netns;
  let dir: ConfigDir;
  let running: DaemonProcess | undefined;
  let cfg: string;

  async function writeConfig(name: string, iface: string, port: number): Promise<string> {
    const { privateKey } = makeKeyPair();
    return dir.writeHost(name, { interfaceName: iface, privateKey, listenPort: port, addresses: ['10.98.0.1/24'], peers: [] });
  }

  beforeAll(async () => {
    ns = await Netns.create('se');
    dir = await ConfigDir.create();
    cfg = await writeConfig('main', 'se0', 51901);
    running = await startDaemon(ns, cfg);
  });

  afterAll(async () => {
    await running?.stop();
    await ns?.destroy();
    await dir?.destroy();
  });

  it('a port in use: one line, exit 1, and the interface it created is gone again', async () => {
    const other = await writeConfig('port', 'se1', 51901);
    const r = await runExpectingFailure(ns, [process.execPath, cliPath(), 'run', '-c', other]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual(['tunvpn: cannot start: UDP port 51901 is already in use (PORT_IN_USE)']);
    const links = await ns.exec('ip', ['-o', 'link']);
    expect(links.stdout).not.toContain('se1');
  });

  it('an interface name in use: one line naming it', async () => {
    const other = await writeConfig('busy', 'se0', 51902);
    const r = await runExpectingFailure(ns, [process.execPath, cliPath(), 'run', '-c', other]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/interface se0 is already in use.*EBUSY/);
  });

  /**
   * `tunvpn run` as nobody without capabilities, with a /dev/net/tun of
   * `tunMode` in its own mount namespace; returns how it failed.
   */
  async function runAsNobody(tag: string, iface: string, port: number, tunMode: string): Promise<Awaited<ReturnType<typeof runExpectingFailure>>> {
    const config = await writeConfig(tag, iface, port);
    // The unprivileged user must be able to read its config and key.
    await chown(dir.path, 65534, 65534);
    await chown(config, 65534, 65534);
    await chown(join(dir.path, `${tag}.key`), 65534, 65534);
    try {
      return await runExpectingFailure(ns, [
        'unshare',
        '-m',
        'sh',
        '-c',
        withTunNode(tunMode),
        'setpriv',
        ...NOBODY_NO_CAPS,
        process.execPath,
        cliPath(),
        'run',
        '-c',
        config,
      ]);
    } finally {
      await chown(dir.path, 0, 0);
    }
  }

  it('no CAP_NET_ADMIN: one line saying what is needed', async () => {
    // /dev/net/tun as udev makes it on Debian (0666), whatever this host has.
    const r = await runAsNobody('nocap', 'se2', 51903, '0666');
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/needs CAP_NET_ADMIN/);
  });

  it('/dev/net/tun not open to the user: one line saying so, not blaming capabilities', async () => {
    const r = await runAsNobody('nodev', 'se4', 51905, '0600');
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/cannot open \/dev\/net\/tun.*mode 0666.*EACCES/);
    expect(r.stderr).not.toMatch(/CAP_NET_ADMIN/);
  });

  it('no /dev/net/tun: one line saying so', async () => {
    const other = await writeConfig('notun', 'se3', 51904);
    const script = `mount --bind /dev/null /dev/net/tun && exec "$0" "$@"`;
    const r = await runExpectingFailure(ns, ['unshare', '-m', 'sh', '-c', script, process.execPath, cliPath(), 'run', '-c', other]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/no usable \/dev\/net\/tun/);
  });

  it('a bad config: its errors, exit 78, no key printed', async () => {
    const { privateKey } = makeKeyPair();
    const bad = join(dir.path, 'bad.json');
    await writeFile(bad, JSON.stringify({ interface: { privateKey, listenPort: 70000 }, peers: [{ publicKey: 'nope', allowedIPs: ['10.0.0.0/40'] }] }), {
      mode: 0o600,
    });
    const r = await runExpectingFailure(ns, [process.execPath, cliPath(), 'run', '-c', bad]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('interface.listenPort');
    expect(r.stderr).toContain('peers[0].publicKey');
    expect(r.stderr).toContain('peers[0].allowedIPs[0]');
    expect(r.stderr).not.toContain(privateKey);
  });
});
