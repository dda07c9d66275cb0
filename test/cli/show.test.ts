import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runShow } from '../../src/cli/show.js';
import { formatAgo, formatBytes, formatDuration, renderInterface, sortPeers, toShowJson } from '../../src/cli/show-render.js';
import { UapiServer } from '../../src/control/uapi-server.js';
import type { UapiInterfaceState } from '../../src/control/uapi-types.js';
import { loadCrypto } from '../../src/crypto/index.js';
import { MemoryDevice } from '../control/memory-device.js';

class Collect extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    done();
  }
}

async function show(args: string[], tty = false, env: NodeJS.ProcessEnv = {}) {
  const stdout = new Collect();
  stdout.isTTY = tty;
  const stderr = new Collect();
  const code = await runShow(args, { stdin: Readable.from([]), stdout, stderr, env });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

const b64 = (k: Uint8Array) => Buffer.from(k).toString('base64');
const NOW = 1_700_000_000_000;

describe('show rendering helpers', () => {
  it.each([
    [0, ''],
    [1, '1 second'],
    [63, '1 minute, 3 seconds'],
    [3600, '1 hour'],
    [2 * 86400 + 3661, '2 days, 1 hour, 1 minute, 1 second'],
    [365 * 86400 * 3 + 59, '3 years, 59 seconds'],
    [25, '25 seconds'],
  ])('formatDuration(%d) = %j', (s, text) => {
    expect(formatDuration(s)).toBe(text);
  });

  it('formatAgo says Now, N ago, or warns about a clock going backward', () => {
    expect(formatAgo(NOW, NOW + 400)).toBe('Now');
    expect(formatAgo(NOW - 63_000, NOW)).toBe('1 minute, 3 seconds ago');
    expect(formatAgo(NOW + 5000, NOW)).toMatch(/System clock wound backward/);
  });

  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.00 KiB'],
    [1_289_748, '1.23 MiB'],
    [4_781_506, '4.56 MiB'],
    [5 * 1024 ** 3, '5.00 GiB'],
    [3 * 1024 ** 4, '3.00 TiB'],
    [2048 * 1024 ** 4, '2048.00 TiB'],
  ])('formatBytes(%d) = %j', (n, text) => {
    expect(formatBytes(n)).toBe(text);
  });

  it('colours units only when asked', () => {
    expect(formatBytes(2048, true)).toBe('2.00 \x1b[36mKiB\x1b[0m');
    expect(formatDuration(1, true)).toBe('1 \x1b[36msecond\x1b[0m');
  });

  it('sorts peers by latest handshake, never-handshaken last', () => {
    const peer = (fill: number, t: number) => ({
      publicKey: new Uint8Array(32).fill(fill),
      persistentKeepalive: 0,
      lastHandshakeWallMs: t,
      rxBytes: 0,
      txBytes: 0,
      allowedIPs: [],
    });
    expect(sortPeers([peer(1, 0), peer(2, 10), peer(3, 30)]).map((p) => p.publicKey[0])).toEqual([3, 2, 1]);
  });
});

