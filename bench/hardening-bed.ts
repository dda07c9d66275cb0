/**
 * Shared by the hardening benchmarks (hardening-garbage.ts, soak.ts): the
 * site-to-site bed with both daemons up and an attacker namespace on host B,
 * the daemon's status through SIGUSR1, and /proc figures of a process.
 * (The tests have their own copy in test/hardening/helpers.ts, which leans
 * on vitest.)
 */
import { linkNamespaces, Netns, pingUntil } from '../src/testbed/netns.js';
import { ADDR, ConfigDir, fromRoot, SiteToSite, startDaemon, type DaemonProcess } from '../src/testbed/site-to-site.js';
import { pidOf, procFigures, type ProcFigures } from '../src/testbed/proc.js';
import { makeKeyPair } from '../src/testbed/keys.js';

export { pidOf, procFigures, type ProcFigures };

export const ATTACK_FIXTURE = fromRoot('test', 'fixtures', 'hardening', 'udp-attack.mjs');
export const TARGET = '10.60.2.1';

export interface BenchBed {
  bed: SiteToSite;
  atk: Netns;
  dir: ConfigDir;
  da: DaemonProcess;
  db: DaemonProcess;
  destroy(): Promise<void>;
}

/** Both daemons up and a ping through; `env` goes to both daemons (test-only timers). */
export async function benchBed(prefix: string, env: NodeJS.ProcessEnv = {}): Promise<BenchBed> {
  const bed = await SiteToSite.create(prefix);
  const made: { atk?: Netns; dir?: ConfigDir; daemons: DaemonProcess[] } = { daemons: [] };
  const cleanup = async (): Promise<void> => {
    await Promise.all(made.daemons.map((d) => d.stop()));
    await Promise.all([bed.destroy(), made.atk?.destroy()]);
    await made.dir?.destroy();
  };
  try {
    const atk = await Netns.create(`${prefix}x`);
    made.atk = atk;
    await linkNamespaces(bed.tb, atk, `${TARGET}/24`, '10.60.2.2/24');
    const dir = await ConfigDir.create();
    made.dir = dir;
    const [a, b] = [makeKeyPair(), makeKeyPair()];
    const cfgA = await dir.writeHost('a', {
      interfaceName: `${prefix}a0`,
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`, `${ADDR.taTun.v6}/64`],
      peers: [{ name: 'b', publicKey: b.publicKey, endpoint: `${ADDR.tbUnder.v4}:51820`, allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4, `${ADDR.tbTun.v6}/128`, ADDR.lanB.v6] }],
    });
    const cfgB = await dir.writeHost('b', {
      interfaceName: `${prefix}b0`,
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`, `${ADDR.tbTun.v6}/64`],
      peers: [{ name: 'a', publicKey: a.publicKey, endpoint: `${ADDR.taUnder.v4}:51820`, allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4, `${ADDR.taTun.v6}/128`, ADDR.lanA.v6] }],
    });
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      made.daemons.push(await startDaemon(bed.ta, cfgA));
      made.daemons.push(await startDaemon(bed.tb, cfgB));
    } finally {
      for (const k of Object.keys(env)) {
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
      }
    }
    await pingUntil(bed.la, ADDR.lb.v4, 15_000);
    const [da, db] = made.daemons;
    return { bed, atk, dir, da, db, destroy: cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

export interface Status {
  peers: { name?: string; lastHandshakeWallMs: number; rxBytes: number; txBytes: number }[];
  drops: Record<string, number>;
}

export async function status(d: DaemonProcess): Promise<Status> {
  const from = d.records().length;
  d.signal('SIGUSR1');
  const rec = await d.waitForLog(/^status$/, 5_000, from);
  return rec.status as Status;
}

export function totalDrops(s: Status): number {
  return Object.values(s.drops).reduce((x, y) => x + y, 0);
}




/** ping's transmitted / received, never rejecting on loss. */
export async function pingCount(ns: Netns, addr: string, count: number, intervalS: number): Promise<{ sent: number; received: number }> {
  const r = await ns
    .exec('ping', ['-n', '-q', '-c', String(count), '-i', String(intervalS), '-W', '1', addr], { timeoutMs: count * intervalS * 1000 + 20_000 })
    .catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  return { sent: m ? Number(m[1]) : 0, received: m ? Number(m[2]) : 0 };
}

export function mb(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}

export function argNumber(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}
