/**
 * Every line `tunvpn` prints is safe for a terminal and free of key
 * material: control characters from any input (config, argv, socket file
 * names) are escaped as \uXXXX, while `show` keeps its own colours. Before,
 * `check` printed an ESC sequence from the config raw and accepted names
 * `run` refused.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { keyPair, writeFile } from '../config/helpers.js';
import { tunvpn } from './helpers.js';

const me = keyPair();
const peer = keyPair();
let dir: string;

/** Control characters other than newline. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

function write(name: string, content: string, mode = 0o600): string {
  return writeFile(dir, name, content, mode);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tunvpn-out-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('tunvpn check output', () => {
  it('escapes ESC, OSC, BEL, NUL and newlines from the config instead of printing them', async () => {
    const cfg = write(
      'esc.json',
      JSON.stringify({
        interface: { privateKey: me.priv, '\u001b]0;pwned\u0007': 1, 'x\u001b[2J': 2 },
        peers: [{ publicKey: peer.pub, allowedIPs: ['\u001b[31mred', '1.2.3.4/40\n  forged: line'], endpoint: '\u0000:1' }],
      }),
    );
    const r = await tunvpn(['check', '--config', cfg]);
    expect(r.code).toBe(78);
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    expect(r.stderr).toContain('interface["\\u001b]0;pwned\\u0007"]: unknown key');
    expect(r.stderr).toContain('interface["x\\u001b[2J"]: unknown key');
    expect(r.stderr).toContain('"\\u001b[31mred" is not an IPv4 or IPv6 address');
    // One line per problem: the newline in the value did not start a line of its own.
    expect(r.stderr.split('\n').filter((l) => l.startsWith('  forged'))).toEqual([]);
  });

  it('refuses, like run, the interface names it used to accept', async () => {
    for (const name of ['fz#0', 'fz\u00e90', 'a,b', '-tun', 'a\u001bb', 'a\u0000b']) {
      const cfg = write('name.json', JSON.stringify({ interface: { privateKey: me.priv, name } }));
      const r = await tunvpn(['check', '--config', cfg]);
      expect(r.code, JSON.stringify(name)).toBe(78);
      expect(r.stderr).toMatch(/interface\.name: (is not a valid interface name|must not start with "-")/);
      expect(r.stderr).not.toMatch(RAW_CONTROL);
    }
  });

  it('never prints a key given by mistake on the command line', async () => {
    const cases = [['check', '--config', 'x.json', me.priv], ['check', `--${Buffer.from(me.priv, 'base64').toString('base64url')}`], [me.priv]];
    for (const args of cases) {
      const r = await tunvpn(args);
      expect(r.code).toBe(2);
      expect(r.stderr).not.toContain(me.priv.slice(0, 12));
      expect(r.stderr).not.toContain(Buffer.from(me.priv, 'base64').toString('base64url').slice(0, 12));
      expect(r.stderr).toContain('(not shown: looks like a key)');
    }
  });
});

describe('the dispatcher and run', () => {
  it('escapes control characters in usage errors', async () => {
    const r = await tunvpn(['\u001b]0;pwned\u0007']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("tunvpn: unknown command '\\u001b]0;pwned\\u0007'\nTry 'tunvpn --help' for more information.\n");
  });

  it("escapes them in run's errors", async () => {
    const r = await tunvpn(['run', '--log-level', '\u001b[2J']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('tunvpn run: --log-level must be one of trace, debug, info, warn, error, fatal, silent, not "\\u001b[2J"\n');
    const cfg = write('run.json', JSON.stringify({ interface: { privateKey: me.priv, 'a\u001b[2J': 1 } }));
    const bad = await tunvpn(['run', '--config', cfg]);
    expect(bad.code).toBe(78);
    expect(bad.stderr).toContain('interface["a\\u001b[2J"]: unknown key');
    expect(bad.stderr).not.toMatch(RAW_CONTROL);
  });
});

class Tty extends Writable {
  text = '';
  isTTY = true;
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    done();
  }
}

describe('tunvpn show', () => {
  let server: Server;
  let sockDir: string;
  const evil = 'ev\u001b]0;pwned\u0007il';

  beforeAll(async () => {
    sockDir = mkdtempSync(join(tmpdir(), 'tunvpn-show-'));
    // A control socket under a name no tunvpn would create (anything can
    // bind a socket in that directory); it answers `get` like a daemon.
    server = createServer((sock) => {
      sock.on('data', () => {
        sock.end('listen_port=51820\nerrno=0\n\n');
      });
    });
    await new Promise<void>((resolve) => server.listen(join(sockDir, `${evil}.sock`), resolve));
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(sockDir, { recursive: true, force: true });
  });

  it('keeps its own colours on a terminal but escapes the control characters of an interface name', async () => {
    const stdout = new Tty();
    const stderr = new Tty();
    const code = await main(['show', '--socket-dir', sockDir], { stdin: Readable.from([]), stdout, stderr, env: {} });
    expect(code).toBe(0);
    expect(stdout.text).toContain('\u001b[32m'); // show's green, passed through
    expect(stdout.text).toContain('ev\\u001b]0;pwned\\u0007il');
    expect(stdout.text).not.toContain('\u001b]');
    expect(stdout.text).not.toContain('\u0007');
  });

  it('escapes everything without a terminal (no colour there)', async () => {
    const r = await tunvpn(['show', '--socket-dir', sockDir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('interface: ev\\u001b]0;pwned\\u0007il');
    expect(r.stdout).not.toMatch(RAW_CONTROL);
  });
});