describe('renderInterface / toShowJson', () => {
  const pub = new Uint8Array(32).fill(1);
  const peerKey = new Uint8Array(32).fill(2);
  const state: UapiInterfaceState = {
    privateKey: new Uint8Array(32).fill(9),
    listenPort: 51820,
    fwmark: 0,
    peers: [
      {
        publicKey: peerKey,
        presharedKey: new Uint8Array(32).fill(5),
        endpoint: { address: '203.0.113.7', port: 51820, family: 4 },
        persistentKeepalive: 25,
        lastHandshakeWallMs: NOW - 63_000,
        rxBytes: 1_289_748,
        txBytes: 4_781_506,
        allowedIPs: ['10.62.0.2/32', '10.61.2.0/24'],
      },
    ],
  };

  it('lays out an interface like wg show', () => {
    expect(renderInterface('tv0', state, { colour: false, nowMs: NOW, publicKey: pub })).toBe(
      [
        'interface: tv0',
        `  public key: ${b64(pub)}`,
        '  private key: (hidden)',
        '  listening port: 51820',
        '',
        `peer: ${b64(peerKey)}`,
        '  preshared key: (hidden)',
        '  endpoint: 203.0.113.7:51820',
        '  allowed ips: 10.62.0.2/32, 10.61.2.0/24',
        '  latest handshake: 1 minute, 3 seconds ago',
        '  transfer: 1.23 MiB received, 4.56 MiB sent',
        '  persistent keepalive: every 25 seconds',
        '',
      ].join('\n'),
    );
  });

  it('uses ANSI colour when asked: green interface, yellow peer, bold labels', () => {
    const text = renderInterface('tv0', state, { colour: true, nowMs: NOW, publicKey: pub });
    expect(text).toContain('\x1b[32m\x1b[1minterface\x1b[0m: \x1b[32mtv0\x1b[0m');
    expect(text).toContain('\x1b[33m\x1b[1mpeer\x1b[0m');
    expect(text).toContain('\x1b[1mlistening port\x1b[0m: 51820');
  });

  it('prints (none) for a peer without allowed IPs and skips empty fields', () => {
    const bare: UapiInterfaceState = {
      listenPort: 0,
      fwmark: 0,
      peers: [{ publicKey: peerKey, persistentKeepalive: 0, lastHandshakeWallMs: 0, rxBytes: 0, txBytes: 0, allowedIPs: [] }],
    };
    expect(renderInterface('tv1', bare, { colour: false, nowMs: NOW })).toBe(`interface: tv1\n\npeer: ${b64(peerKey)}\n  allowed ips: (none)\n`);
  });

  it('JSON carries public keys in base64 and never a private or preshared key', () => {
    const json = toShowJson(state, pub, NOW);
    expect(json).toEqual({
      publicKey: b64(pub),
      listenPort: 51820,
      fwmark: 0,
      peers: [
        {
          publicKey: b64(peerKey),
          hasPresharedKey: true,
          endpoint: '203.0.113.7:51820',
          allowedIPs: ['10.62.0.2/32', '10.61.2.0/24'],
          latestHandshake: new Date(NOW - 63_000).toISOString(),
          latestHandshakeAgeSeconds: 63,
          rxBytes: 1_289_748,
          txBytes: 4_781_506,
          persistentKeepalive: 25,
        },
      ],
    });
    const text = JSON.stringify(json);
    expect(text).not.toContain(b64(new Uint8Array(32).fill(9)));
    expect(text).not.toContain(b64(new Uint8Array(32).fill(5)));
  });
});

describe('tunvpn show against a control socket', () => {
  let dir: string;
  let server: UapiServer;
  let priv: Uint8Array;
  let pub: Uint8Array;
  const psk = new Uint8Array(32).fill(5);
  const peerKey = new Uint8Array(32).fill(2);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tvshow-'));
    const crypto = await loadCrypto('auto');
    priv = crypto.generatePrivateKey();
    pub = crypto.publicKey(priv);
    const device = new MemoryDevice({
      privateKey: priv,
      listenPort: 51820,
      fwmark: 0,
      peers: [{ publicKey: peerKey, presharedKey: psk, persistentKeepalive: 0, lastHandshakeWallMs: 0, rxBytes: 10, txBytes: 20, allowedIPs: ['10.0.0.0/8'] }],
    });
    server = await UapiServer.listen('tvs0', device, { dir });
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('shows one interface, with the public key derived from the private key', async () => {
    const r = await show(['tvs0', '--socket-dir', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('interface: tvs0\n');
    expect(r.stdout).toContain(`public key: ${b64(pub)}\n`);
    expect(r.stdout).toContain('transfer: 10 B received, 20 B sent\n');
    expect(r.stdout).not.toContain('\x1b[');
  });

  it('colours on a terminal unless NO_COLOR is set', async () => {
    expect((await show(['tvs0', '--socket-dir', dir], true)).stdout).toContain('\x1b[32m');
    expect((await show(['tvs0', '--socket-dir', dir], true, { NO_COLOR: '1' })).stdout).not.toContain('\x1b[');
  });

  it('shows every interface without IFACE, and JSON without secrets', async () => {
    const all = await show(['--socket-dir', dir]);
    expect(all.stdout).toContain('interface: tvs0');
    const r = await show(['--json', '--socket-dir', dir]);
    expect(r.code).toBe(0);
    const obj = JSON.parse(r.stdout) as Record<string, { publicKey: string; peers: { publicKey: string; hasPresharedKey: boolean }[] }>;
    expect(Object.keys(obj)).toEqual(['tvs0']);
    expect(obj.tvs0.publicKey).toBe(b64(pub));
    expect(obj.tvs0.peers[0]).toMatchObject({ publicKey: b64(peerKey), hasPresharedKey: true });
    expect(r.stdout).not.toContain(b64(priv));
    expect(r.stdout).not.toContain(b64(psk));
    expect(r.stdout).not.toContain(Buffer.from(priv).toString('hex'));
  });

  it('fails clearly, exit 1, for an interface that is not running', async () => {
    const r = await show(['nope0', '--socket-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/tunvpn show: interface nope0: no control socket .*is the daemon running\?/);
    expect(r.stdout).toBe('');
  });

  it('prints help and rejects extra arguments', async () => {
    expect((await show(['--help'])).stdout).toContain('Usage: tunvpn show');
    await expect(show(['a', 'b'])).rejects.toThrow(/unexpected argument 'b'/);
  });
});
