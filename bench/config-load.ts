/**
 * `npm run bench:config [-- --rounds N]`: time and peak memory of
 * `tunvpn check` (the compiled CLI, a fresh process each run) on the
 * largest configs it accepts: one peer with 100,000 allowed IPs, 10,000
 * peers, 30,000 interface addresses, and a file of realistic peers just
 * under the 16 MiB limit; plus a file one byte over the limit (refused
 * before reading). Prints the median wall time and the peak RSS per config.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_CONFIG_BYTES } from '../src/config/load.js';
import { numArg } from './lib/args.js';
import { runCli } from './lib/cli-run.js';

const rounds = numArg(process.argv.slice(2), '--rounds', 3, 1, 50);
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
  { label: 'one peer, 100,000 allowed IPs', path: write('aips.json', { interface: iface, peers: [{ publicKey: key(), allowedIPs: Array.from({ length: 100_000 }, (_, i) => `${ip4(i)}/32`) }] }), expect: 0 },
  { label: '10,000 peers', path: write('peers.json', { interface: iface, peers: Array.from({ length: 10_000 }, (_, i) => peer(i)) }), expect: 0 },
  { label: '30,000 interface addresses', path: write('addrs.json', { interface: { ...iface, addresses: Array.from({ length: 30_000 }, (_, i) => `${ip4(i)}/8`) } }), expect: 0 },
];
{
  // As many realistic peers as fit under the limit.
  const peers: unknown[] = [];
  let size = 200;
  while (size < MAX_CONFIG_BYTES - 1000) {
    const p = peer(peers.length);
    size += JSON.stringify(p, null, 2).length + 8;
    peers.push(p);
  }
  peers.pop();
  configs.push({ label: `${peers.length} peers (a file near 16 MiB)`, path: write('limit.json', { interface: iface, peers }), expect: 0 });
  const over = join(dir, 'over.json');
  writeFileSync(over, `{}${' '.repeat(MAX_CONFIG_BYTES - 1)}`);
  configs.push({ label: 'one byte over 16 MiB', path: over, expect: 78 });
}

try {
  for (const c of configs) {
    const walls: number[] = [];
    let rss = 0;
    for (let r = 0; r < rounds; r++) {
      const run = await runCli(['check', '--config', c.path], { timeoutMs: 120_000, heapMb: 4096 });
      if (run.code !== c.expect) throw new Error(`${c.label}: exit ${run.code}, expected ${c.expect}: ${run.stderr.slice(0, 500)}`);
      walls.push(run.wallMs);
      rss = Math.max(rss, run.maxRssMb);
    }
    walls.sort((a, b) => a - b);
    console.log(`${c.label.padEnd(40)} median ${(walls[Math.floor(walls.length / 2)] / 1000).toFixed(2)} s, peak RSS ${rss.toFixed(0)} MiB`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
