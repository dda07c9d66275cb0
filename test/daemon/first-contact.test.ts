/**
 * First contact through real daemons, real UDP, real namespaces: a data
 * packet never waits Rekey-Timeout behind an initiation nobody answered.
 *
 * - tunvpn starts first (its start-up initiation is lost: nobody listens),
 *   the peer comes up 0.5 s later; the first ping sent after that gets its
 *   reply within 1 s. The peer is tunvpn (without an endpoint for A, so it
 *   does not initiate itself; and with one) and Debian's wireguard-go.
 * - two tunvpn daemons started at the same instant, 20 times: their
 *   start-up initiations cross; each time ping answers both ways within 1 s
 *   of both being up.
 */
import type { ChildProcess } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { describeIntegration, sleep, uniqueSuffix, type Netns } from '../helpers/netns.js';
import { ADDR, ConfigDir, SiteToSite, startDaemon, type DaemonProcess, type HostSpec } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, type KeyPairText } from '../helpers/daemon.js';

const WG_ENV = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };

/** One ping (waits up to `waitS` for the reply); its round trip in ms, or undefined when none came. */
async function pingOnce(ns: Netns, address: string, waitS = 3): Promise<number | undefined> {
  try {
    const { stdout } = await ns.exec('ping', ['-n', '-c', '1', '-W', String(waitS), address], { timeoutMs: (waitS + 5) * 1000 });
    const m = /time=([\d.]+) ms/.exec(stdout);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

describeIntegration('first contact through the daemon', ['ping', 'wireguard-go', 'wg'], () => {
  let bed: SiteToSite;
  let dir: ConfigDir;
  let a: KeyPairText;
  let b: KeyPairText;
  let daemons: DaemonProcess[] = [];
  let wgSocket: string | undefined;
  let wgProcess: ChildProcess | undefined;

  beforeAll(async () => {
    bed = await SiteToSite.create('fc');
    dir = await ConfigDir.create();
    [a, b] = [makeKeyPair(), makeKeyPair()];
  });

  afterEach(async () => {
    await Promise.all(daemons.map((d) => d.stop()));
    daemons = [];
    if (wgProcess && wgProcess.exitCode === null) {
      const exited = new Promise((resolve) => wgProcess?.once('exit', resolve));
      wgProcess.kill('SIGTERM');
      await Promise.race([exited, sleep(2_000)]);
    }
    wgProcess = undefined;
    // A killed wireguard-go leaves its control socket behind.
    if (wgSocket) await rm(wgSocket, { force: true });
    wgSocket = undefined;
  });

  afterAll(async () => {
    await bed?.destroy();
    await dir?.destroy();
  });

  function hostA(): HostSpec {
    return {
      interfaceName: 'fca0',
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`],
      peers: [{ name: 'b', publicKey: b.publicKey, endpoint: `${ADDR.tbUnder.v4}:51820`, allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4] }],
    };
  }

  function hostB(withEndpoint: boolean): HostSpec {
    return {
      interfaceName: 'fcb0',
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`],
      peers: [
        {
          name: 'a',
          publicKey: a.publicKey,
          endpoint: withEndpoint ? `${ADDR.taUnder.v4}:51820` : undefined,
          allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4],
        },
      ],
    };
  }

  for (const withEndpoint of [false, true]) {
    it(`tunvpn first, tunvpn peer (${withEndpoint ? 'with' : 'without'} an endpoint for A) 0.5 s later: the first ping is answered within 1 s`, async () => {
      const cfgA = await dir.writeHost('a', hostA());
      const cfgB = await dir.writeHost('b', hostB(withEndpoint));
      daemons.push(await startDaemon(bed.ta, cfgA));
      await sleep(500);
      daemons.push(await startDaemon(bed.tb, cfgB));
      const rtt = await pingOnce(bed.la, ADDR.lb.v4);
      expect(rtt, 'first ping after the peer is up').toBeDefined();
      expect(rtt).toBeLessThan(1_000);
      expect(await pingOnce(bed.lb, ADDR.la.v4)).toBeLessThan(1_000);
    });
  }

  it('tunvpn first, wireguard-go 0.5 s later: the first ping is answered within 1 s', async () => {
    const cfgA = await dir.writeHost('a', hostA());
    daemons.push(await startDaemon(bed.ta, cfgA));
    await sleep(500);
    const wgIf = `wfc${uniqueSuffix()}`.slice(0, 15);
    wgSocket = `/var/run/wireguard/${wgIf}.sock`;
    wgProcess = bed.tb.spawn('wireguard-go', ['-f', wgIf], { env: WG_ENV, stdio: 'ignore' });
    for (let i = 0; i < 100; i++) {
      if (
        await bed.tb.exec('ip', ['link', 'show', wgIf]).then(
          () => true,
          () => false,
        )
      )
        break;
      await sleep(20);
    }
    await writeFile(join(dir.path, 'wgb.key'), b.privateKey + '\n', { mode: 0o600 });
    // No endpoint for A: wireguard-go learns it from A's initiation.
    await bed.tb.exec('wg', [
      'set',
      wgIf,
      'private-key',
      join(dir.path, 'wgb.key'),
      'listen-port',
      '51820',
      'peer',
      a.publicKey,
      'allowed-ips',
      `${ADDR.taTun.v4}/32,${ADDR.lanA.v4}`,
    ]);
    await bed.tb.exec('ip', ['addr', 'add', `${ADDR.tbTun.v4}/24`, 'dev', wgIf]);
    await bed.tb.exec('ip', ['link', 'set', wgIf, 'up']);
    await bed.tb.exec('ip', ['route', 'add', ADDR.lanA.v4, 'dev', wgIf]);
    const rtt = await pingOnce(bed.la, ADDR.lb.v4);
    expect(rtt, 'first ping after wireguard-go is up').toBeDefined();
    expect(rtt).toBeLessThan(1_000);
    expect(await pingOnce(bed.lb, ADDR.la.v4)).toBeLessThan(1_000);
  });

  it('two tunvpn daemons started at the same instant settle within 1 s, 20 times in a row', async () => {
    const cfgA = await dir.writeHost('a', hostA());
    const cfgB = await dir.writeHost('b', hostB(true));
    const settled: number[] = [];
    for (let round = 0; round < 20; round++) {
      const [da, db] = await Promise.all([startDaemon(bed.ta, cfgA), startDaemon(bed.tb, cfgB)]);
      daemons.push(da, db);
      const t0 = Date.now();
      const [ab, ba] = await Promise.all([pingOnce(bed.la, ADDR.lb.v4, 2), pingOnce(bed.lb, ADDR.la.v4, 2)]);
      const ms = Date.now() - t0;
      expect(ab, `round ${round}: la -> lb`).toBeDefined();
      expect(ba, `round ${round}: lb -> la`).toBeDefined();
      expect(ms, `round ${round}: settled after ${ms} ms`).toBeLessThan(1_000);
      settled.push(ms);
      await Promise.all([da.stop(), db.stop()]);
      daemons = [];
    }
    console.log(`simultaneous starts: both pings answered after ${settled.join(', ')} ms`);
  }, 240_000);
});
