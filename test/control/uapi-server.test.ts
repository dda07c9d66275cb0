import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { uapiGet, uapiRequest, listInterfaces } from '../../src/control/uapi-client.js';
import { keyToHex } from '../../src/control/uapi-protocol.js';
import { UapiServer, UapiSocketInUseError } from '../../src/control/uapi-server.js';
import { UapiError } from '../../src/control/uapi-types.js';
import { MemoryDevice } from './memory-device.js';

let dir: string;
const servers: UapiServer[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tvuapi-'));
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});

async function start(device = new MemoryDevice(), opts: Parameters<typeof UapiServer.listen>[2] = {}): Promise<{ server: UapiServer; device: MemoryDevice }> {
  const server = await UapiServer.listen('tv0', device, { dir: join(dir, 'run'), ...opts });
  servers.push(server);
  return { server, device };
}

/** Connects, sends `data`, and collects everything until the server closes or `until` matches. */
function exchange(
  path: string,
  data: string | Buffer,
  until?: (text: string) => boolean,
  keepOpen = false,
): Promise<{ text: string; closed: boolean; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let text = '';
    const timer = setTimeout(() => reject(new Error(`timeout; got ${JSON.stringify(text)}`)), 5000);
    sock.on('connect', () => sock.write(data));
    sock.on('data', (c: Buffer) => {
      text += c.toString();
      if (until?.(text)) {
        clearTimeout(timer);
        if (!keepOpen) sock.destroy();
        resolve({ text, closed: false, socket: sock });
      }
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true, socket: sock });
    });
  });
}

const replies = (n: number) => (t: string) => t.split('\n\n').length - 1 >= n;

describe('UapiServer socket file', () => {
  it('creates the directory 0755 and a 0600 socket, and removes the socket on close', async () => {
    const { server } = await start();
    expect(server.path).toBe(join(dir, 'run', 'tv0.sock'));
    expect(statSync(join(dir, 'run')).mode & 0o777).toBe(0o755);
    const st = statSync(server.path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    // No temporary file or directory left behind.
    expect(readdirSync(join(dir, 'run'))).toEqual(['tv0.sock']);
    await server.close();
    expect(existsSync(server.path)).toBe(false);
    await server.close();
  });

  it('replaces a stale socket nobody answers on', async () => {
    const run = join(dir, 'run');
    // Create a socket file whose listener is gone.
    const stale = createServer();
    await new Promise<void>((r) => stale.listen(join(dir, 'stale.sock'), () => r()));
    const { mkdirSync, linkSync } = await import('node:fs');
    mkdirSync(run);
    linkSync(join(dir, 'stale.sock'), join(run, 'tv0.sock'));
    await new Promise<void>((r) => stale.close(() => r()));
    expect(statSync(join(run, 'tv0.sock')).isSocket()).toBe(true);
    const { server } = await start();
    const state = await uapiGet('tv0', run);
    expect(state.peers).toEqual([]);
    expect(server.path).toBe(join(run, 'tv0.sock'));
  });

  it('refuses to take over the socket of a live server', async () => {
    const { server } = await start(new MemoryDevice({ listenPort: 1111, fwmark: 0, peers: [] }));
    await expect(UapiServer.listen('tv0', new MemoryDevice(), { dir: join(dir, 'run') })).rejects.toBeInstanceOf(UapiSocketInUseError);
    // The first server is untouched.
    expect((await uapiGet('tv0', join(dir, 'run'))).listenPort).toBe(1111);
    expect(existsSync(server.path)).toBe(true);
  });

  it('refuses to replace something that is not a socket', async () => {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'run'));
    writeFileSync(join(dir, 'run', 'tv0.sock'), 'x');
    await expect(start()).rejects.toThrow(/not a socket/);
  });

  it('rejects interface names that are not file names', async () => {
    await expect(UapiServer.listen('../x', new MemoryDevice(), { dir })).rejects.toThrow(/invalid interface name/);
    await expect(UapiServer.listen('a'.repeat(16), new MemoryDevice(), { dir })).rejects.toThrow(/invalid interface name/);
  });

  it('reports the deletion of its socket file once, if asked to', async () => {
    let removed = 0;
    const { server } = await start(undefined, { onSocketRemoved: () => removed++ });
    const { unlinkSync } = await import('node:fs');
    unlinkSync(server.path);
    for (let i = 0; i < 100 && removed === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(removed).toBe(1);
  });

  it('lists interfaces by their sockets', async () => {
    await start();
    writeFileSync(join(dir, 'run', 'notasocket.sock'), '');
    expect(listInterfaces(join(dir, 'run'))).toEqual(['tv0']);
    expect(listInterfaces(join(dir, 'absent'))).toEqual([]);
  });
});

