/**
 * The bench's routed-hub case (bench/lib/hub.ts, issue 14 item 4): its
 * address plan, its target lines, and a small hub run for real (tunvpn from
 * dist/, and Debian's wireguard-go as the reference).
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { HUB_MAX_PEERS, hubLine, hubPlan, hubTargetLines, threadDelta, threadTimes, tunvpnHub, wireguardGoHub, type HubResult } from '../../bench/lib/hub.js';
import { loadCrypto } from '../../src/crypto/index.js';
import { describeIntegration } from '../helpers/netns.js';

describe('bench: routed hub plan and targets', () => {
  it('gives every peer its own tunnel /32 and LAN /24, and the changes prefixes no peer has', () => {
    const plan = hubPlan(HUB_MAX_PEERS);
    const tunnels = new Set(plan.peers.map((p) => p.allowedIPs[0]));
    const lans = new Set(plan.peers.map((p) => p.allowedIPs[1]));
    expect(tunnels.size).toBe(HUB_MAX_PEERS);
    expect(lans.size).toBe(HUB_MAX_PEERS);
    for (const t of tunnels) expect(t).toMatch(/^10\.100\.\d+\.\d+\/32$/);
    for (const l of [...lans, plan.newPrefix, plan.setPrefix]) {
      const m = /^10\.(\d+)\.(\d+)\.0\/24$/.exec(l);
      expect(m && Number(m[1]) >= 128 && Number(m[1]) <= 255 && Number(m[2]) <= 255).toBe(true);
    }
    expect(tunnels.has('10.100.0.1/32')).toBe(false);
    expect(lans.has(plan.newPrefix) || lans.has(plan.setPrefix) || plan.newPrefix === plan.setPrefix).toBe(false);
    expect(plan.oldPrefix).toBe(plan.peers[plan.changed].allowedIPs[1]);
    expect(new Set(plan.peers.map((p) => p.publicKey)).size).toBe(HUB_MAX_PEERS);
    expect(() => hubPlan(0)).toThrow(RangeError);
    expect(() => hubPlan(HUB_MAX_PEERS + 1)).toThrow(RangeError);
  });

  it('marks each target met or missed, with the ratio to the reference', () => {
    const ok: HubResult = {
      vpn: 'tunvpn',
      peers: 10,
      status: 'ok',
      startMs: 1500,
      hwmMb: 150,
      reload: { ms: 80, routeSwapMs: 79, hwmMb: 150 },
      stop: { ms: 10, deletedBeforeLinkGone: 10, routesLeft: 0 },
    };
    const ref: HubResult = { ...ok, vpn: 'wg', startMs: 3000, hwmMb: 300 };
    const lines = hubTargetLines([ok, ref], 'wg');
    expect(lines[0]).toMatch(/^ {2}met .*up < 2 s: 1\.50 s \(0\.50x wg\)$/);
    expect(lines[1]).toMatch(/^ {2}met .*< 300 MB: peak 150\.0 MB \(0\.50x wg\)$/);
    expect(lines[2]).toMatch(/^ {2}met .*reload/);
    expect(lines[3]).toMatch(/^ {2}met .*stop removes every route: 0 left/);
    const bad = hubTargetLines(
      [{ ...ok, startMs: 2000, hwmMb: 300, reload: { ms: 99, routeSwapMs: 100, hwmMb: 300 }, stop: { ms: 1, deletedBeforeLinkGone: 9, routesLeft: 1 } }],
      'wg',
    );
    expect(bad.map((l) => l.startsWith(' MISSED'))).toEqual([true, true, true, true]);
    const failed = hubTargetLines([{ vpn: 'tunvpn', peers: 10, status: 'failed', error: 'boom\nmore' }], 'wg');
    expect(failed[0]).toBe(' MISSED routed hub of 10 peers: failed: boom');
  });
});

describe("bench: the main thread's CPU and run-queue time (schedstat)", () => {
  it("counts a process's busy main thread as time on a CPU", async () => {
    // A child of its own: under vitest this test may run in a worker thread, not in the thread
    // /proc/PID/schedstat describes. The child busy-loops 300 ms, then sleeps until killed.
    const child = spawn(process.execPath, ['-e', 'const t = Date.now() + 300; while (Date.now() < t); setTimeout(() => {}, 60000);'], { stdio: 'ignore' });
    try {
      const pid = child.pid ?? -1;
      const before = threadTimes(pid);
      expect(before).toBeDefined();
      await new Promise((r) => setTimeout(r, 600));
      const d = threadDelta(before, threadTimes(pid));
      // 300 ms busy in the window: on a CPU or waiting for one for most of it, even on a loaded machine.
      expect(d?.cpuMs).toBeGreaterThan(30);
      expect((d?.cpuMs ?? 0) + (d?.waitMs ?? 0)).toBeGreaterThan(150);
    } finally {
      child.kill('SIGKILL');
    }
    expect(threadDelta(undefined, { cpuMs: 1, waitMs: 0 })).toBeUndefined();
    expect(threadTimes(-1)).toBeUndefined();
  });

  it('prints them on the hub line', () => {
    const r: HubResult = {
      vpn: 'tunvpn',
      peers: 1,
      status: 'ok',
      reload: { ms: 90, routeSwapMs: 89, hwmMb: 1, thread: { cpuMs: 61.4, waitMs: 20 } },
      set: { ms: 10, routeSwapMs: 9, thread: { cpuMs: 7, waitMs: 1 } },
    };
    expect(hubLine(r)).toContain(
      'main thread on a CPU 61 ms, waiting for one 20 ms); wg set 10 ms (route swap visible 9 ms; main thread on a CPU 7 ms, waiting for one 1 ms)',
    );
  });
});

describeIntegration('bench: a small routed hub for real', ['wg', 'wireguard-go'], () => {
  it('tunvpn and wireguard-go bring up the same 40 routed peers, swap a prefix, and leave no route at stop', async () => {
    const crypto = await loadCrypto('auto');
    const priv = crypto.generatePrivateKey();
    const key = { privateKey: Buffer.from(priv).toString('base64'), publicKey: Buffer.from(crypto.publicKey(priv)).toString('base64') };
    const plan = hubPlan(40);
    const pending = new Set<() => Promise<void>>();
    const tunvpn = await tunvpnHub(plan, key, pending);
    for (const r of [tunvpn, await wireguardGoHub(plan, key, pending, 'wireguard-go', 'wireguard-go')]) {
      expect({ vpn: r.vpn, status: r.status, error: r.error }).toEqual({ vpn: r.vpn, status: 'ok', error: undefined });
      expect(r.routesUp).toBe(40);
      expect(r.startMs).toBeGreaterThan(0);
      expect(r.hwmMb).toBeGreaterThan(1);
      expect(r.reload?.routeSwapMs).toBeGreaterThanOrEqual(0);
      expect(r.set?.routeSwapMs).toBeGreaterThanOrEqual(0);
      expect(r.stop?.routesLeft).toBe(0);
    }
    // The daemon's main thread was seen working on the reload and the set.
    expect(tunvpn.reload?.thread?.cpuMs).toBeGreaterThan(0);
    expect(tunvpn.set?.thread?.cpuMs).toBeGreaterThan(0);
    // tunvpn deletes its routes itself before the interface goes (wireguard-go leaves them to the device).
    expect(tunvpn.stop?.deletedBeforeLinkGone).toBe(40);
    // Every undo ran in its finally: nothing left for a SIGINT to clean.
    expect(pending.size).toBe(0);
  }, 60_000);
});
