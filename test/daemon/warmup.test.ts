/**
 * The start-up warm-ups on a real daemon (real TUN, real sockets, in a
 * namespace of its own with IPv6 off, so the kernel sends nothing on the
 * TUN): by default both run, TUNVPN_WARMUP=protocol skips the pipeline's,
 * =off both; whatever ran leaves the real pipeline's counters and drops at
 * zero and the daemon with the same sockets as one that warmed nothing.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, Netns, sleep } from '../helpers/netns.js';
import { ConfigDir, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair } from '../helpers/daemon.js';

interface Status {
  drops: Record<string, number>;
  packets: Record<string, number>;
  peers: { rxBytes: number; txBytes: number }[];
}

async function status(d: DaemonProcess): Promise<Status> {
  const from = d.records().length;
  d.signal('SIGUSR1');
  const rec = await d.waitForLog(/^status$/, 5_000, from);
  return rec.status as Status;
}

function socketCount(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

describeIntegration('daemon start-up warm-up', [], () => {
  let ns: Netns;
  let dir: ConfigDir;
  let cfg: string;

  beforeAll(async () => {
    ns = await Netns.create('wu');
    await ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    dir = await ConfigDir.create();
    const me = makeKeyPair();
    const peer = makeKeyPair();
    // A peer without an endpoint: the daemon starts no handshake, so every packet counter must stay at zero.
    cfg = await dir.writeHost('w', {
      interfaceName: 'wu0',
      privateKey: me.privateKey,
      listenPort: 51820,
      addresses: ['10.77.0.1/24'],
      peers: [{ name: 'p', publicKey: peer.publicKey, allowedIPs: ['10.77.0.2/32'] }],
    });
  }, 30_000);

  afterAll(async () => {
    await ns?.destroy();
    await dir?.destroy();
  });

  async function run(mode: string | undefined): Promise<{ logs: string[]; st: Status; sockets: number }> {
    const before = process.env.TUNVPN_WARMUP;
    if (mode === undefined) delete process.env.TUNVPN_WARMUP;
    else process.env.TUNVPN_WARMUP = mode;
    let d: DaemonProcess | undefined;
    try {
      d = await startDaemon(ns, cfg);
    } finally {
      if (before === undefined) delete process.env.TUNVPN_WARMUP;
      else process.env.TUNVPN_WARMUP = before;
    }
    try {
      await sleep(600); // a few ticks of the real pipeline
      const st = await status(d);
      const pid = d.child.pid ?? -1;
      return { logs: d.records().map((r) => String(r.msg)), st, sockets: socketCount(pid) };
    } finally {
      await d.stop();
    }
  }

  it('default: both warm-ups, and the real pipeline has moved nothing', async () => {
    const on = await run(undefined);
    expect(on.logs).toContain('packet path warmed up');
    expect(on.logs).toContain('pipeline warmed up');
    // The warm-up's thousands of packets went through other pipelines: not one is counted here.
    expect(on.st.packets).toEqual({ tunRx: 0, tunTx: 0, udpRx: 0, udpTx: 0, keepalivesRx: 0 });
    expect(Object.values(on.st.drops).reduce((a, b) => a + b, 0)).toBe(0);
    expect(on.st.peers.map((p) => [p.rxBytes, p.txBytes])).toEqual([[0, 0]]);

    const off = await run('off');
    expect(off.logs.filter((m) => m.endsWith('warmed up'))).toEqual([]);
    expect(off.st.packets).toEqual(on.st.packets);
    // No socket left open by the warm-up: the same as a daemon that warmed nothing.
    expect(on.sockets).toBeGreaterThan(0);
    expect(on.sockets).toBe(off.sockets);
  }, 60_000);

  it('TUNVPN_WARMUP=protocol: the protocol warm-up only', async () => {
    const p = await run('protocol');
    expect(p.logs).toContain('packet path warmed up');
    expect(p.logs).not.toContain('pipeline warmed up');
    expect(p.st.packets).toEqual({ tunRx: 0, tunTx: 0, udpRx: 0, udpTx: 0, keepalivesRx: 0 });
  }, 60_000);
});
