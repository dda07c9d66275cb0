#!/usr/bin/env node
/**
 * `npm run demo`: two sites connected by tunvpn on this one machine.
 *
 * Builds the site-to-site test bed (src/testbed/site-to-site.ts;
 * docs/architecture.md, "Test bed") in network namespaces, makes
 * keys and configs, starts a tunvpn daemon on each host, pings and (when
 * iperf3 is installed) runs a short iperf3 from LAN A to LAN B, prints both
 * daemons' status, and removes everything, also on Ctrl-C.
 */
import { execFileSync } from 'node:child_process';
import { ADDR, cliPath, ConfigDir, SiteToSite, startDaemon, type DaemonProcess } from '../testbed/site-to-site.js';
import { makeKeyPair } from '../testbed/keys.js';
import { pingUntil } from '../testbed/netns.js';
import type { Netns } from '../testbed/netns.js';

const say = (text: string): void => {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
};

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function show(ns: Netns, cmd: string, args: string[]): Promise<void> {
  process.stdout.write(`$ ${cmd} ${args.join(' ')}   (in ${ns.name})\n`);
  try {
    const { stdout } = await ns.exec(cmd, args, { timeoutMs: 30_000 });
    process.stdout.write(stdout);
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    process.stdout.write(`${e.stdout ?? ''}${e.stderr ?? e.message}\n`);
  }
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo: run as root (it creates network namespaces and TUN devices)\n');
    return 1;
  }
  let bed: SiteToSite | undefined;
  let dir: ConfigDir | undefined;
  const daemons: DaemonProcess[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => {
    cleaning ??= (async () => {
      say('cleaning up');
      await Promise.all(daemons.map((d) => d.stop()));
      await bed?.destroy();
      await dir?.destroy();
      process.stdout.write('namespaces, daemons and key files removed\n');
    })();
    return cleaning;
  };
  const onSignal = (): void => {
    void cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    say('building the test bed: LAN A - host A == tunnel == host B - LAN B');
    bed = await SiteToSite.create('demo');
    process.stdout.write(
      `LAN A ${bed.la.name} ${ADDR.la.v4}  host A ${bed.ta.name} ${ADDR.taUnder.v4}  ` +
        `host B ${bed.tb.name} ${ADDR.tbUnder.v4}  LAN B ${bed.lb.name} ${ADDR.lb.v4}\n`,
    );

    say('generating keys and configs');
    const a = makeKeyPair();
    const b = makeKeyPair();
    dir = await ConfigDir.create();
    const cfgA = await dir.writeHost('host-a', {
      interfaceName: 'tunvpn-a',
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`, `${ADDR.taTun.v6}/64`],
      peers: [
        {
          name: 'site-b',
          publicKey: b.publicKey,
          endpoint: `${ADDR.tbUnder.v4}:51820`,
          allowedIPs: [`${ADDR.tbTun.v4}/32`, `${ADDR.tbTun.v6}/128`, ADDR.lanB.v4, ADDR.lanB.v6],
        },
      ],
    });
    const cfgB = await dir.writeHost('host-b', {
      interfaceName: 'tunvpn-b',
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`, `${ADDR.tbTun.v6}/64`],
      peers: [
        {
          name: 'site-a',
          publicKey: a.publicKey,
          endpoint: `${ADDR.taUnder.v4}:51820`,
          allowedIPs: [`${ADDR.taTun.v4}/32`, `${ADDR.taTun.v6}/128`, ADDR.lanA.v4, ADDR.lanA.v6],
        },
      ],
    });
    process.stdout.write(`configs in ${dir.path} (host A public key ${a.publicKey})\n`);

    say('starting tunvpn on host A and host B');
    daemons.push(await startDaemon(bed.ta, cfgA));
    daemons.push(await startDaemon(bed.tb, cfgB));
    await show(bed.ta, 'ip', ['route', 'show', 'dev', 'tunvpn-a']);

    say('ping from LAN A to LAN B, through the tunnel');
    await pingUntil(bed.la, ADDR.lb.v4, 10_000);
    await show(bed.la, 'ping', ['-n', '-c', '3', '-i', '0.2', ADDR.lb.v4]);
    await show(bed.la, 'ping', ['-n', '-c', '3', '-i', '0.2', ADDR.lb.v6]);

    if (hasCommand('iperf3')) {
      say('iperf3 TCP from LAN A to LAN B, 3 seconds');
      const server = bed.lb.spawn('iperf3', ['-s', '-1', '-B', ADDR.lb.v4], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 500));
      await show(bed.la, 'iperf3', ['-c', ADDR.lb.v4, '-t', '3', '-f', 'm']);
      server.kill();
    } else {
      say('iperf3 is not installed: skipping the throughput run (apt-get install iperf3)');
    }

    say('status of both daemons (tunvpn show; `wg show` prints the same through the control socket)');
    for (const [ns, ifname] of [
      [bed.ta, 'tunvpn-a'],
      [bed.tb, 'tunvpn-b'],
    ] as const) {
      await show(ns, process.execPath, [cliPath(), 'show', ifname]);
    }
    return 0;
  } catch (err) {
    process.stderr.write(`demo failed: ${(err as Error).message}\n`);
    for (const d of daemons) process.stderr.write(d.lines.slice(-20).join('\n') + '\n');
    return 1;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo failed: ${String(err)}\n`);
    process.exit(1);
  },
);
