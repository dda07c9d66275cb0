/**
 * The environment switches (src/runtime-options.ts): defaults with an
 * empty environment, each switch on its own, test timers only with
 * NODE_ENV=test, and the result frozen (read once, never changed behind
 * the daemon's back).
 */
import { describe, expect, it } from 'vitest';
import { readRuntimeOptions } from '../src/runtime-options.js';

describe('readRuntimeOptions', () => {
  it('defaults: offloads, native UDP with GRO, warm-up, /run/tunvpn, no test timers', () => {
    expect(readRuntimeOptions({})).toEqual({
      tunOffload: true,
      udpDgram: false,
      udpGro: true,
      warmup: true,
      warmupPipeline: true,
      stateDir: '/run/tunvpn',
      testTimers: undefined,
    });
  });

  it('reads each switch from the environment it is given', () => {
    const o = readRuntimeOptions({ TUNVPN_TUN_OFFLOAD: 'off', TUNVPN_UDP: 'dgram', TUNVPN_UDP_GRO: 'off', TUNVPN_WARMUP: 'off', TUNVPN_STATE_DIR: '/tmp/st' });
    expect(o).toEqual({ tunOffload: false, udpDgram: true, udpGro: false, warmup: false, warmupPipeline: false, stateDir: '/tmp/st', testTimers: undefined });
    // Only the documented values switch: anything else keeps the default.
    expect(readRuntimeOptions({ TUNVPN_TUN_OFFLOAD: '0', TUNVPN_UDP: 'native', TUNVPN_UDP_GRO: '0', TUNVPN_WARMUP: 'no' })).toMatchObject({
      tunOffload: true,
      udpDgram: false,
      udpGro: true,
      warmup: true,
      warmupPipeline: true,
    });
  });

  it('TUNVPN_WARMUP=protocol keeps the protocol warm-up and skips the pipeline one', () => {
    expect(readRuntimeOptions({ TUNVPN_WARMUP: 'protocol' })).toMatchObject({ warmup: true, warmupPipeline: false });
    expect(readRuntimeOptions({ TUNVPN_WARMUP: 'off' })).toMatchObject({ warmup: false, warmupPipeline: false });
  });

  it('test timers only with NODE_ENV=test and a positive TUNVPN_TEST_REKEY_AFTER_TIME_MS', () => {
    expect(readRuntimeOptions({ TUNVPN_TEST_REKEY_AFTER_TIME_MS: '4000' }).testTimers).toBeUndefined();
    expect(readRuntimeOptions({ NODE_ENV: 'test', TUNVPN_TEST_REKEY_AFTER_TIME_MS: '-1' }).testTimers).toBeUndefined();
    expect(readRuntimeOptions({ NODE_ENV: 'test', TUNVPN_TEST_REKEY_AFTER_TIME_MS: 'x' }).testTimers).toBeUndefined();
    expect(readRuntimeOptions({ NODE_ENV: 'test', TUNVPN_TEST_REKEY_AFTER_TIME_MS: '4000' }).testTimers).toEqual({
      rekeyAfterTime: 4000,
      rejectAfterTime: 6000,
      rekeyAttemptTime: 3000,
      rekeyTimeout: 1000,
    });
    expect(readRuntimeOptions({ NODE_ENV: 'test', TUNVPN_TEST_REKEY_AFTER_TIME_MS: '60000' }).testTimers?.rekeyTimeout).toBe(5000);
  });

  it('is frozen, and a later change of the environment does not reach it', () => {
    const env: NodeJS.ProcessEnv = { NODE_ENV: 'test', TUNVPN_TEST_REKEY_AFTER_TIME_MS: '4000' };
    const o = readRuntimeOptions(env);
    env.TUNVPN_UDP = 'dgram';
    expect(o.udpDgram).toBe(false);
    expect(Object.isFrozen(o)).toBe(true);
    expect(Object.isFrozen(o.testTimers)).toBe(true);
  });
});
