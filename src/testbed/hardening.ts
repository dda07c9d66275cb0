/**
 * The hardening bed, shared by the hardening tests (test/hardening/) and
 * benchmarks (bench/hardening-garbage.ts, bench/soak.ts): the site-to-site
 * bed with both daemons up and a ping through, plus an attacker namespace
 * linked to host B; the daemon's status through SIGUSR1; drop counters;
 * the kernel's UDP receive-buffer drops; ping counts. It lives in
 * src/testbed/ because the benchmarks are compiled from bench/ and src/
 * only (tsconfig.json), so they cannot import test/.
 */
import type { DaemonStatus } from '../daemon.js';
import { linkNamespaces, Netns, pingUntil, sleep } from './netns.js';
import { makeKeyPair, type KeyPairText } from './keys.js';
import { ADDR, ConfigDir, fromRoot, SiteToSite, startDaemon, type DaemonProcess, type HostSpec } from './site-to-site.js';

/** The hostile UDP sender (random bytes, bad MACs, handshake floods...), run inside the attacker namespace. */
export const ATTACK_FIXTURE = fromRoot('test', 'fixtures', 'hardening', 'udp-attack.mjs');

/** Host B's address on the attacker link, and the attacker's. */
export const ATTACK = { target: '10.60.2.1', attacker: '10.60.2.2' } as const;

export interface Status {
  peers: { name?: string; endpoint?: string; lastHandshakeWallMs: number; rxBytes: number; txBytes: number }[];
  drops: Record<string, number>;
  cookieRepliesSent: number;
  tun: DaemonStatus['tun'];
}

/** Asks a daemon for its status (SIGUSR1 logs it) and returns the newest one. */
export async function status(d: DaemonProcess): Promise<Status> {
  const from = d.records().length;
  d.signal('SIGUSR1');
  const rec = await d.waitForLog(/^status$/, 5_000, from);
  return rec.status as Status;
}

/**
 * Status once the drop counters stop moving (two reads 150 ms apart agree):
 * on a busy machine the daemon may still be draining its queues.
 */
export async function settledStatus(d: DaemonProcess, timeoutMs = 5_000): Promise<Status> {
  const deadline = Date.now() + timeoutMs;
  let prev = await status(d);
  for (;;) {
    await sleep(150);
    const cur = await status(d);
    if (JSON.stringify(cur.drops) === JSON.stringify(prev.drops) || Date.now() > deadline) return cur;
    prev = cur;
  }
}

/** Drops of every reason together. */
export function totalDrops(s: Status): number {
  return Object.values(s.drops).reduce((x, y) => x + y, 0);
}

