/**
 * interface.hooks in the config: accepted shapes, every error at its exact
 * path (down to the argument: interface.hooks.postUp[1][0]), `tunvpn check`
 * reporting them, defaults, and the reload diff.
 */
import { Readable, Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { ConfigError, diffConfig, parseConfig, type TunvpnConfig } from '../../src/config/index.js';
import { keyPair, tempDir, writeFile } from './helpers.js';

const me = keyPair();
let dir: string;
let cleanup: () => void;
beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => cleanup());

function withHooks(hooks: unknown): Record<string, unknown> {
  return { interface: { privateKey: me.priv, addresses: ['10.62.0.1/24'], hooks }, peers: [] };
}

async function issues(raw: unknown): Promise<string[]> {
  try {
    await parseConfig(raw, { baseDir: dir });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error('expected a ConfigError');
}

describe('interface.hooks', () => {
  it('defaults to no hooks', async () => {
    const cfg = await parseConfig({ interface: { privateKey: me.priv }, peers: [] }, { baseDir: dir });
    expect(cfg.interface.hooks).toEqual({ preUp: [], postUp: [], preDown: [], postDown: [] });
  });

  it('keeps argument vectors as written, %i included, in order', async () => {
    const hooks = {
      preUp: [['/bin/true']],
      postUp: [
        ['/usr/sbin/nft', 'add', 'table', 'ip', 'tv_%i'],
        ['/bin/sh', '-c', 'echo "$0" %i', 'x'],
      ],
      postDown: [['nft', 'delete', 'table', 'ip', 'tv_%i']],
    };
    const cfg = await parseConfig(withHooks(hooks), { baseDir: dir });
    expect(cfg.interface.hooks).toEqual({ ...hooks, preDown: [] });
  });

  it('names the field of every problem, down to the argument', async () => {
    const lines = await issues(
      withHooks({
        preUp: 'iptables -A FORWARD',
        postUp: [['/bin/true'], [7, 'x'], [], 'nft add table', ['./relative.sh'], ['/bin/echo', null, 'a\u0000b']],
        preDown: [['']],
        postDown: [{ argv: ['/bin/true'] }],
        postUP: [],
      }),
    );
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^interface\.hooks\.preUp: must be an array of argument vectors/),
        'interface.hooks.postUp[1][0]: must be a string, got a number',
        'interface.hooks.postUp[2]: must not be empty: argv[0] is the program to run',
        'interface.hooks.postUp[3]: must be an argument vector (an array of strings), not a string; a shell command is ["/bin/sh", "-c", "..."]',
        'interface.hooks.postUp[4][0]: "./relative.sh" is a relative path; give an absolute path or a bare name looked up in PATH',
        'interface.hooks.postUp[5][1]: must be a string, got null',
        'interface.hooks.postUp[5][2]: must not contain a NUL character',
        'interface.hooks.preDown[0][0]: must not be empty: it is the program to run',
        'interface.hooks.postDown[0]: must be an argument vector (an array of strings), got a object',
        expect.stringMatching(/^interface\.hooks\.postUP: unknown key \(did you mean "postUp"\?\)/),
      ]),
    );
    expect(lines).toHaveLength(10);
  });

  it('never quotes a key-like argv[0] in an error', async () => {
    const lines = await issues(withHooks({ postUp: [[`x/${me.priv}`]] }));
    expect(lines.join('\n')).not.toContain(me.priv);
    expect(lines[0]).toMatch(/^interface\.hooks\.postUp\[0\]\[0\]: /);
  });

  it('tunvpn check: exit 78 with the path; a good config passes', async () => {
    const run = async (raw: unknown) => {
      const path = writeFile(dir, 'c.json', JSON.stringify(raw));
      let out = '';
      let err = '';
      const sink = (f: (t: string) => void) =>
        new Writable({
          write(c: Buffer, _e, done) {
            f(c.toString());
            done();
          },
        });
      const code = await main(['check', '--config', path], {
        stdin: Readable.from([]),
        stdout: sink((t) => (out += t)),
        stderr: sink((t) => (err += t)),
        env: {},
      });
      return { code, out, err };
    };
    const bad = await run(withHooks({ postUp: [['/bin/true'], [42]] }));
    expect(bad.code).toBe(78);
    expect(bad.err).toContain('interface.hooks.postUp[1][0]: must be a string, got a number');
    const good = await run(withHooks({ postUp: [['/bin/true']] }));
    expect(good.code).toBe(0);
    expect(good.out).toContain(': OK');
  });
});

describe('diffConfig: hooks', () => {
  function cfg(hooks: TunvpnConfig['interface']['hooks']): TunvpnConfig {
    return {
      interface: { name: 'tv0', privateKey: new Uint8Array(32).fill(9), listenPort: 1, addresses: [], mtu: 1420, fwmark: 0, table: 'auto', hooks },
      peers: [],
      log: { level: 'info' },
      metrics: {},
      crypto: { backend: 'auto' },
      warnings: [],
    };
  }
  const none = { preUp: [], postUp: [], preDown: [], postDown: [] };

  it('reports "hooks" when a list changes, order included; absent equals empty', () => {
    const one = { ...none, postUp: [['/bin/a'], ['/bin/b']] };
    expect(diffConfig(cfg(one), cfg({ ...none, postUp: [['/bin/a'], ['/bin/b']] })).interfaceChanged).toEqual([]);
    expect(diffConfig(cfg(one), cfg({ ...none, postUp: [['/bin/b'], ['/bin/a']] })).interfaceChanged).toEqual(['hooks']);
    expect(diffConfig(cfg(one), cfg({ ...one, postDown: [['/bin/c']] })).interfaceChanged).toEqual(['hooks']);
    expect(diffConfig(cfg(undefined), cfg(none)).interfaceChanged).toEqual([]);
  });
});
