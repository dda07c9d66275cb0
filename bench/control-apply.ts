/**
 * `npm run bench:control -- [--sizes 1000,5000,10000,20000] [--allowed 50000] [--cli PATH] [--node-args "..."] [--daemon-log PATH]`
 *
 * How long a large control-socket `set` takes to apply, and what it does to
 * the tunnel meanwhile (issue 13 item 2). Host A runs tunvpn, host B
 * wireguard-go, each in its own namespace, one tunnel between them. For
 * each size N, one `set` through A's real control socket adds N peers (one
 * /32 allowed IP each, so N kernel routes too), and a second removes them;
 * one more adds a single peer with `--allowed` allowed IPs. The time is
 * from the first byte written to the `errno=` line read. All the while B
 * pings A's tunnel address every 5 ms through the tunnel; the worst round
 * trip and the pings lost are reported per set.
 *
 * Targets (docs/performance.md): a 20,000-peer set under 1 s, worst RTT
 * under 50 ms. `--cli` measures another build (an older checkout's
 * dist/src/cli/main.js). `--node-args` are flags for the daemon's node
 * (`--cpu-prof`, `--trace-gc`, `--import ./dist/bench/lib/stall-preload.js`
 * to log its event-loop stalls); `--daemon-log` writes the daemon's output
 * and when each set ran (epoch ms) to a file. Needs root, `ip`, `ping` and
 * /usr/bin/wireguard-go.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { loadCrypto } from '../src/crypto/index.js';
import { linkNamespaces, Netns, pingUntil, sleep, uniqueSuffix } from '../src/testbed/netns.js';
import { cliPath, ConfigDir, DaemonProcess } from '../src/testbed/site-to-site.js';
import type { ChildProcess } from 'node:child_process';
import { numArg } from './lib/args.js';
import { stopWireguardGo } from './lib/uapi-differential.js';

const A_UNDER = '10.60.0.1';
const B_UNDER = '10.60.0.2';
const A_TUN = '10.62.0.1';
const B_TUN = '10.62.0.2';
const PING_INTERVAL_S = 0.005;

function strArg(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** One request on its own connection; resolves with the reply, or rejects if the connection closes first. */
function exchange(ifname: string, request: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(`/var/run/wireguard/${ifname}.sock`);
    let text = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no reply within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(request));
    sock.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (text.includes('\n\n')) {
        clearTimeout(timer);
        sock.destroy();
        resolve(text);
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      reject(new Error('connection closed without an errno line'));
    });
  });
}

interface PingStats {
  sent: number;
  received: number;
  maxMs: number;
  avgMs: number;
}

/** Pings from `ns` until stopped; bounded by `deadlineS` in any case. */
function startPing(ns: Netns, addr: string, deadlineS: number): { stop: () => Promise<PingStats> } {
  const child = ns.spawn('ping', ['-n', '-i', String(PING_INTERVAL_S), '-W', '2', '-w', String(deadlineS), addr]);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.resume();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      child.kill('SIGINT');
      await exited;
      const replies = [...out.matchAll(/icmp_seq=(\d+) .*time=([\d.]+) ms/g)];
      const times = replies.map((m) => Number(m[2]));
      // Sent = up to the last answered one: those still in flight when ping was stopped are not lost.
      const lastSeq = replies.reduce((max, m) => Math.max(max, Number(m[1])), 0);
      const received = new Set(replies.map((m) => Number(m[1]))).size;
      return {
        sent: lastSeq,
        received,
        maxMs: times.length ? Math.max(...times) : Number.NaN,
        avgMs: times.length ? times.reduce((a, b) => a + b, 0) / times.length : Number.NaN,
      };
    },
  };
}

interface Row {
  what: string;
  bytes: number;
  applyMs: number;
  /** The daemon's own account of the change (its log line), where it gives one: plan, prepare, commit. */
  daemonMs?: string;
  errno: string;
  ping: PingStats;
}