/** Per-reason difference between two drop snapshots, zero entries left out. */
export function dropDelta(before: Status, after: Status): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after.drops)) {
    const d = v - (before.drops[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** UDP datagrams the kernel dropped in `ns` because a socket buffer was full. */
export async function udpRcvbufErrors(ns: Netns): Promise<number> {
  const { stdout } = await ns.exec('cat', ['/proc/net/snmp']);
  const [keys, vals] = stdout
    .split('\n')
    .filter((l) => l.startsWith('Udp:'))
    .map((l) => l.trim().split(/\s+/));
  return Number(vals[keys.indexOf('RcvbufErrors')]);
}

/** Runs ping and returns transmitted / received counts (never rejects on loss). */
export async function pingCount(ns: Netns, addr: string, count: number, intervalS = 0.02): Promise<{ sent: number; received: number }> {
  const r = await ns
    .exec('ping', ['-n', '-q', '-c', String(count), '-i', String(intervalS), '-W', '1', addr], { timeoutMs: count * intervalS * 1000 + 20_000 })
    .catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
  const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  return { sent: m ? Number(m[1]) : 0, received: m ? Number(m[2]) : 0 };
}

export interface HardeningBed {
  bed: SiteToSite;
  atk: Netns;
  /** The attacker's end of its link to host B. */
  atkIf: string;
  dir: ConfigDir;
  a: KeyPairText;
  b: KeyPairText;
  hostA: HostSpec;
  hostB: HostSpec;
  cfgA: string;
  cfgB: string;
  da: DaemonProcess;
  db: DaemonProcess;
  destroy(): Promise<void>;
}

export interface BedOptions {
  /** Runs after the namespaces exist and before the daemons start (e.g. a capture). */
  beforeDaemons?: (bed: SiteToSite, dir: ConfigDir) => Promise<void>;
  extraArgs?: string[];
  presharedKey?: string;
  /** Start host B first, so host A's first initiation is the one that makes the session. */
  bFirst?: boolean;
  /** Host A's endpoint for B (default B's underlay address, port 51820). */
  endpointOfB?: string;
  /** Host B's endpoint for A; null: none, B learns it from A's packets. */
  endpointOfA?: string | null;
  /** Interface MTU on both hosts (default 1420). */
  mtu?: number;
  /** Host B's Prometheus endpoint ("ip:port" inside its namespace); off when absent. */
  metricsB?: string;
  /** Starts host B's daemon some other way (e.g. unprivileged). */
  startB?: (ns: Netns, configPath: string, dir: ConfigDir) => Promise<DaemonProcess>;
  /** Tunnel addresses and LAN routes for IPv6 too, not only IPv4 (the soak bench pings both). */
  ipv6?: boolean;
  /** Environment added for both daemons (e.g. NODE_ENV=test and a test-only timer). */
  env?: NodeJS.ProcessEnv;
}

/** Runs `fn` with `env` added to process.env (which the daemons' spawn inherits), restoring it afterwards. */
async function withEnv<T>(env: NodeJS.ProcessEnv, fn: () => Promise<T>): Promise<T> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

/** The site-to-site bed, daemons up and a ping through, plus an attacker link to host B. */
export async function hardeningBed(prefix: string, opts: BedOptions = {}): Promise<HardeningBed> {
  const bed = await SiteToSite.create(prefix);
  let atk: Netns | undefined;
  let dir: ConfigDir | undefined;
  const daemons: DaemonProcess[] = [];
  try {
    atk = await Netns.create(`${prefix}x`);
    const atkLink = await linkNamespaces(bed.tb, atk, `${ATTACK.target}/24`, `${ATTACK.attacker}/24`);
    dir = await ConfigDir.create();
    const [a, b] = [makeKeyPair(), makeKeyPair()];
    const psk = opts.presharedKey;
    const v6 = opts.ipv6 === true;
    const hostA: HostSpec = {
      interfaceName: `${prefix}a0`,
      privateKey: a.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.taTun.v4}/24`, ...(v6 ? [`${ADDR.taTun.v6}/64`] : [])],
      ...(opts.mtu ? { mtu: opts.mtu } : {}),
      peers: [
        {
          name: 'b',
          publicKey: b.publicKey,
          endpoint: opts.endpointOfB ?? `${ADDR.tbUnder.v4}:51820`,
          allowedIPs: [`${ADDR.tbTun.v4}/32`, ADDR.lanB.v4, ...(v6 ? [`${ADDR.tbTun.v6}/128`, ADDR.lanB.v6] : [])],
          ...(psk ? { presharedKey: psk } : {}),
        },
      ],
    };
    const hostB: HostSpec = {
      interfaceName: `${prefix}b0`,
      privateKey: b.privateKey,
      listenPort: 51820,
      addresses: [`${ADDR.tbTun.v4}/24`, ...(v6 ? [`${ADDR.tbTun.v6}/64`] : [])],
      ...(opts.mtu ? { mtu: opts.mtu } : {}),
      ...(opts.metricsB ? { metricsListen: opts.metricsB } : {}),
      peers: [
        {
          name: 'a',
          publicKey: a.publicKey,
          ...(opts.endpointOfA === null ? {} : { endpoint: opts.endpointOfA ?? `${ADDR.taUnder.v4}:51820` }),
          allowedIPs: [`${ADDR.taTun.v4}/32`, ADDR.lanA.v4, ...(v6 ? [`${ADDR.taTun.v6}/128`, ADDR.lanA.v6] : [])],
          ...(psk ? { presharedKey: psk } : {}),
        },
      ],
    };
    const cfgA = await dir.writeHost('a', hostA);
    const cfgB = await dir.writeHost('b', hostB);
    await opts.beforeDaemons?.(bed, dir);
    const configDir = dir;
    const [da, db] = await withEnv(opts.env ?? {}, async () => {
      const startA = (): Promise<DaemonProcess> => startDaemon(bed.ta, cfgA, opts.extraArgs ?? []);
      const startB = (): Promise<DaemonProcess> => (opts.startB ? opts.startB(bed.tb, cfgB, configDir) : startDaemon(bed.tb, cfgB, opts.extraArgs ?? []));
      if (opts.bFirst) {
        const first = await startB();
        daemons.push(first);
        const second = await startA();
        daemons.push(second);
        return [second, first];
      }
      const first = await startA();
      daemons.push(first);
      const second = await startB();
      daemons.push(second);
      return [first, second];
    });
    await pingUntil(bed.la, ADDR.lb.v4, 15_000);
    const atkNs = atk;
    const result: HardeningBed = {
      bed,
      atk: atkNs,
      atkIf: atkLink.ifB,
      dir: configDir,
      a,
      b,
      hostA,
      hostB,
      cfgA,
      cfgB,
      da,
      db,
      async destroy() {
        // Tests may replace da / db (restarts): stop whatever runs now, so
        // every daemon removes its control socket and interface itself.
        await Promise.all([...new Set([...daemons, result.da, result.db])].map((d) => d.stop()));
        await Promise.all([bed.destroy(), atkNs.destroy()]);
        await configDir.destroy();
      },
    };
    return result;
  } catch (err) {
    await Promise.all(daemons.map((d) => d.stop()));
    await Promise.all([bed.destroy(), atk?.destroy()]);
    await dir?.destroy();
    throw err;
  }
}
