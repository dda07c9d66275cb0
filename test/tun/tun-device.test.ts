import { execFile, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addonPath } from '../../src/tun/native-binding.js';
import * as ip from '../../src/tun/iproute.js';
import { TunDevice } from '../../src/tun/tun-device.js';
import { TunError } from '../../src/tun/tun-error.js';
import { describeIntegration, Netns, run, sleep, uniqueSuffix } from '../helpers/netns.js';
import { buildUdp4, ipv4HeaderOk, parseUdp4 } from './ip-packet.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/tun-child.mjs', import.meta.url));

function tunName(tag: string): string {
  return `t${tag}${uniqueSuffix()}`.slice(0, 15);
}

/**
 * Opens a device in the host namespace and moves it into `ns` (the fd stays
 * attached), so the test process itself can drive it.
 */
async function openIn(ns: Netns, addr: string, opts: Parameters<typeof TunDevice.open>[0] = {}): Promise<TunDevice> {
  const dev = TunDevice.open({ name: tunName('d'), ...opts });
  try {
    await run('ip', ['link', 'set', 'dev', dev.name, 'netns', ns.name]);
    await dev.addAddress(addr, { netns: ns.name });
    await dev.up({ netns: ns.name });
  } catch (err) {
    dev.close();
    throw err;
  }
  return dev;
}

/** Starts a UDP listener in `ns` that prints each datagram as hex, one per line, and exits after `n`. */
function listenUdp(ns: Netns, addr: string, port: number, n: number): { child: ChildProcess; lines: Promise<string[]> } {
  const script = `
    const s = require('node:dgram').createSocket(${addr.includes(':') ? "'udp6'" : "'udp4'"});
    let n = 0;
    s.on('message', (m, r) => { console.log(r.address + ' ' + r.port + ' ' + m.toString('hex')); if (++n >= ${n}) s.close(); });
    s.bind(${port}, '${addr}', () => console.log('ready'));
    setTimeout(() => { console.log('timeout after ' + n); process.exitCode = 3; s.close(); }, 10000).unref();`;
  const child = ns.spawn(process.execPath, ['-e', script]);
  const lines = new Promise<string[]>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => (code === 0 ? resolve(out.trim().split('\n').slice(1)) : reject(new Error(`listener exited ${code}: ${out}`))));
  });
  return { child, lines };
}

async function waitReady(child: ChildProcess): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('ready')) {
        child.stdout?.off('data', onData);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`listener exited early: ${code}`)));
  });
}

describe('TunDevice options', () => {
  it('rejects an out-of-range batchSize and mtu before touching the kernel', () => {
    expect(() => TunDevice.open({ batchSize: 0 })).toThrow(TunError);
    expect(() => TunDevice.open({ batchSize: 5000 })).toThrow(/batchSize/);
    expect(() => TunDevice.open({ mtu: 10 })).toThrow(/mtu/);
  });
});