describe('UapiServer protocol', () => {
  it('answers get and set, several requests on one connection, in order', async () => {
    const { server, device } = await start();
    const pk = keyToHex(new Uint8Array(32).fill(9));
    const req = `get=1\n\nset=1\nlisten_port=4242\npublic_key=${pk}\nallowed_ip=10.0.0.1/32\n\nget=1\n\n`;
    const { text } = await exchange(server.path, req, replies(3));
    const parts = text.split('\n\n');
    expect(parts[0]).toBe('errno=0');
    expect(parts[1]).toBe('errno=0');
    expect(parts[2]).toContain('listen_port=4242');
    expect(parts[2]).toContain(`public_key=${pk}`);
    expect(parts[2]).toContain('allowed_ip=10.0.0.1/32');
    expect(device.state.listenPort).toBe(4242);
  });

  it('accepts requests split across many tiny writes', async () => {
    const { server } = await start(new MemoryDevice({ listenPort: 7, fwmark: 0, peers: [] }));
    const result = await new Promise<string>((resolve) => {
      const sock = connect(server.path);
      let text = '';
      sock.on('connect', async () => {
        for (const ch of 'get=1\n\n') {
          sock.write(ch);
          await new Promise((r) => setTimeout(r, 2));
        }
      });
      sock.on('data', (c: Buffer) => {
        text += c.toString();
        if (text.endsWith('\n\n')) {
          sock.destroy();
          resolve(text);
        }
      });
    });
    expect(result).toBe('listen_port=7\nerrno=0\n\n');
  });

  it('answers an invalid set with errno -22, applies nothing, and keeps the connection usable', async () => {
    const { server, device } = await start();
    const { text } = await exchange(server.path, 'set=1\nlisten_port=1\nfoo=bar\n\nget=1\n\n', replies(2));
    expect(text).toBe('errno=-22\n\nerrno=0\n\n');
    expect(device.applied).toHaveLength(0);
    expect(device.state.listenPort).toBe(0);
  });

  it('passes the errno of a UapiError from apply, and -55 for any other error', async () => {
    const { server, device } = await start();
    device.failWith = new UapiError(-98, 'port in use');
    expect((await exchange(server.path, 'set=1\nlisten_port=1\n\n', replies(1))).text).toBe('errno=-98\n\n');
    device.failWith = new Error('boom');
    expect((await exchange(server.path, 'set=1\nlisten_port=1\n\n', replies(1))).text).toBe('errno=-55\n\n');
  });

  it("drops one \\r before each \\n of a set body, as Go's line scanner does (CRLF requests work; \\r\\n ends one)", async () => {
    const { server, device } = await start();
    const r = await exchange(server.path, 'set=1\r\n', undefined);
    expect(r.text).toBe('errno=-71\n\n');
    const ok = await exchange(server.path, 'set=1\nlisten_port=5\r\nfwmark=0\r\n\r\nget=1\n\n', replies(2));
    expect(ok.text).toBe('errno=0\n\nlisten_port=5\nerrno=0\n\n');
    expect(device.state.listenPort).toBe(5);
    // Only one: a second \r is part of the value.
    expect((await exchange(server.path, 'set=1\nlisten_port=6\r\r\n\n', replies(1))).text).toBe('errno=-22\n\n');
  });

  it('answers garbage with errno -71 and hangs up, then keeps serving', async () => {
    const { server } = await start();
    const r = await exchange(server.path, 'hello there\n');
    expect(r.text).toBe('errno=-71\n\n');
    expect(r.closed).toBe(true);
    const bin = await exchange(server.path, Buffer.from([0, 1, 2, 255, 10]));
    expect(bin.text).toBe('errno=-71\n\n');
    expect((await exchange(server.path, 'get=1\n\n', replies(1))).text).toBe('errno=0\n\n');
  });

  it('answers get=1 followed by anything but a blank line with errno -22', async () => {
    const { server } = await start();
    const r = await exchange(server.path, 'get=1\nlisten_port=3\n');
    expect(r.text).toBe('errno=-22\n\n');
    expect(r.closed).toBe(true);
  });

  it('cuts off a 1 MB line after the limit with errno -90, without buffering it', async () => {
    const { server } = await start();
    const r = await exchange(server.path, `set=1\nlisten_port=${'1'.repeat(1 << 20)}`);
    expect(r.text).toBe('errno=-90\n\n');
    expect(r.closed).toBe(true);
    expect((await exchange(server.path, 'get=1\n\n', replies(1))).text).toBe('errno=0\n\n');
  });

  it('limits the number of lines in a set request', async () => {
    const { server, device } = await start(undefined, { maxRequestLines: 10 });
    const r = await exchange(server.path, `set=1\n${'listen_port=1\n'.repeat(11)}\n`);
    expect(r.text).toBe('errno=-90\n\n');
    expect(device.applied).toHaveLength(0);
    const { server: s2 } = await (async () => {
      await server.close();
      return start(undefined, { maxRequestBytes: 100 });
    })();
    const big = await exchange(s2.path, `set=1\n${'listen_port=1\n'.repeat(10)}\n`);
    expect(big.text).toBe('errno=-90\n\n');
  });

  it('survives clients that disconnect mid-request and applies nothing for them', async () => {
    const { server, device } = await start();
    for (const partial of ['set=1\nlisten_port=9', 'set=1\nlisten_port=9\n', 'get=1\n', 'ge']) {
      await new Promise<void>((resolve) => {
        const sock = connect(server.path, () => {
          sock.write(partial, () => {
            sock.destroy();
            resolve();
          });
        });
      });
    }
    expect((await exchange(server.path, 'get=1\n\n', replies(1))).text).toBe('errno=0\n\n');
    expect(device.applied).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(server.connectionCount).toBe(0);
  });

  it('serves 200 clients at once', async () => {
    const { server } = await start(new MemoryDevice({ listenPort: 5, fwmark: 0, peers: [] }));
    const results = await Promise.all(Array.from({ length: 200 }, () => exchange(server.path, 'get=1\n\n', replies(1))));
    for (const r of results) expect(r.text).toBe('listen_port=5\nerrno=0\n\n');
  });

  it('makes room in a full table by closing the least recently active idle connection (EBUSY to it), and serves the newcomer', async () => {
    const { server } = await start(new MemoryDevice({ listenPort: 3, fwmark: 0, peers: [] }), { maxConnections: 3 });
    const held: { text: string; closed: boolean; socket: Socket }[] = [];
    for (let i = 0; i < 3; i++) {
      held.push(await exchange(server.path, 'get=1\n\n', replies(1), true));
      await new Promise((r) => setTimeout(r, 10));
    }
    // The first becomes the most recently active again: the second is now the oldest.
    const again = new Promise<string>((resolve) => {
      let t = '';
      held[0].socket.on('data', (c: Buffer) => {
        t += c.toString();
        if (t.endsWith('\n\n')) resolve(t);
      });
    });
    held[0].socket.write('get=1\n\n');
    expect(await again).toBe('listen_port=3\nerrno=0\n\n');
    const closedSecond = new Promise<string>((resolve) => {
      let t = '';
      held[1].socket.on('data', (c: Buffer) => (t += c.toString()));
      held[1].socket.on('close', () => resolve(t));
    });
    expect((await exchange(server.path, 'get=1\n\n', replies(1))).text).toBe('listen_port=3\nerrno=0\n\n');
    expect(await closedSecond).toBe('errno=-16\n\n');
    expect(held[0].socket.destroyed).toBe(false);
    expect(held[2].socket.destroyed).toBe(false);
    for (const h of held) h.socket.destroy();
  });

  it('never sheds a connection whose request is being applied; refuses the newcomer only when every slot has one', async () => {
    const device = new MemoryDevice();
    device.delayMs = 300;
    const { server } = await start(device, { maxConnections: 2 });
    const busy = [exchange(server.path, 'set=1\nlisten_port=1\n\n', replies(1)), exchange(server.path, 'set=1\nlisten_port=2\n\n', replies(1))];
    await new Promise((r) => setTimeout(r, 100));
    const refused = await exchange(server.path, 'get=1\n\n');
    expect(refused.text).toBe('errno=-16\n\n');
    for (const r of await Promise.all(busy)) expect(r.text).toBe('errno=0\n\n');
    expect(device.state.listenPort).toBe(2);
  });

  it('lets a client through against 300 idle and trickling connections (issue 17 item 8)', async () => {
    const { server } = await start(new MemoryDevice({ listenPort: 9, fwmark: 0, peers: [] }));
    const hogs: Socket[] = [];
    const open = (first: string) =>
      new Promise<Socket>((resolve) => {
        const sock = connect(server.path, () => {
          if (first) sock.write(first);
          resolve(sock);
        });
        sock.on('error', () => undefined);
        hogs.push(sock);
      });
    // Half of them idle after connecting, half keep a request open one byte at a time.
    for (let i = 0; i < 300; i++) await open(i % 2 === 0 ? '' : 'set=1\nlisten_port=');
    const trickle = setInterval(() => {
      for (const [i, h] of hogs.entries()) if (i % 2 === 1 && !h.destroyed) h.write('1');
    }, 50);
    try {
      for (let round = 0; round < 10; round++) {
        // New hogs keep arriving between the operator's requests.
        for (let i = 0; i < 20; i++) await open(i % 2 === 0 ? '' : 'get=');
        expect((await exchange(server.path, 'get=1\n\n', replies(1))).text).toBe('listen_port=9\nerrno=0\n\n');
      }
      expect(server.connectionCount).toBeLessThanOrEqual(256);
    } finally {
      clearInterval(trickle);
      for (const h of hogs) h.destroy();
    }
  });

  it('answers a request still arriving when its deadline passes with errno -110 and closes, though bytes keep coming', async () => {
    const { server, device } = await start(undefined, { requestTimeoutMs: 400, idleTimeoutMs: 300 });
    const started = Date.now();
    const result = await new Promise<{ text: string; ms: number }>((resolve) => {
      const sock = connect(server.path);
      let text = '';
      const body = 'set=1\nlisten_port=1' + '1'.repeat(100);
      let i = 0;
      const timer = setInterval(() => {
        if (i < body.length && !sock.destroyed) sock.write(body[i++]);
      }, 40);
      sock.on('data', (c: Buffer) => (text += c.toString()));
      sock.on('error', () => undefined);
      sock.on('close', () => {
        clearInterval(timer);
        resolve({ text, ms: Date.now() - started });
      });
    });
    expect(result.text).toBe('errno=-110\n\n');
    // The idle timeout alone (300 ms) never fires: a byte comes every 40 ms.
    expect(result.ms).toBeGreaterThanOrEqual(380);
    expect(result.ms).toBeLessThan(3000);
    expect(device.applied).toHaveLength(0);
  });

  it('answers a set whose apply outlasts the idle timeout and the request deadline (issue 13 item 2)', async () => {
    const device = new MemoryDevice();
    device.delayMs = 700;
    const { server } = await start(device, { idleTimeoutMs: 150, requestTimeoutMs: 200 });
    const r = await exchange(server.path, 'set=1\nlisten_port=7\n\nget=1\n\n', replies(2));
    expect(r.text).toBe('errno=0\n\nlisten_port=7\nerrno=0\n\n');
  });

  it('answers a client that shuts down its side right after its request', async () => {
    const device = new MemoryDevice();
    device.delayMs = 100;
    const { server } = await start(device);
    const text = await new Promise<string>((resolve) => {
      const sock = connect(server.path, () => sock.end('set=1\nlisten_port=8\n\n'));
      let t = '';
      sock.on('data', (c: Buffer) => (t += c.toString()));
      sock.on('close', () => resolve(t));
    });
    expect(text).toBe('errno=0\n\n');
    expect(device.state.listenPort).toBe(8);
    // A request cut short by the shutdown is not applied.
    const cut = await new Promise<string>((resolve) => {
      const sock = connect(server.path, () => sock.end('set=1\nlisten_port=9\n'));
      let t = '';
      sock.on('data', (c: Buffer) => (t += c.toString()));
      sock.on('close', () => resolve(t));
    });
    expect(cut).toBe('');
    expect(device.state.listenPort).toBe(8);
  });

  it('zeroes the key buffers of a set request once it is answered; the device keeps its own copies', async () => {
    const { server, device } = await start();
    const psk = keyToHex(new Uint8Array(32).fill(5));
    const priv = '48'.repeat(32);
    expect(
      (await exchange(server.path, `set=1\nprivate_key=${priv}\npublic_key=${keyToHex(new Uint8Array(32).fill(4))}\npreshared_key=${psk}\n\n`, replies(1)))
        .text,
    ).toBe('errno=0\n\n');
    const req = device.applied[0];
    const [p, k] = [req.device[0], req.peers[0].ops[0]];
    expect(p.kind === 'private-key' && p.key !== null && p.key.every((b) => b === 0)).toBe(true);
    expect(k.kind === 'preshared-key' && k.key !== null && k.key.every((b) => b === 0)).toBe(true);
    expect(keyToHex(device.state.privateKey ?? new Uint8Array())).toBe(priv);
    expect(device.state.peers[0].presharedKey).toEqual(new Uint8Array(32).fill(5));
    // Refused ones too.
    device.failWith = new UapiError(-22, 'no');
    await exchange(server.path, `set=1\nprivate_key=${priv}\n\n`, replies(1));
    const refused = device.applied[1].device[0];
    expect(refused.kind === 'private-key' && refused.key !== null && refused.key.every((b) => b === 0)).toBe(true);
  });

  it('parses a huge set request as it arrives, without blocking the event loop for long', async () => {
    const requests: unknown[] = [];
    const device = { snapshot: () => ({ listenPort: 0, fwmark: 0, peers: [] }), apply: async (r: unknown) => void requests.push(r) };
    const server = await UapiServer.listen('tv0', device, { dir: join(dir, 'run') });
    servers.push(server);
    const lines: string[] = [];
    for (let i = 0; i < 200_000; i++) {
      lines.push(i % 4 === 0 ? `public_key=${i.toString(16).padStart(64, '0')}` : `allowed_ip=10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);
    }
    let maxGap = 0;
    let last = performance.now();
    const tick = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 1);
    try {
      const r = await exchange(server.path, `set=1\n${lines.join('\n')}\n\n`, replies(1));
      expect(r.text).toBe('errno=0\n\n');
    } finally {
      clearInterval(tick);
    }
    expect((requests[0] as { peers: unknown[] }).peers).toHaveLength(50_000);
    // Parsing all 200k lines at once takes ~0.5 s here; spread over the reads, no stall comes near that.
    expect(maxGap).toBeLessThan(250);
  });

  it('sends a get reply larger than the output backlog limit in full', async () => {
    const peers = Array.from({ length: 50_000 }, (_, i) => ({
      publicKey: new Uint8Array(32).fill(i & 255),
      persistentKeepalive: 0,
      lastHandshakeWallMs: 0,
      rxBytes: i,
      txBytes: 0,
      allowedIPs: [`10.${(i >> 8) & 255}.${i & 255}.0/24`],
    }));
    await start(new MemoryDevice({ listenPort: 1, fwmark: 0, peers }));
    const state = await uapiGet('tv0', join(dir, 'run'));
    expect(state.peers).toHaveLength(50_000);
    expect(state.peers[49_999].rxBytes).toBe(49_999);
  });

  it('closes idle connections', async () => {
    const { server } = await start(undefined, { idleTimeoutMs: 100 });
    const r = await exchange(server.path, 'set=1\nlisten_port=1\n');
    expect(r.closed).toBe(true);
    await new Promise((res) => setTimeout(res, 20));
    expect(server.connectionCount).toBe(0);
  });

  it('drops open connections on close', async () => {
    const { server } = await start();
    const pending = exchange(server.path, 'set=1\n');
    await new Promise((r) => setTimeout(r, 30));
    await server.close();
    expect((await pending).closed).toBe(true);
  });

  it('the client reports a missing interface clearly', async () => {
    await expect(uapiGet('nope', dir)).rejects.toThrow(/interface nope: no control socket/);
    await expect(uapiRequest('a/b', 'get=1\n\n', dir)).rejects.toThrow(/not a valid interface name/);
  });
});
