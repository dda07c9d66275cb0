/**
 * Every environment switch the daemon honours, read once (at Daemon.start)
 * into one frozen object, so no module reads process.env behind the
 * config's back and tests can pass their own.
 *
 *   TUNVPN_TUN_OFFLOAD=off  TUN offloads (TSO reads, coalesced writes) off;
 *                           to measure them or rule them out (docs/decisions.md).
 *   TUNVPN_UDP=dgram        the portable node:dgram transport instead of the
 *                           native batched one (tests exercise both).
 *   TUNVPN_UDP_GRO=off      UDP GRO on receive off (native transport); to
 *                           measure it (docs/performance.md).
 *   TUNVPN_WARMUP=off       no warm-up of the packet path at start;
 *   TUNVPN_WARMUP=protocol  the protocol core's only, not the pipeline's
 *                           (to measure the pipeline's: docs/decisions.md).
 *   TUNVPN_STATE_DIR=DIR    where IFNAME.rules.json records the policy rules
 *                           the daemon added (default /run/tunvpn).
 *   NODE_ENV=test with TUNVPN_TEST_REKEY_AFTER_TIME_MS=N
 *                           shortened protocol timers for soak tests (never
 *                           honoured without NODE_ENV=test).
 *
 * Not read here, each through an injectable environment so its tests can
 * pass one: TUNVPN_CONFIG, the default config path (the CLI: src/cli/io.ts,
 * src/config/load.ts); NO_COLOR (`tunvpn show`, src/cli/show.ts); systemd's
 * LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES (src/control/socket-activation.ts).
 * Variables starting TUNVPN_ in bench/ and test/ configure those tools,
 * not the daemon.
 */
import type { ProtocolConstants } from './protocol/constants.js';

export interface RuntimeOptions {
  /** TUN offloads wanted (off with TUNVPN_TUN_OFFLOAD=off). */
  readonly tunOffload: boolean;
  /** Force the node:dgram transport (TUNVPN_UDP=dgram). */
  readonly udpDgram: boolean;
  /** UDP GRO on the native sockets (off with TUNVPN_UDP_GRO=off). */
  readonly udpGro: boolean;
  /** Warm the packet path up at start (off with TUNVPN_WARMUP=off). */
  readonly warmup: boolean;
  /** Warm the pipeline up too, not only the protocol core (off with TUNVPN_WARMUP=off or =protocol). */
  readonly warmupPipeline: boolean;
  /** Directory of the policy-rule record (TUNVPN_STATE_DIR, default /run/tunvpn). */
  readonly stateDir: string;
  /** Shortened protocol timers (NODE_ENV=test and TUNVPN_TEST_REKEY_AFTER_TIME_MS), else undefined. */
  readonly testTimers: Readonly<Partial<ProtocolConstants>> | undefined;
}

/** Reads the switches above from `env`; call once per start. */
export function readRuntimeOptions(env: NodeJS.ProcessEnv = process.env): RuntimeOptions {
  const timers = testTimers(env);
  return Object.freeze({
    tunOffload: env.TUNVPN_TUN_OFFLOAD !== 'off',
    udpDgram: env.TUNVPN_UDP === 'dgram',
    udpGro: env.TUNVPN_UDP_GRO !== 'off',
    warmup: env.TUNVPN_WARMUP !== 'off',
    warmupPipeline: env.TUNVPN_WARMUP !== 'off' && env.TUNVPN_WARMUP !== 'protocol',
    stateDir: env.TUNVPN_STATE_DIR ?? '/run/tunvpn',
    testTimers: timers === undefined ? undefined : Object.freeze(timers),
  });
}

/**
 * Shortened protocol timers for soak tests: only with NODE_ENV=test and
 * TUNVPN_TEST_REKEY_AFTER_TIME_MS; the other timers keep the defaults'
 * ratios to Rekey-After-Time (Reject 1.5x, Rekey-Attempt 0.75x), and
 * Rekey-Timeout is at most a quarter of it so a rekey is not held back.
 */
export function testTimers(env: NodeJS.ProcessEnv): Partial<ProtocolConstants> | undefined {
  const ms = Number(env.TUNVPN_TEST_REKEY_AFTER_TIME_MS);
  if (env.NODE_ENV !== 'test' || !Number.isFinite(ms) || ms <= 0) return undefined;
  return { rekeyAfterTime: ms, rejectAfterTime: ms * 1.5, rekeyAttemptTime: ms * 0.75, rekeyTimeout: Math.min(5_000, ms / 4) };
}
