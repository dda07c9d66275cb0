/**
 * The systemd units: `systemd-analyze verify` accepts the services and
 * their socket units, the offline security exposure score stays "OK" or
 * better, and the control socket is made by a root socket unit, never
 * through RuntimeDirectory= (issue 13; test/systemd/nspawn.test.ts proves
 * the effect under a real systemd).
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inCI } from '../helpers/netns.js';
import { existsSync } from 'node:fs';

const execFileP = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const hasAnalyze = existsSync('/usr/bin/systemd-analyze') || existsSync('/bin/systemd-analyze');

if (!hasAnalyze && inCI) {
  describe('systemd units', () => {
    it('has systemd-analyze', () => {
      throw new Error('systemd-analyze is missing (apt-get install systemd); CI=true: this test must run');
    });
  });
}

describe.skipIf(!hasAnalyze)('systemd units', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tunvpn-units-'));
    // verify loads a unit's dependencies (service <-> socket) from its directory.
    for (const unit of ['tunvpn.service', 'tunvpn.socket', 'tunvpn@.service', 'tunvpn@.socket']) await verifiable(unit);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * verify checks that ExecStart exists; on a machine without a global
   * install, point it at this checkout's CLI (same unit otherwise).
   */
  async function verifiable(unit: string): Promise<string> {
    const text = await readFile(join(root, 'systemd', unit), 'utf8');
    const out = join(dir, unit);
    const exe = existsSync('/usr/local/bin/tunvpn') ? '/usr/local/bin/tunvpn' : process.execPath;
    await writeFile(out, text.replaceAll('/usr/local/bin/tunvpn', exe));
    return out;
  }

  for (const unit of ['tunvpn.service', 'tunvpn.socket', 'tunvpn@.service', 'tunvpn@.socket']) {
    it(`systemd-analyze verify accepts ${unit}`, async () => {
      let path = await verifiable(unit);
      if (unit.includes('@')) {
        // A template is verified through an instance name.
        const inst = join(dir, unit.replace('@', '@site-b'));
        await copyFile(path, inst);
        path = inst;
      }
      const { stderr } = await execFileP('systemd-analyze', ['verify', '--man=no', path]).catch((err: { stderr: string; code: number }) => {
        throw new Error(`verify failed (${err.code}): ${err.stderr}`);
      });
      // Warnings about the unit itself fail the test; messages about other units do not concern us.
      const ours = stderr.split('\n').filter((l) => l.includes('tunvpn'));
      expect(ours).toEqual([]);
    });
  }

  for (const unit of ['tunvpn.service', 'tunvpn@.service']) {
    it(`${unit} has an exposure level of OK or better`, async () => {
      const path = await verifiable(unit);
      const { stdout } = await execFileP('systemd-analyze', ['security', '--offline=yes', '--no-pager', path]).catch((err: { stdout: string }) => ({
        stdout: err.stdout,
      }));
      const m = /Overall exposure level for .*: (\d+\.\d+) (\w+)/.exec(stdout);
      expect(m, stdout.slice(-500)).not.toBeNull();
      const score = Number(m?.[1]);
      console.info(`${unit}: exposure ${score} ${m?.[2]}`);
      expect(score).toBeLessThanOrEqual(4.9);
      expect(['OK', 'SAFE']).toContain(m?.[2]);
    });
  }

  it('the template unit reads /etc/tunvpn/%i.json and reloads with HUP', async () => {
    const text = await readFile(join(root, 'systemd', 'tunvpn@.service'), 'utf8');
    expect(text).toContain('--config /etc/tunvpn/%i.json');
    expect(text).toMatch(/^ExecReload=\/bin\/sh -c "kill -HUP \$\$MAINPID"$/m);
    expect(text).toMatch(/^AmbientCapabilities=CAP_NET_ADMIN$/m);
    expect(text).toMatch(/^CapabilityBoundingSet=CAP_NET_ADMIN$/m);
  });

  for (const [service, socket, name] of [
    ['tunvpn.service', 'tunvpn.socket', 'tunvpn0'],
    ['tunvpn@.service', 'tunvpn@.socket', '%i'],
  ] as const) {
    it(`${service} takes its control socket from ${socket}, never chowns /run/wireguard`, async () => {
      const svc = await readFile(join(root, 'systemd', service), 'utf8');
      // RuntimeDirectory= chowns the directory and everything in it to User= at every start.
      expect(svc).not.toMatch(/^RuntimeDirectory/m);
      expect(svc).not.toMatch(/^(ReadWritePaths|BindPaths)=.*\/run/m);
      const sock = socket.replace('@', '@%i');
      expect(svc).toMatch(new RegExp(`^Requires=${sock.replace(/[.%@]/g, '\\$&')}$`, 'm'));
      expect(svc).toMatch(new RegExp(`^After=${sock.replace(/[.%@]/g, '\\$&')}$`, 'm'));
    });

    it(`${socket} makes /run/wireguard/${name}.sock as root, 0600, only while the service runs`, async () => {
      const text = await readFile(join(root, 'systemd', socket), 'utf8');
      expect(text).toMatch(new RegExp(`^ListenStream=/run/wireguard/${name}\\.sock$`, 'm'));
      expect(text.match(/^ListenStream=/gm)).toHaveLength(1);
      expect(text).toMatch(/^SocketUser=root$/m);
      expect(text).toMatch(/^SocketGroup=root$/m);
      expect(text).toMatch(/^SocketMode=0600$/m);
      expect(text).toMatch(/^DirectoryMode=0755$/m);
      expect(text).toMatch(/^RemoveOnStop=yes$/m);
      expect(text).toMatch(/^StopWhenUnneeded=yes$/m);
      // BindsTo= would stop the socket, and with it Restart=, when the service crashes (systemd 252).
      expect(text).not.toMatch(/^BindsTo=/m);
      // Activated through the service only: no [Install], no Accept=yes.
      expect(text).not.toMatch(/^\[Install\]/m);
      expect(text).not.toMatch(/^Accept=yes/m);
      // The guard against systemd unlinking another daemon's live socket names the same path.
      expect(text).toMatch(new RegExp(`^ExecStartPre=/bin/sh -c .* sh /run/wireguard/${name}\\.sock$`, 'm'));
    });
  }
});
