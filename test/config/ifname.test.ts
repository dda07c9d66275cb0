/**
 * One interface-name rule for `check`, `run` (the `ip` wrapper) and the
 * control socket. Before, `check` accepted names `run` then refused
 * (`fz#0`, `fzé0`, `a,b`, `-tun`, ESC, NUL), and the three places each had
 * their own rule.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, interfaceNameProblem, isValidInterfaceName, parseConfig } from '../../src/config/index.js';
import { UapiServer } from '../../src/control/uapi-server.js';
import { IpArgumentError, IpCommandError, listRoutes } from '../../src/tun/iproute.js';
import { MemoryDevice } from '../control/memory-device.js';
import { keyPair } from './helpers.js';

const me = keyPair();

const GOOD = ['tunvpn0', 'wg0', 'a', 'A9', 'tun_1', 'x=y+z', 'a.b', 'a-b', 'wg.', 'abcdefghijklmno', '0', '_'];
const BAD: [string, RegExp][] = [
  ['', /must not be empty/],
  ['.', /must not be "\." or "\.\."/],
  ['..', /must not be "\." or "\.\."/],
  ['abcdefghijklmnop', /is 16 bytes long, longer than 15 bytes/],
  ['\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9', /is 16 bytes long/],
  ['a/b', /not a valid Linux interface name: "\/" is not allowed/],
  ['a:b', /not a valid Linux interface name: ":" is not allowed/],
  ['a b', /not a valid Linux interface name: whitespace \(U\+0020\)/],
  ['tun\t0', /not a valid Linux interface name: whitespace \(U\+0009\)|the control character U\+0009/],
  ['a\u00a0b', /whitespace \(U\+00A0\)/],
  ['fz#0', /"#" is not allowed \(only ASCII letters, digits and _ = \+ \. -\)/],
  ['fz\u00e90', /the non-ASCII character U\+00E9 is not allowed/],
  ['a,b', /"," is not allowed/],
  ['a@b', /"@" is not allowed/],
  ['-tun', /must not start with "-"/],
  ['a\u001bb', /the control character U\+001B is not allowed/],
  ['\u001b[2J', /the control character U\+001B/],
  ['a\u0000b', /the control character U\+0000 is not allowed/],
  ['x\u202e0', /the non-ASCII character U\+202E/],
  ['a\u007fb', /the control character U\+007F/],
];

describe('interfaceNameProblem', () => {
  it('accepts the kernel-valid, printable names wg-quick accepts', () => {
    for (const name of GOOD) expect(interfaceNameProblem(name), JSON.stringify(name)).toBeUndefined();
    for (const name of GOOD) expect(isValidInterfaceName(name)).toBe(true);
  });

  it('refuses what Linux refuses, and control characters, non-ASCII, punctuation and a leading "-", saying why', () => {
    for (const [name, why] of BAD) {
      const problem = interfaceNameProblem(name);
      expect(problem, JSON.stringify(name)).toMatch(why);
      expect(isValidInterfaceName(name)).toBe(false);
    }
    expect(interfaceNameProblem(7)).toBe('must be a string, got a number');
    expect(interfaceNameProblem(null)).toBe('must be a string, got null');
  });

  it('never repeats the name in its message (it may hold anything)', () => {
    for (const [name] of BAD) {
      if (name.length > 2) expect(interfaceNameProblem(name)).not.toContain(name);
    }
  });
});

describe('check, run and the control socket apply the same rule', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tunvpn-ifname-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function configAccepts(name: string): Promise<boolean> {
    try {
      await parseConfig({ interface: { privateKey: me.priv, name } }, { baseDir: dir });
      return true;
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const issue = (err as ConfigError).issues.find((i) => i.path === 'interface.name');
      expect(issue, (err as ConfigError).message).toBeDefined();
      return false;
    }
  }

  /** The `ip` wrapper: an argument error before `ip` runs, or `ip`'s own error for a device that does not exist. */
  async function ipAccepts(name: string): Promise<boolean> {
    try {
      await listRoutes(name);
      return true;
    } catch (err) {
      if (err instanceof IpCommandError) return true; // validated, then `ip` found no such device
      expect(err).toBeInstanceOf(IpArgumentError);
      expect((err as Error).message).toMatch(/^invalid interface name: /);
      return false;
    }
  }

  async function socketAccepts(name: string): Promise<boolean> {
    try {
      const server = await UapiServer.listen(name, new MemoryDevice(), { dir: join(dir, 'run') });
      await server.close();
      return true;
    } catch (err) {
      expect((err as Error).message).toMatch(/^invalid interface name for a control socket: /);
      return false;
    }
  }

  it('every good name passes all three, every bad name fails all three', async () => {
    for (const name of GOOD) {
      expect([await configAccepts(name), await ipAccepts(name), await socketAccepts(name)], JSON.stringify(name)).toEqual([true, true, true]);
    }
    for (const [name] of BAD) {
      expect([await configAccepts(name), await ipAccepts(name), await socketAccepts(name)], JSON.stringify(name)).toEqual([false, false, false]);
    }
  });
});
