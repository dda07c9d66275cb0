/**
 * `npm run bench:config [-- --rounds N] [--bin PATH]`: time and peak memory of
 * `tunvpn check` (the compiled CLI, a fresh process each run) on the
 * largest configs it accepts: one peer with 100,000 allowed IPs, 10,000
 * peers, 30,000 interface addresses, and a file of realistic peers just
 * under the 16 MiB limit; plus a file one byte over the limit (refused
 * before reading). Prints the median wall time, the median CPU time (user +
 * system, steadier than wall time on a shared machine) and the peak RSS per
 * config. --bin runs another build (e.g. /path/to/other/tree/dist/src/cli/main.js)
 * on the same files, for before/after figures.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_CONFIG_BYTES } from '../src/config/load.js';
import { numArg } from './lib/args.js';
import { runCli } from './lib/cli-run.js';

const argv = process.argv.slice(2);
const rounds = numArg(argv, '--rounds', 3, 1, 50);
const binAt = argv.indexOf('--bin');
const bin = binAt >= 0 ? argv[binAt + 1] : undefined;
const dir = mkdtempSync(join(tmpdir(), 'tunvpn-bench-config-'));

const ip4 = (n: number): string => `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;
const key = (): string => randomBytes(32).toString('base64');

function peer(i: number): Record<string, unknown> {
  return {
    name: `peer-${i}`,
    publicKey: key(),
    endpoint: `192.0.2.${(i % 250) + 1}:${10000 + (i % 50000)}`,
    allowedIPs: [`${ip4(i)}/32`, `fd00::${i.toString(16)}/128`],
    persistentKeepalive: 25,
  };
}

function write(name: string, cfg: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(cfg, null, 2));
  return path;
}

const privateKeyFile = join(dir, 'private.key');
writeFileSync(privateKeyFile, `${key()}\n`);
chmodSync(privateKeyFile, 0o600);
const iface = { privateKeyFile };

const configs: { label: string; path: string; expect: number }[] = [
  {
    label: 'one peer, 100,000 allowed IPs',
    path: write('aips.json', { interface: iface, peers: [{ publicKey: key(), allowedIPs: Array.from({ length: 100_000 }, (_, i) => `${ip4(i)}/32`) }] }),
    expect: 0,
  },
  { label: '10,000 peers', path: write('peers.json', { interface: iface, peers: Array.from({ length: 10_000 }, (_, i) => peer(i)) }), expect: 0 },
  {
    label: '30,000 interface addresses',
    path: write('addrs.json', { interface: { ...iface, addresses: Array.from({ length: 30_000 }, (_, i) => `${ip4(i)}/8`) } }),
    expect: 0,
  },
];
{
  // As many realistic peers as fit under the limit: estimate, then shrink until the file fits.
  let count = Math.floor(MAX_CONFIG_BYTES / 300);
  let path = '';
  for (;;) {
    const peers = Array.from({ length: count }, (_, i) => peer(i));
    const text = JSON.stringify({ interface: iface, peers }, null, 2);
    if (Buffer.byteLength(text) <= MAX_CONFIG_BYTES) {
      path = join(dir, 'limit.json');
      writeFileSync(path, text);
      break;
    }
    count = Math.floor((count * (MAX_CONFIG_BYTES - 4096)) / Buffer.byteLength(text));
  }
  configs.push({ label: `${count} peers (a file near 16 MiB)`, path, expect: 0 });
  const over = join(dir, 'over.json');
  writeFileSync(over, `{}${' '.repeat(MAX_CONFIG_BYTES - 1)}`);
  configs.push({ label: 'one byte over 16 MiB', path: over, expect: 78 });
}

try {
  for (const c of configs) {
    const walls: number[] = [];
    const cpus: number[] = [];
    let rss = 0;
    let codes = '';
    for (let r = 0; r < rounds; r++) {
      const run = await runCli(['check', '--config', c.path], { timeoutMs: 600_000, heapMb: 4096, ...(bin ? { bin } : {}) });
      // Another build may refuse what this one accepts (or not): report, do not stop.
      if (run.code !== c.expect && !bin) throw new Error(`${c.label}: exit ${run.code}, expected ${c.expect}: ${run.stderr.slice(0, 500)}`);
      codes = String(run.code);
      walls.push(run.wallMs);
      cpus.push(run.cpuMs);
      rss = Math.max(rss, run.maxRssMb);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] / 1000;
    console.log(`${c.label.padEnd(40)} exit ${codes}, wall ${median(walls).toFixed(2)} s, CPU ${median(cpus).toFixed(2)} s, peak RSS ${rss.toFixed(0)} MiB`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
