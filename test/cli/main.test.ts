import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/main.js';
import { keyPair, writeFile } from '../config/helpers.js';
import { tunvpn } from './helpers.js';

const me = keyPair();
const peer = keyPair();
let dir: string;
let good: string;
let bad: string;

function write(name: string, content: string, mode = 0o600): string {
  return writeFile(dir, name, content, mode);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tunvpn-cli-'));
  write('private.key', `${me.priv}\n`);
  good = write(
    'good.json',
    JSON.stringify({
      interface: { privateKeyFile: 'private.key', addresses: ['10.62.0.1/24'], listenPort: 51999 },
      peers: [
        { name: 'b', publicKey: peer.pub, endpoint: '127.0.0.1:51820', allowedIPs: ['10.62.0.2/32'] },
        { name: 'c', publicKey: keyPair().pub, allowedIPs: ['10.62.0.2/32'] },
      ],
    }),
  );
  bad = write(
    'bad.json',
    JSON.stringify({
      interface: { privateKey: me.priv, listenPort: 70000 },
      peers: [{ publicKey: peer.pub, allowedIPs: ['10.62.0.2/33'] }, { publicKey: peer.pub }],
    }),
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('tunvpn check', () => {
  it('validates a good config: summary on stdout, warnings on stderr, exit 0', async () => {
    const r = await tunvpn(['check', '--config', good]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      `${good}: OK\ninterface tunvpn0, listen port 51999, addresses 10.62.0.1/24, mtu 1420, 2 peers (1 with endpoint), log info, crypto auto\n`,
    );
    expect(r.stderr).toMatch(/^warning: peers\[1\]\.allowedIPs\[0\]: conflict: 10\.62\.0\.2\/32/);
  });

  it('takes the path from -c and from TUNVPN_CONFIG', async () => {
    expect((await tunvpn(['check', '-c', good])).code).toBe(0);
    expect((await tunvpn(['check'], { env: { TUNVPN_CONFIG: good } })).code).toBe(0);
    expect((await tunvpn(['check'], { env: { TUNVPN_CONFIG: bad } })).code).toBe(78);
  });

  it('prints every problem and exits 78 (EX_CONFIG) for a bad config, without the key', async () => {
    const r = await tunvpn(['check', '--config', bad]);
    expect(r.code).toBe(78);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`invalid configuration in ${bad} (3 problems):`);
    expect(r.stderr).toContain('interface.listenPort: must be from 0 to 65535, got 70000');
    expect(r.stderr).toContain('peers[0].allowedIPs[0]: "10.62.0.2/33" has an invalid prefix length');
    expect(r.stderr).toContain('peers[1].publicKey: duplicate public key');
    expect(r.stderr).not.toContain(me.priv.slice(0, 8));
  });

  it('exits 78 for a missing config file', async () => {
    const r = await tunvpn(['check', '--config', join(dir, 'missing.json')]);
    expect(r.code).toBe(78);
    expect(r.stderr).toMatch(/cannot read config file .*missing\.json: no such file/);
  });

  it('refuses a 0644 private key file with exit 78, naming file and mode', async () => {
    const key = write('open.key', me.priv, 0o644);
    const cfg = write('open.json', JSON.stringify({ interface: { privateKeyFile: key } }));
    const r = await tunvpn(['check', '-c', cfg]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(`interface.privateKeyFile: key file ${key} has mode 0644`);
  });
});

describe('tunvpn dispatcher', () => {
  it('prints top-level help with every command for --help, -h and help', async () => {
    for (const args of [['--help'], ['-h'], ['help']]) {
      const r = await tunvpn(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Usage: tunvpn <command> \[options\]/);
      for (const c of ['run', 'check', 'genkey', 'pubkey', 'genpsk']) expect(r.stdout).toMatch(new RegExp(`\\n  ${c} +\\S`));
    }
  });

  it('prints help for every command (--help, -h, help <cmd>) and exits 0', async () => {
    for (const c of COMMANDS.filter((x) => x.name !== 'run')) {
      for (const args of [
        [c.name, '--help'],
        [c.name, '-h'],
        ['help', c.name],
      ]) {
        const r = await tunvpn(args);
        expect(r.code, args.join(' ')).toBe(0);
        expect(r.stdout).toMatch(new RegExp(`^Usage: tunvpn ${c.name}`));
        expect(r.stderr).toBe('');
      }
    }
  });

  it('prints the package version', async () => {
    const r = await tunvpn(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^tunvpn \d+\.\d+\.\d+\n$/);
  });

  it('exits 2 with help on stderr when no command is given', async () => {
    const r = await tunvpn([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: tunvpn/);
  });

  it('exits 2 naming an unknown command or option, with a hint to --help', async () => {
    const cases: [string[], string][] = [
      [['frobnicate'], "tunvpn: unknown command 'frobnicate'\nTry 'tunvpn --help' for more information.\n"],
      [['--frob'], "tunvpn: unknown option '--frob'\nTry 'tunvpn --help' for more information.\n"],
      [['help', 'nope'], "tunvpn: unknown command 'nope'\nTry 'tunvpn --help' for more information.\n"],
      [['check', '--frob'], "tunvpn check: unknown option '--frob'\nTry 'tunvpn check --help' for more information.\n"],
      [['check', '-x'], "tunvpn check: unknown option '-x'\nTry 'tunvpn check --help' for more information.\n"],
      [['check', 'file.json'], "tunvpn check: unexpected argument 'file.json'\nTry 'tunvpn check --help' for more information.\n"],
      [['genkey', 'extra'], "tunvpn genkey: unexpected argument 'extra'\nTry 'tunvpn genkey --help' for more information.\n"],
      [['pubkey', '--in', 'x'], "tunvpn pubkey: unknown option '--in'\nTry 'tunvpn pubkey --help' for more information.\n"],
      [['genpsk', '--len=16'], "tunvpn genpsk: unknown option '--len'\nTry 'tunvpn genpsk --help' for more information.\n"],
    ];
    for (const [args, stderr] of cases) {
      const r = await tunvpn(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe(stderr);
    }
  });

  it('reports a missing option value as a usage error', async () => {
    const r = await tunvpn(['check', '--config']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^tunvpn check: Option '-c, --config <value>' argument missing/);
  });
});
