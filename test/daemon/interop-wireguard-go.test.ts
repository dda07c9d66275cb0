/**
 * Interop: host A runs tunvpn, host B runs the real wireguard-go (Debian
 * package); LAN A and LAN B reach each other both ways, once with each side
 * initiating, with and without a preshared key.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { describeIntegration, pingUntil, sleep, uniqueSuffix } from '../helpers/netns.js';
import { ADDR, ConfigDir, SiteToSite, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, tcpTransfer } from '../helpers/daemon.js';

const WG_ENV = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };

describeIntegration('interop with wireguard-go through the daemon', ['wireguard-go', 'wg', 'ping'], () => {
  let bed: SiteToSite | undefined;
  let dir: ConfigDir | undefined;
  let daemon: DaemonProcess | undefined;
  let wgSocket: string | undefined;

  afterEach(async () => {
    await daemon?.stop();
    await bed?.destroy();
    await dir?.destroy();
    // wireguard-go killed with its namespace leaves its control socket behind.
    if (wgSocket) await rm(wgSocket, { force: true });
    wgSocket = undefined;
    daemon = undefined;
    bed = undefined;
    dir = undefined;
  });

  for (const initiator of ['tunvpn', 'wireguard-go'] as const) {
    for (const psk of [false, true]) {
      it(`${initiator} initiates, ${psk ? 'with' : 'without'} a preshared key`, async () => {
        bed = await SiteToSite.create('wi');
        dir = await ConfigDir.create();
        const a = await makeKeyPair();
        const b = await makeKeyPair();
        const presharedKey = psk ? randomBytes(32).toString('base64') : undefined;
        const wgIf = `wgi${uniqueSuffix()}`.slice(0, 15);
        wgSocket = `/var/run/wireguard/${wgIf}.sock`;

        // Host B: wireguard-go, configured with wg and ip.
        bed.tb.spawn('wireguard-go', ['-f', wgIf], { env: WG_ENV, stdio: 'ignore' });
        for (let i = 0; i < 100; i++) {
          const r = await bed.tb.exec('ip', ['link', 'show', wgIf]).catch(() => undefined);
          if (r) break;
          await sleep(50);
        }
        await writeFile(join(dir.path, 'b.key'), b.privateKey + '\n', { mode: 0o600 });
        const setArgs = ['set', wgIf, 'private-key', join(dir.path, 'b.key'), 'listen-port', '51820', 'peer', a.publicKey,
          'allowed-ips', `${ADDR.taTun.v4}/32,${ADDR.lanA.v4}`];
        if (presharedKey) {
          await writeFile(join(dir.path, 'psk'), presharedKey + '\n', { mode: 0o600 });
          setArgs.push('preshared-key', join(dir.path, 'psk'));
        }
        // wireguard-go learns A's endpoint only if it initiates; give it one in that case.
        if (initiator === 'wireguard-go') setArgs.push('endpoint', `${ADDR.taUnder.v4}:51820`);
        await bed.tb.exec('wg', setArgs);
        await bed.tb.exec('ip', ['addr', 'add', `${ADDR.tbTun.v4}/24`, 'dev', wgIf]);
        await bed.tb.exec('ip', ['link', 'set', wgIf, 'up']);
        await bed.tb.exec('ip', ['route', 'add', ADDR.lanA.v4, 'dev', wgIf]);

        // Host A: tunvpn. When wireguard-go initiates, tunvpn has no endpoint for it.
        const cfgA = await dir.writeHost('a', {
          interfaceName: 'wia0',
          privateKey: a.privateKey,
          listenPort: 51820,
          addresses: [`${ADDR.taTun.v4}/24`],
          peers: [{
            name: 'wg-go',
            publicKey: b.publicKey,
            endpoint: initiator === 'tunvpn' ? `${ADDR.tbUnder.v4}:51820` : undefined,
            allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4],
            presharedKey,
          }],
        });
        daemon = await startDaemon(bed.ta, cfgA);

        const [first, second] = initiator === 'tunvpn' ? [bed.la, bed.lb] : [bed.lb, bed.la];
        const [firstDst, secondDst] = initiator === 'tunvpn' ? [ADDR.lb.v4, ADDR.la.v4] : [ADDR.la.v4, ADDR.lb.v4];
        expect(await pingUntil(first, firstDst, 15_000)).toMatch(/1 received/);
        expect(await pingUntil(second, secondDst, 5_000)).toMatch(/1 received/);

        const { stdout } = await bed.tb.exec('wg', ['show', wgIf, 'latest-handshakes']);
        expect(Number(stdout.trim().split(/\s+/)[1])).toBeGreaterThan(0);

        const r = await tcpTransfer(bed.la, bed.lb, ADDR.lb.v4, 5003, 2 * 1024 * 1024);
        expect(r.remote).toBe(r.local);
      });
    }
  }
});
