/**
 * Shared by the hardening benchmarks (hardening-garbage.ts, soak.ts): the
 * hardening bed of the tests (src/testbed/hardening.ts: the site-to-site bed
 * with both daemons up and an attacker namespace on host B, the daemon's
 * status through SIGUSR1) with IPv6 too, /proc figures of a process
 * (src/testbed/proc.ts), and the benchmarks' argument and number helpers.
 */
import { ATTACK, hardeningBed, type HardeningBed } from '../src/testbed/hardening.js';

export { ATTACK_FIXTURE, pingCount, status, totalDrops, udpRcvbufErrors, type Status } from '../src/testbed/hardening.js';
export { pidOf, procFigures, type ProcFigures } from '../src/testbed/proc.js';

export const TARGET = ATTACK.target;

export type BenchBed = HardeningBed;

/** Both daemons up (IPv4 and IPv6) and a ping through; `env` goes to both daemons (test-only timers). */
export function benchBed(prefix: string, env: NodeJS.ProcessEnv = {}): Promise<BenchBed> {
  return hardeningBed(prefix, { env, ipv6: true });
}

export function mb(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
}

export function argNumber(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : fallback;
}