async function peerCount(ifname: string): Promise<number> {
  const text = await exchange(ifname, 'get=1\n\n', 300_000);
  return text.split('\n').filter((l) => l.startsWith('public_key=')).length;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const sizes = (strArg(args, '--sizes') ?? '1000,5000,10000,20000')
    .split(',')
    .map(Number)
    .filter((n) => n > 0 && n <= 60_000);
  const allowed = numArg(args, '--allowed', 50_000, 0, 60_000);
  const cli = strArg(args, '--cli') ?? cliPath();
  // Flags for the daemon's node (`--node-args "--cpu-prof --cpu-prof-dir=/tmp/p"`), split on spaces.
  const nodeArgs = (strArg(args, '--node-args') ?? '').split(' ').filter((a) => a !== '');
  // `--daemon-log PATH`: the daemon's output (with --trace-gc, say) and when each set ran (epoch ms), for profiling.
  const daemonLog = strArg(args, '--daemon-log');
  const marks: string[] = [];
  const crypto = await loadCrypto('auto');
  const suffix = uniqueSuffix();
  const ifA = `cba${suffix}`.slice(0, 15);
  const ifB = `cbb${suffix}`.slice(0, 15);
  const made: { a?: Netns; b?: Netns; dir?: ConfigDir; daemon?: DaemonProcess; wg?: ChildProcess } = {};
  const rows: Row[] = [];
  try {
    made.a = await Netns.create('cba');
    made.b = await Netns.create('cbb');
    const a = made.a;
    const b = made.b;
    await linkNamespaces(a, b, `${A_UNDER}/24`, `${B_UNDER}/24`);
    const privA = crypto.generatePrivateKey();
    const privB = crypto.generatePrivateKey();
    const pubA = crypto.publicKey(privA);
    const pubB = crypto.publicKey(privB);
    made.dir = await ConfigDir.create();
    const config = await made.dir.writeHost('a', {
      interfaceName: ifA,
      privateKey: Buffer.from(privA).toString('base64'),
      listenPort: 51820,
      addresses: [`${A_TUN}/24`],
      peers: [{ name: 'b', publicKey: Buffer.from(pubB).toString('base64'), endpoint: `${B_UNDER}:51820`, allowedIPs: [`${B_TUN}/32`] }],
      logLevel: 'info',
    });
    const daemon = new DaemonProcess(a.spawn(process.execPath, [...nodeArgs, cli, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] }));
    made.daemon = daemon;
    await daemon.waitForLog(/^tunvpn up/, 30_000);

    const wg = b.spawn('wireguard-go', ['-f', ifB], { env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', LOG_LEVEL: 'error' } });
    made.wg = wg;
    wg.stdout?.resume();
    wg.stderr?.resume();
    for (let i = 0; ; i++) {
      try {
        await exchange(ifB, 'get=1\n\n', 1000);
        break;
      } catch (err) {
        if (i > 100) throw new Error(`wireguard-go did not start: ${(err as Error).message}`);
        await sleep(50);
      }
    }
    const hex = (k: Uint8Array) => Buffer.from(k).toString('hex');
    await exchange(
      ifB,
      `set=1\nprivate_key=${hex(privB)}\nlisten_port=51820\npublic_key=${hex(pubA)}\nendpoint=${A_UNDER}:51820\nallowed_ip=${A_TUN}/32\n\n`,
      5000,
    );
    await b.exec('ip', ['addr', 'add', `${B_TUN}/24`, 'dev', ifB]);
    await b.exec('ip', ['link', 'set', ifB, 'up']);
    await pingUntil(b, A_TUN, 15_000);

    // The noise floor: the same pings with nothing being applied.
    {
      const idle = startPing(b, A_TUN, 60);
      await sleep(2000);
      const stats = await idle.stop();
      rows.push({ what: 'idle (no set)', bytes: 0, applyMs: 0, errno: '-', ping: stats });
      console.error(`idle: worst RTT ${stats.maxMs.toFixed(1)} ms`);
    }

    const measure = async (what: string, request: string, expectPeers: number): Promise<void> => {
      const ping = startPing(b, A_TUN, 600);
      await sleep(300);
      const t0 = performance.now();
      const epoch0 = Date.now();
      let errno: string;
      try {
        errno = /errno=(-?\d+)/.exec(await exchange(ifA, request, 600_000))?.[1] ?? '?';
      } catch (err) {
        // An old build closed the connection mid-apply: the change is still being applied; wait for it.
        errno = `none (${(err as Error).message})`;
        for (;;) {
          // (An old server also closes a queued get at its idle timeout: ask again.)
          const peers = await peerCount(ifA).catch(() => -1);
          if (peers === expectPeers) break;
          await sleep(100);
        }
      }
      const applyMs = performance.now() - t0;
      marks.push(`${epoch0}..${Date.now()} ${what}`);
      await sleep(300);
      const stats = await ping.stop();
      const peers = await peerCount(ifA);
      if (peers !== expectPeers) throw new Error(`${what}: ${peers} peers afterwards, expected ${expectPeers}`);
      const logged = daemon
        .records()
        .filter((r) => r.msg === 'configuration changed through the control socket')
        .pop()?.ms as Record<string, number> | undefined;
      const daemonMs = logged && typeof logged === 'object' ? Object.values(logged).join('/') : undefined;
      rows.push({ what, bytes: request.length, applyMs, daemonMs, errno, ping: stats });
      console.error(`${what}: ${Math.round(applyMs)} ms, worst RTT ${stats.maxMs.toFixed(1)} ms, ${stats.sent - stats.received} of ${stats.sent} pings lost`);
    };

    for (const n of sizes) {
      const keys = Array.from({ length: n }, () => randomBytes(32).toString('hex'));
      const add: string[] = ['set=1'];
      for (let i = 0; i < n; i++) add.push(`public_key=${keys[i]}`, `allowed_ip=10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`);
      await measure(`add ${n} peers`, `${add.join('\n')}\n\n`, n + 1);
      const remove: string[] = ['set=1'];
      for (const k of keys) remove.push(`public_key=${k}`, 'remove=true');
      await measure(`remove ${n} peers`, `${remove.join('\n')}\n\n`, 1);
    }
    if (allowed > 0) {
      const key = randomBytes(32).toString('hex');
      const lines = ['set=1', `public_key=${key}`];
      for (let i = 0; i < allowed; i++) lines.push(`allowed_ip=10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`);
      await measure(`1 peer, ${allowed} allowed IPs`, `${lines.join('\n')}\n\n`, 2);
      await measure(`remove it`, `set=1\npublic_key=${key}\nremove=true\n\n`, 1);
    }
  } finally {
    await made.daemon?.stop();
    if (daemonLog !== undefined && made.daemon) await writeFile(daemonLog, [...made.daemon.lines, ...marks].join('\n') + '\n');
    if (made.wg) await stopWireguardGo(made.wg, ifB);
    await Promise.all([made.a?.destroy(), made.b?.destroy()]);
    await made.dir?.destroy();
  }
  const table = [
    ['set', 'request', 'apply', 'in daemon (plan/prepare/commit)', 'errno', 'worst RTT', 'avg RTT', 'pings lost'],
    ...rows.map((r) => [
      r.what,
      `${(r.bytes / 1e6).toFixed(2)} MB`,
      `${Math.round(r.applyMs)} ms`,
      r.daemonMs === undefined ? '-' : `${r.daemonMs} ms`,
      r.errno,
      `${r.ping.maxMs.toFixed(1)} ms`,
      `${r.ping.avgMs.toFixed(2)} ms`,
      `${r.ping.sent - r.ping.received}/${r.ping.sent}`,
    ]),
  ];
  const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
  console.log(table.map((row) => row.map((cell, c) => cell.padEnd(widths[c])).join('  ')).join('\n'));
  console.log(JSON.stringify({ cli, rows }, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
