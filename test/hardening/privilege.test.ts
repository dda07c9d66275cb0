/**
 * Least privilege: host B's daemon runs as an unprivileged user (nobody,
 * 65534) holding only CAP_NET_ADMIN, as the systemd unit runs it, and the
 * tunnel works.
 *
 * Under the units, systemd makes the control socket as root and hands it
 * over (tunvpn.socket; test/systemd/ covers that). Run by hand as an
 * unprivileged user, the daemon makes its own socket: here a tmpfs owned by
 * 65534 is mounted over /run/wireguard inside the private mount namespace
 * `ip netns exec` makes for the daemon, so the host's directory is
 * untouched. The key and config files are chowned to 65534.
 */
import { chmod, chown, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADDR, cliPath, DaemonProcess } from '../../src/testbed/site-to-site.js';
import { tcpTransfer } from '../helpers/daemon.js';
import { describeIntegration, pingUntil } from '../helpers/netns.js';
import { dropDelta, hardeningBed, pidOf, status, type HardeningBed } from './helpers.js';
import { AS_NOBODY_SCRIPT, NOBODY_NET_ADMIN } from '../helpers/unprivileged.js';

const NOBODY = 65534;
const CAP_NET_ADMIN = 12;

describeIntegration('hardening: least privilege', ['ping', 'setpriv'], () => {
  let h: HardeningBed;

  beforeAll(async () => {
    h = await hardeningBed('hp', {
      startB: async (ns, configPath, dir) => {
        await chmod(dir.path, 0o711);
        await chown(configPath, NOBODY, NOBODY);
        await chown(join(dir.path, 'b.key'), NOBODY, NOBODY);
        // In this process's own mount namespace (ip netns exec makes one).
        const child = ns.spawn('sh', ['-c', AS_NOBODY_SCRIPT, 'sh', ...NOBODY_NET_ADMIN, process.execPath, cliPath(), 'run', '--config', configPath], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        const d = new DaemonProcess(child);
        await d.waitForLog(/^tunvpn up/);
        return d;
      },
    });
  });

  afterAll(async () => {
    await h?.destroy();
  });

  it('runs as nobody with CAP_NET_ADMIN only, and carries traffic both ways', async () => {
    const procStatus = await readFile(`/proc/${pidOf(h.db)}/status`, 'utf8');
    const field = (name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(procStatus)?.[1] ?? '';
    expect(field('Uid').split(/\s+/).map(Number)).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(field('Gid').split(/\s+/).map(Number)).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(field('Groups')).toBe('');
    const only = (1n << BigInt(CAP_NET_ADMIN)).toString(16).padStart(16, '0');
    expect(field('CapEff')).toBe(only);
    expect(field('CapPrm')).toBe(only);
    expect(field('CapBnd')).toBe(only);

    await pingUntil(h.bed.lb, ADDR.la.v4, 5_000);
    await pingUntil(h.bed.la, ADDR.lb.v4, 5_000);
    const r = await tcpTransfer(h.bed.lb, h.bed.la, ADDR.la.v4, 5301, 4 * 1024 * 1024, 30);
    expect(r.remote).toBe(r.local);
    // Reload works unprivileged too (it re-reads the key file it owns).
    const from = h.db.records().length;
    h.db.signal('SIGHUP');
    await h.db.waitForLog(/configuration reloaded/, 10_000, from);
    const before = await status(h.db);
    await pingUntil(h.bed.la, ADDR.lb.v4, 5_000);
    expect(dropDelta(before, await status(h.db))['tun-write-failed'] ?? 0).toBe(0);
  });
});
