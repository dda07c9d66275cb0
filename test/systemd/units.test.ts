/**
 * The systemd units: `systemd-analyze verify` accepts both, and the
 * offline security exposure score stays "OK" or better.
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

  for (const unit of ['tunvpn.service', 'tunvpn@.service']) {
    it(`systemd-analyze verify accepts ${unit}`, async () => {
      let path = await verifiable(unit);
      if (unit.includes('@')) {
        // A template is verified through an instance name.
        const inst = join(dir, 'tunvpn@site-b.service');
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

    it(`${unit} has an exposure level of OK or better`, async () => {
      const path = await verifiable(unit);
      const { stdout } = await execFileP('systemd-analyze', ['security', '--offline=yes', '--no-pager', path]).catch(
        (err: { stdout: string }) => ({ stdout: err.stdout }),
      );
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
});
