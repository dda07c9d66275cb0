/**
 * The real `wg` tool (wireguard-tools) against our control socket, with an
 * in-memory device behind it: what wg prints must match the device state,
 * and what `wg set` asks for must land in it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { UapiServer } from '../../src/control/uapi-server.js';
import { loadCrypto, type CryptoBackend } from '../../src/crypto/index.js';
import { describeIntegration } from '../helpers/netns.js';
import { MemoryDevice } from './memory-device.js';

const run = promisify(execFile);
const b64 = (k: Uint8Array) => Buffer.from(k).toString('base64');

async function wg(...args: string[]): Promise<string> {
  const { stdout } = await run('wg', args, { env: { ...process.env, WG_HIDE_KEYS: 'always', WG_COLOR_MODE: 'never' } });
  return stdout;
}

describeIntegration('control socket driven by the real wg tool', ['wg'], () => {
  let crypto: CryptoBackend;
  let tmp: string;
  let server: UapiServer | undefined;
  let counter = 0;

  beforeAll(async () => {
    crypto = await loadCrypto('auto');
    tmp = mkdtempSync(join(tmpdir(), 'tvwg-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  /** A unique interface name per test: wg only looks in /var/run/wireguard. */
  function ifname(): string {
    counter += 1;
    return `tvu${process.pid % 100000}x${counter}`;
  }

  function fixture() {
    const priv = crypto.generatePrivateKey();
    const peerA = crypto.publicKey(crypto.generatePrivateKey());
    const peerB = crypto.publicKey(crypto.generatePrivateKey());
    const psk = new Uint8Array(32).fill(7);
    const now = Date.now();
    const device = new MemoryDevice({
      privateKey: priv,
      listenPort: 51999,
      fwmark: 0,
      peers: [
        {
          publicKey: peerA,
          presharedKey: psk,
          endpoint: { address: '192.0.2.7', port: 51820, family: 4 },
          persistentKeepalive: 25,
          lastHandshakeWallMs: now - 63_000,
          rxBytes: 1_289_748,
          txBytes: 4_781_506,
          allowedIPs: ['10.62.0.2/32', '10.61.2.0/24'],
        },
        {
          publicKey: peerB,
          persistentKeepalive: 0,
          lastHandshakeWallMs: 0,
          rxBytes: 0,
          txBytes: 0,
          allowedIPs: ['fd62::/64'],
          endpoint: { address: 'fd00::9', port: 1234, family: 6 },
        },
      ],
    });
    return { priv, pub: crypto.publicKey(priv), peerA, peerB, psk, device, now };
  }

  async function serve(device: MemoryDevice): Promise<string> {
    const name = ifname();
    server = await UapiServer.listen(name, device);
    return name;
  }

  it('wg show IFACE dump matches the state', async () => {
    const f = fixture();
    const name = await serve(f.device);
    const lines = (await wg('show', name, 'dump')).trimEnd().split('\n');
    expect(lines[0].split('\t')).toEqual([b64(f.priv), b64(f.pub), '51999', 'off']);
    const byKey = new Map(lines.slice(1).map((l) => [l.split('\t')[0], l.split('\t')]));
    expect(byKey.get(b64(f.peerA))).toEqual([
      b64(f.peerA),
      b64(f.psk),
      '192.0.2.7:51820',
      '10.62.0.2/32,10.61.2.0/24',
      String(Math.floor((f.now - 63_000) / 1000)),
      '1289748',
      '4781506',
      '25',
    ]);
    expect(byKey.get(b64(f.peerB))).toEqual([b64(f.peerB), '(none)', '[fd00::9]:1234', 'fd62::/64', '0', '0', '0', 'off']);
  });

  it('wg show IFACE prints the interface and its peers', async () => {
    const f = fixture();
    const name = await serve(f.device);
    const out = await wg('show', name);
    expect(out).toContain(`interface: ${name}\n  public key: ${b64(f.pub)}\n  private key: (hidden)\n  listening port: 51999\n`);
    expect(out).toContain(`peer: ${b64(f.peerA)}\n  preshared key: (hidden)\n  endpoint: 192.0.2.7:51820\n  allowed ips: 10.62.0.2/32, 10.61.2.0/24\n`);
    expect(out).toMatch(/latest handshake: 1 minute, [34] seconds ago\n/);
    expect(out).toContain('transfer: 1.23 MiB received, 4.56 MiB sent\n');
    expect(out).toContain('persistent keepalive: every 25 seconds\n');
    expect(out).toContain(`peer: ${b64(f.peerB)}\n  endpoint: [fd00::9]:1234\n  allowed ips: fd62::/64\n`);
    // wg show (all) finds it too.
    expect(await wg('show', 'interfaces')).toContain(name);
  });

  it('wg showconf IFACE round-trips the configuration', async () => {
    const f = fixture();
    const name = await serve(f.device);
    const out = await wg('showconf', name);
    expect(out).toContain(`[Interface]\nListenPort = 51999\nPrivateKey = ${b64(f.priv)}\n`);
    expect(out).toContain(
      `[Peer]\nPublicKey = ${b64(f.peerA)}\nPresharedKey = ${b64(f.psk)}\nAllowedIPs = 10.62.0.2/32, 10.61.2.0/24\nEndpoint = 192.0.2.7:51820\nPersistentKeepalive = 25\n`,
    );
    // And `wg setconf` of that text onto an empty device reproduces the configuration.
    const empty = new MemoryDevice();
    const other = ifname();
    const second = await UapiServer.listen(other, empty);
    try {
      const conf = join(tmp, `${other}.conf`);
      writeFileSync(conf, out);
      await wg('setconf', other, conf);
      expect(await wg('showconf', other)).toBe(out);
    } finally {
      await second.close();
    }
  });

  it("wg set IFACE peer K allowed-ips replaces that peer's allowed IPs", async () => {
    const f = fixture();
    const name = await serve(f.device);
    await wg('set', name, 'peer', b64(f.peerA), 'allowed-ips', '10.9.0.0/24,10.9.1.1/32,fd09::/48');
    const peer = f.device.state.peers.find((p) => b64(p.publicKey) === b64(f.peerA));
    expect(peer?.allowedIPs).toEqual(['10.9.0.0/24', '10.9.1.1/32', 'fd09::/48']);
    expect(peer?.presharedKey).toEqual(f.psk);
    expect(f.device.state.peers).toHaveLength(2);
  });

  it('wg set IFACE peer K remove removes the peer', async () => {
    const f = fixture();
    const name = await serve(f.device);
    await wg('set', name, 'peer', b64(f.peerA), 'remove');
    expect(f.device.state.peers.map((p) => b64(p.publicKey))).toEqual([b64(f.peerB)]);
    expect(await wg('show', name, 'peers')).toBe(`${b64(f.peerB)}\n`);
  });

  it('wg set IFACE listen-port N, private-key, and a new peer with everything', async () => {
    const f = fixture();
    const name = await serve(f.device);
    await wg('set', name, 'listen-port', '40001');
    expect(f.device.state.listenPort).toBe(40001);
    expect(await wg('show', name, 'listen-port')).toBe('40001\n');

    const newPriv = crypto.generatePrivateKey();
    const keyFile = join(tmp, 'priv.key');
    writeFileSync(keyFile, `${b64(newPriv)}\n`, { mode: 0o600 });
    const pskFile = join(tmp, 'psk.key');
    writeFileSync(pskFile, `${b64(new Uint8Array(32).fill(3))}\n`, { mode: 0o600 });
    const newPeer = crypto.publicKey(crypto.generatePrivateKey());
    await wg(
      'set',
      name,
      'private-key',
      keyFile,
      'peer',
      b64(newPeer),
      'preshared-key',
      pskFile,
      'endpoint',
      '[fd00::5]:5555',
      'persistent-keepalive',
      '15',
      'allowed-ips',
      '10.5.0.0/16',
    );
    expect(b64(f.device.state.privateKey ?? new Uint8Array())).toBe(b64(newPriv));
    const added = f.device.state.peers.find((p) => b64(p.publicKey) === b64(newPeer));
    expect(added).toMatchObject({ endpoint: { address: 'fd00::5', port: 5555, family: 6 }, persistentKeepalive: 15, allowedIPs: ['10.5.0.0/16'] });
    expect(added?.presharedKey).toEqual(new Uint8Array(32).fill(3));
    expect(await wg('show', name, 'public-key')).toBe(`${b64(crypto.publicKey(newPriv))}\n`);
  });

  it('wg reports an errno from the daemon as an error message', async () => {
    const f = fixture();
    const name = await serve(f.device);
    const { UapiError } = await import('../../src/control/uapi-types.js');
    f.device.failWith = new UapiError(-98, 'in use');
    await expect(wg('set', name, 'listen-port', '1')).rejects.toMatchObject({ stderr: expect.stringMatching(/Address already in use/) });
  });

  it('wg gets through while 300 other connections sit idle or trickle a request (issue 17 item 8)', async () => {
    const f = fixture();
    const name = await serve(f.device);
    const path = `/var/run/wireguard/${name}.sock`;
    const hogs: Socket[] = [];
    for (let i = 0; i < 300; i++) {
      await new Promise<void>((resolve) => {
        const sock = connect(path, () => {
          if (i % 2 === 1) sock.write('set=1\nlisten_port=');
          resolve();
        });
        sock.on('error', () => undefined);
        hogs.push(sock);
      });
    }
    const trickle = setInterval(() => {
      for (const [i, h] of hogs.entries()) if (i % 2 === 1 && !h.destroyed) h.write('1');
    }, 100);
    try {
      for (let round = 0; round < 5; round++) {
        expect(await wg('show', name, 'listen-port')).toBe('51999\n');
        await wg('set', name, 'peer', b64(f.peerB), 'persistent-keepalive', String(10 + round));
      }
      expect(f.device.state.peers.find((p) => b64(p.publicKey) === b64(f.peerB))?.persistentKeepalive).toBe(14);
    } finally {
      clearInterval(trickle);
      for (const h of hogs) h.destroy();
    }
  });

  it('wg set gets its answer when applying takes longer than the idle timeout (issue 13 item 2)', async () => {
    const f = fixture();
    f.device.delayMs = 1500;
    const name = ifname();
    server = await UapiServer.listen(name, f.device, { idleTimeoutMs: 200, requestTimeoutMs: 300 });
    await wg('set', name, 'listen-port', '40002');
    expect(f.device.state.listenPort).toBe(40002);
  });

  it('wg set endpoint with a scoped link-local address reaches the device with its zone, and wg show prints it back', async () => {
    const f = fixture();
    const name = await serve(f.device);
    await wg('set', name, 'peer', b64(f.peerB), 'endpoint', '[fe80::1%lo]:51820');
    expect(f.device.state.peers.find((p) => b64(p.publicKey) === b64(f.peerB))?.endpoint).toEqual({ address: 'fe80::1%lo', port: 51820, family: 6 });
    expect(await wg('show', name, 'endpoints')).toContain(`${b64(f.peerB)}\t[fe80::1%lo]:51820\n`);
  });

  it('the socket lives in /var/run/wireguard and is removed on close', async () => {
    const f = fixture();
    const name = await serve(f.device);
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(true);
    await server?.close();
    expect(existsSync(`/var/run/wireguard/${name}.sock`)).toBe(false);
  });
});
