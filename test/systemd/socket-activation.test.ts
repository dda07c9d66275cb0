/**
 * The daemon with a control socket inherited the way systemd hands it over
 * (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, fd 3), made by systemd's own
 * systemd-socket-activate as root in the shared /run/wireguard, as
 * tunvpn.socket does under PID 1 (test/systemd/nspawn.test.ts runs that).
 * The real daemon in a namespace, the real `wg` as the client.
 */
import { connect } from 'node:net';
import { existsSync, linkSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeIntegration, Netns, run, sleep, uniqueSuffix } from '../helpers/netns.js';
import { ControlSocketActivationError, inheritedControlSocket } from '../../src/control/socket-activation.js';
import { makeKeyPair } from '../helpers/daemon.js';
import { cliPath, ConfigDir, DaemonProcess } from '../../src/testbed/site-to-site.js';

const WG_DIR = '/run/wireguard';
const FDNAME = 'tunvpn-test.socket';

describe('inheritedControlSocket: what the environment says', () => {
  it('nothing passed (run by hand): undefined', () => {
    expect(inheritedControlSocket('tv0', { env: {}, pid: 4242 })).toBeUndefined();
  });

  it('LISTEN_PID of another process: not ours, undefined, and the variables are dropped so no child takes them', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '1', LISTEN_FDNAMES: 'x.socket', KEEP: 'yes' };
    expect(inheritedControlSocket('tv0', { env, pid: 4242 })).toBeUndefined();
    expect(env).toEqual({ KEEP: 'yes' });
  });

  it('ours but no usable LISTEN_FDS: a ControlSocketActivationError naming the socket unit', () => {
    for (const fds of [undefined, '', '0', 'two', '3']) {
      const env: NodeJS.ProcessEnv = { LISTEN_PID: '4242', LISTEN_FDNAMES: 'tunvpn@x.socket' };
      if (fds !== undefined) env.LISTEN_FDS = fds;
      let err: unknown;
      try {
        inheritedControlSocket('tv0', { env, pid: 4242 });
      } catch (e) {
        err = e;
      }
      expect(err, `LISTEN_FDS=${String(fds)}`).toBeInstanceOf(ControlSocketActivationError);
      expect((err as ControlSocketActivationError).code).toBe('CONTROL_SOCKET_ACTIVATION');
      expect((err as Error).message).toContain('(from tunvpn@x.socket)');
      expect((err as Error).message).toContain('exactly one');
      expect(env.LISTEN_PID).toBeUndefined();
    }
  });
});

