/**
 * Shared pieces of the hardening tests: a site-to-site bed with an attacker
 * namespace hanging off host B, the daemon's status through SIGUSR1, the
 * process figures the tests bound (CPU, RSS, open files), and the hostile
 * UDP sender fixture. The bed, status and /proc readers are in src/testbed/
 * (hardening.ts, proc.ts), shared with the hardening benchmarks; the rest
 * is the tests' own.
 */
import { join } from 'node:path';
import { ATTACK_FIXTURE } from '../../src/testbed/hardening.js';
import type { Netns } from '../helpers/netns.js';

export {
  ATTACK,
  ATTACK_FIXTURE,
  dropDelta,
  hardeningBed,
  pingCount,
  settledStatus,
  status,
  udpRcvbufErrors,
  type BedOptions,
  type HardeningBed,
  type Status,
} from '../../src/testbed/hardening.js';
export { pidOf, procFigures, type ProcFigures } from '../../src/testbed/proc.js';

export const RELAY_FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'hardening', 'lossy-relay.mjs');
export const TUN_WRITER = join(import.meta.dirname, '..', 'fixtures', 'hardening', 'tun-inject.py');

/** The handshake flood: initiations per second, for how long, from which addresses (on the attacker link). */
export const FLOOD_RATE = 2000;
export const FLOOD_SECONDS = 4;
export const FLOOD_SOURCES = Array.from({ length: 50 }, (_, i) => `10.60.2.${10 + i}`);

/** Runs the hostile sender inside `ns`; resolves with its JSON summary. */
export async function attack(ns: Netns, args: string[], timeoutMs = 60_000): Promise<Record<string, number>> {
  const { stdout } = await ns.exec(process.execPath, [ATTACK_FIXTURE, ...args], { timeoutMs });
  return JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as Record<string, number>;
}