describeIntegration('TunDevice in a network namespace', [], () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await Netns.create('tund');
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  it('reads packets sent to a routed address back in bounded batches with the right bytes', async () => {
    const dev = await openIn(ns, '10.201.0.1/24', { batchSize: 64 });
    try {
      expect(dev.name).toMatch(/^td/);
      // Queue 200 datagrams before reading starts, so the first wakeup finds
      // more than one batch waiting (the TUN queue holds 500).
      const send = `
        const s = require('node:dgram').createSocket('udp4');
        let i = 0;
        const next = () => { if (i === 200) return s.close(); const b = Buffer.alloc(32, i & 0xff); b.writeUInt32BE(i, 0); i++; s.send(b, 9999, '10.201.0.2', next); };
        next();`;
      await ns.exec(process.execPath, ['-e', send]);
      const batches: number[] = [];
      const seen = new Map<number, Buffer>();
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${seen.size} of 200 datagrams read`)), 10_000);
        dev.onError(reject);
        dev.onPackets((slots, lengths, count) => {
          batches.push(count);
          for (let i = 0; i < count; i++) {
            const pkt = slots[i].subarray(0, lengths[i]);
            const udp = parseUdp4(pkt);
            if (udp?.dstPort !== 9999) continue;
            expect(ipv4HeaderOk(pkt)).toBe(true);
            expect(udp.dst).toBe('10.201.0.2');
            expect(udp.src).toBe('10.201.0.1');
            seen.set(udp.payload.readUInt32BE(0), udp.payload);
          }
          if (seen.size === 200) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      expect(batches[0]).toBe(64);
      expect(Math.max(...batches)).toBeLessThanOrEqual(64);
      for (let i = 0; i < 200; i++) {
        const expected = Buffer.alloc(32, i & 0xff);
        expected.writeUInt32BE(i, 0);
        expect(seen.get(i)).toEqual(expected);
      }
      expect(dev.stats.readPackets).toBeGreaterThanOrEqual(200);
    } finally {
      dev.close();
    }
  });

  it('writes a hand-built IPv4/UDP packet that the kernel delivers to a local socket, and a batch of them', async () => {
    const dev = await openIn(ns, '10.202.0.1/24');
    try {
      const { child, lines } = listenUdp(ns, '10.202.0.1', 7777, 6);
      await waitReady(child);
      dev.write(buildUdp4('10.202.0.2', 4000, '10.202.0.1', 7777, Buffer.from('single')));
      const batch = [1, 2, 3, 4, 5].map((i) => buildUdp4('10.202.0.2', 4000 + i, '10.202.0.1', 7777, Buffer.from(`batch-${i}`)));
      // count smaller than the array: only the first 5 of 6 are written.
      const written = dev.writeBatch([...batch, buildUdp4('10.202.0.2', 4999, '10.202.0.1', 7777, Buffer.from('extra'))], 5);
      expect(written).toBe(5);
      const got = await lines;
      expect(got[0]).toBe(`10.202.0.2 4000 ${Buffer.from('single').toString('hex')}`);
      expect(got.slice(1).sort()).toEqual([1, 2, 3, 4, 5].map((i) => `10.202.0.2 ${4000 + i} ${Buffer.from(`batch-${i}`).toString('hex')}`));
      expect(dev.stats.writePackets).toBe(6);
      expect(dev.stats.writeDrops).toBe(0);
    } finally {
      dev.close();
    }
  });

  it('configures MTU, IPv4 and IPv6 addresses and routes through ip', async () => {
    const dev = await openIn(ns, '10.204.0.1/24', { mtu: 1420 });
    const opts = { netns: ns.name };
    try {
      const link = await ns.exec('ip', ['-o', 'link', 'show', dev.name]);
      expect(link.stdout).toMatch(/mtu 1420/);
      await dev.setMtu(1380, opts);
      expect((await ns.exec('ip', ['-o', 'link', 'show', dev.name])).stdout).toMatch(/mtu 1380/);
      await dev.addAddress('fd42:204::1/64', opts);
      const addrs = (await ns.exec('ip', ['-o', 'addr', 'show', 'dev', dev.name])).stdout;
      expect(addrs).toMatch(/inet 10\.204\.0\.1\/24/);
      expect(addrs).toMatch(/inet6 fd42:204::1\/64/);
      expect(addrs).not.toMatch(/tentative/);
      await dev.addRoute('10.99.0.0/16', opts);
      await dev.addRoute('fd42:99::/48', opts);
      await dev.addRoute('192.0.2.7/32', opts);
      const routes = await ip.listRoutes(dev.name, opts);
      expect(routes).toEqual(expect.arrayContaining(['10.204.0.0/24', '10.99.0.0/16', '192.0.2.7/32', 'fd42:204::/64', 'fd42:99::/48']));
      await dev.delRoute('10.99.0.0/16', opts);
      await dev.delRoute('fd42:99::/48', opts);
      await dev.delAddress('fd42:204::1/64', opts);
      const after = await ip.listRoutes(dev.name, opts);
      expect(after).not.toContain('10.99.0.0/16');
      expect(after).not.toContain('fd42:99::/48');
      expect(after).not.toContain('fd42:204::/64');
      await dev.down(opts);
      expect((await ns.exec('ip', ['-o', 'link', 'show', dev.name])).stdout).not.toMatch(/[<,]UP[,>]/);
    } finally {
      dev.close();
    }
  });

  it('reports ip failures as IpCommandError with the command and stderr', async () => {
    const err = await ip.addRoute('nosuchdev0', '10.9.0.0/16', { netns: ns.name }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ip.IpCommandError);
    const e = err as ip.IpCommandError;
    expect(e.code).toBe('IP_COMMAND_FAILED');
    expect(e.command).toEqual(['ip', '-n', ns.name, '-4', 'route', 'add', '10.9.0.0/16', 'dev', 'nosuchdev0']);
    expect(e.stderr).toMatch(/Cannot find device|does not exist/);
    expect(e.message).toContain(e.stderr.trim());
  });

  it('raises errno-named TunErrors: EINVAL for a bad name, EBUSY for a name in use, EPERM without CAP_NET_ADMIN', async () => {
    const bad = (() => {
      try {
        TunDevice.open({ name: 'bad/name' });
      } catch (e) {
        return e;
      }
    })();
    expect(bad).toBeInstanceOf(TunError);
    expect((bad as TunError).code).toBe('EINVAL');
    expect((bad as TunError).message).toMatch(/TUNSETIFF/);

    expect(() => TunDevice.open({ name: 'x'.repeat(16) })).toThrow(expect.objectContaining({ code: 'EINVAL' }));

    const name = tunName('b');
    const dev = TunDevice.open({ name });
    try {
      expect(dev.name).toBe(name);
      let busy: unknown;
      try {
        TunDevice.open({ name }).close();
      } catch (e) {
        busy = e;
      }
      expect(busy).toBeInstanceOf(TunError);
      expect((busy as TunError).code).toBe('EBUSY');
      expect((busy as TunError).errno).toBe(16);
    } finally {
      dev.close();
    }

    // An unprivileged process may open /dev/net/tun (where it is mode 0666,
    // the usual case) but not create a device: EPERM from TUNSETIFF. Some
    // machines make the node 0600; then the open itself fails, EACCES.
    const worldOpenable = (statSync('/dev/net/tun').mode & 0o006) === 0o006;
    const script = `
      const n = require(${JSON.stringify(addonPath())});
      try { n.open('', false); console.log('opened'); } catch (e) { console.log(e.code); }`;
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['-e', script], { uid: 65534, gid: 65534, timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))),
    );
    expect(out).toBe(worldOpenable ? 'EPERM' : 'EACCES');
  });

  it('opens several queues of one interface with multiQueue', () => {
    const name = tunName('m');
    const a = TunDevice.open({ name, multiQueue: true });
    try {
      const b = TunDevice.open({ name, multiQueue: true });
      expect(b.name).toBe(name);
      b.close();
      // Mixing a single-queue open into a multi-queue device is refused.
      expect(() => TunDevice.open({ name })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    } finally {
      a.close();
    }
  });

  it('reports the interface being deleted under a reader once, as EBADFD, and stops', async () => {
    const dev = await openIn(ns, '10.205.0.1/24');
    try {
      const errors: TunError[] = [];
      dev.onPackets(() => undefined);
      const got = new Promise<void>((resolve) =>
        dev.onError((e) => {
          errors.push(e as TunError);
          resolve();
        }),
      );
      await ns.exec('ip', ['link', 'del', 'dev', dev.name]);
      await got;
      await sleep(200);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(TunError);
      expect(['EBADFD', 'EIO']).toContain(errors[0].code);
      expect(errors[0].message).toContain(dev.name);
    } finally {
      dev.close();
    }
  });

  it('closes idempotently and refuses writes afterwards', async () => {
    const dev = await openIn(ns, '10.206.0.1/24');
    dev.onPackets(() => undefined);
    dev.close();
    dev.close();
    expect(dev.isClosed).toBe(true);
    expect(() => dev.write(new Uint8Array(20))).toThrow(expect.objectContaining({ code: 'EBADF' }));
    // The kernel removes a non-persistent device when its last fd closes.
    await sleep(50);
    expect((await ns.exec('ip', ['-o', 'link'])).stdout).not.toContain(dev.name);
  });

  for (const mode of ['close', 'unref', 'idle'] as const) {
    it(`lets a process that created the device in the namespace exit by itself (${mode})`, async () => {
      const child = ns.spawn(process.execPath, [FIXTURE, addonPath(), mode]);
      let out = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => resolve(-1), 10_000);
        child.once('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      expect(out).toMatch(/^open tun\d+$/m);
      expect(code, out).toBe(0);
      expect(out).toMatch(/^exit$/m);
      if (mode !== 'idle') expect(out).toMatch(/^packet 37$/m);
      if (mode === 'close') expect(out).toMatch(/^closed$/m);
    });
  }
});