describeIntegration('control socket inherited from systemd (socket activation)', ['systemd-socket-activate', 'wg'], () => {
  let ns: Netns | undefined;
  let dir: ConfigDir | undefined;
  let peerKey = '';
  const procs: DaemonProcess[] = [];
  const files: string[] = [];

  beforeAll(async () => {
    ns = await Netns.create('tsa');
    dir = await ConfigDir.create();
    peerKey = makeKeyPair().publicKey;
    // wireguard-go and `wg` make it 0755; so does this, if no one has yet.
    mkdirSync(WG_DIR, { recursive: true, mode: 0o755 });
  });

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    for (const f of files) rmSync(f, { force: true });
    await ns?.destroy();
    await dir?.destroy();
  });

  async function config(ifname: string): Promise<string> {
    if (!dir) throw new Error('no config dir');
    const me = makeKeyPair();
    return dir.writeHost(ifname, {
      interfaceName: ifname,
      privateKey: me.privateKey,
      listenPort: 0,
      addresses: ['10.63.0.1/24'],
      peers: [{ name: 'p', publicKey: peerKey, allowedIPs: ['10.63.0.2/32'] }],
    });
  }

  /**
   * `systemd-socket-activate -l PATH... tunvpn run`: binds the sockets, and
   * at the first connection execs the daemon with them as fd 3 and on (the
   * same process: LISTEN_PID is its pid).
   */
  function activate(paths: string[], configPath: string): DaemonProcess {
    if (!ns) throw new Error('no namespace');
    for (const p of paths) files.push(p);
    const child = ns.spawn(
      'systemd-socket-activate',
      [...paths.map((p) => `--listen=${p}`), `--fdname=${FDNAME}`, process.execPath, cliPath(), 'run', '--config', configPath],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const proc = new DaemonProcess(child);
    procs.push(proc);
    return proc;
  }

  async function waitForFile(path: string): Promise<void> {
    for (let i = 0; i < 100 && !existsSync(path); i++) await sleep(50);
    expect(existsSync(path), path).toBe(true);
  }

  /** Connects once (so systemd-socket-activate execs the daemon) and closes. */
  function poke(path: string): Promise<void> {
    return new Promise((resolve) => {
      const s = connect(path);
      s.on('error', () => resolve());
      s.on('connect', () => {
        s.destroy();
        resolve();
      });
    });
  }

  async function linkExists(ifname: string): Promise<boolean> {
    return run('ip', ['-n', ns?.name ?? '', 'link', 'show', ifname]).then(
      () => true,
      () => false,
    );
  }

  it('serves `wg` on the inherited socket and leaves the file to whoever made it', async () => {
    const ifname = `tsa${uniqueSuffix()}`;
    const path = `${WG_DIR}/${ifname}.sock`;
    const proc = activate([path], await config(ifname));
    await waitForFile(path);
    const before = statSync(path);
    // The first connection starts the daemon and is answered once it is up.
    const shown = await run('wg', ['show', ifname], { timeoutMs: 30_000 });
    expect(shown.stdout).toContain(`interface: ${ifname}`);
    expect(shown.stdout).toContain(`peer: ${peerKey}`);
    const up = await proc.waitForLog(/^control socket listening$/);
    expect(up.inherited).toBe(true);
    // Nothing made, replaced or chmod'ed: the same file, as it was.
    const after = statSync(path);
    expect([after.ino, after.mode, after.uid, after.gid]).toEqual([before.ino, before.mode, before.uid, before.gid]);
    expect((await run('wg', ['show', ifname, 'peers'])).stdout.trim()).toBe(peerKey);

    expect(await proc.stop()).toBe(0);
    // The socket's maker removes it (tunvpn.socket: RemoveOnStop=yes), not the daemon.
    expect(statSync(path).ino).toBe(before.ino);
  }, 60_000);

  it('deleting the inherited socket file shuts the daemon down cleanly', async () => {
    const ifname = `tsa${uniqueSuffix()}`;
    const path = `${WG_DIR}/${ifname}.sock`;
    const proc = activate([path], await config(ifname));
    await waitForFile(path);
    await poke(path);
    await proc.waitForLog(/^tunvpn up/);
    rmSync(path);
    expect(await Promise.race([proc.wait(), sleep(10_000).then(() => 'still running')])).toBe(0);
    expect(proc.records().some((r) => r.msg === 'control socket removed: shutting down')).toBe(true);
    expect(await linkExists(ifname)).toBe(false);
  }, 60_000);

  it("another interface's socket: exit 78 naming interface.name and the socket's path; nothing created", async () => {
    const ifname = `tsa${uniqueSuffix()}`;
    const other = `tsb${uniqueSuffix()}`;
    const path = `${WG_DIR}/${other}.sock`;
    const proc = activate([path], await config(ifname));
    await waitForFile(path);
    await poke(path);
    expect(await Promise.race([proc.wait(), sleep(15_000).then(() => 'still running')])).toBe(78);
    const err = proc.lines.join('\n');
    expect(err).toContain(`interface.name is "${ifname}"`);
    expect(err).toContain(`systemd passed ${path} (from ${FDNAME})`);
    expect(err).toContain(`${WG_DIR}/${ifname}.sock`);
    expect(await linkExists(ifname)).toBe(false);
    expect(existsSync(`${WG_DIR}/${ifname}.sock`)).toBe(false);
  }, 60_000);

  it('the socket file deleted before the daemon started: exit 78, not a start that fails at every restart', async () => {
    const ifname = `tsa${uniqueSuffix()}`;
    const path = `${WG_DIR}/${ifname}.sock`;
    const side = `${WG_DIR}/.${ifname}-side.sock`;
    files.push(side);
    const proc = activate([path], await config(ifname));
    await waitForFile(path);
    // A second name for the same socket, to connect through once the first is gone.
    linkSync(path, side);
    rmSync(path);
    await poke(side);
    expect(await Promise.race([proc.wait(), sleep(15_000).then(() => 'still running')])).toBe(78);
    expect(proc.lines.join('\n')).toContain(`the inherited control socket ${path} (from ${FDNAME}) is no longer there`);
    expect(await linkExists(ifname)).toBe(false);
  }, 60_000);

  it('two sockets: exit 78, tunvpn takes exactly one', async () => {
    const ifname = `tsa${uniqueSuffix()}`;
    const path = `${WG_DIR}/${ifname}.sock`;
    const proc = activate([path, `${WG_DIR}/${ifname}-2.sock`], await config(ifname));
    await waitForFile(path);
    await poke(path);
    expect(await Promise.race([proc.wait(), sleep(15_000).then(() => 'still running')])).toBe(78);
    expect(proc.lines.join('\n')).toContain('systemd passed 2 sockets');
    expect(await linkExists(ifname)).toBe(false);
  }, 60_000);

  it('LISTEN_PID of another process: not ours, the daemon makes its own socket (0600) as when run by hand', async () => {
    if (!ns) throw new Error('no namespace');
    const ifname = `tsa${uniqueSuffix()}`;
    const path = `${WG_DIR}/${ifname}.sock`;
    files.push(path);
    const child = ns.spawn(process.execPath, [cliPath(), 'run', '--config', await config(ifname)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LISTEN_PID: '1', LISTEN_FDS: '1', LISTEN_FDNAMES: FDNAME },
    });
    const proc = new DaemonProcess(child);
    procs.push(proc);
    const up = await proc.waitForLog(/^control socket listening$/);
    expect(up.inherited).toBeUndefined();
    const st = statSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect((await run('wg', ['show', ifname, 'peers'])).stdout.trim()).toBe(peerKey);
    expect(await proc.stop()).toBe(0);
    // Its own socket, so it removes it.
    expect(existsSync(path)).toBe(false);
  }, 60_000);
});
