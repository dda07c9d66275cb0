/**
 * src/testbed/proc.ts's per-thread CPU reader (what bench/crypto-workers.ts
 * charges the main thread with): it must see this thread's own busy time,
 * in seconds, and say NaN for a thread that does not exist.
 */
import { describe, expect, it } from 'vitest';
import { cpuSeconds, threadCpuSeconds } from '../../src/testbed/proc.js';

describe('threadCpuSeconds', () => {
  it('counts 300 ms of this (main) thread busy on a CPU as at least 0.2 s, and no more than the whole process', () => {
    const before = threadCpuSeconds(process.pid, process.pid);
    // Busy until the process has had 300 ms of CPU (not of wall time: the machine is shared), 20 s at most.
    const start = process.cpuUsage();
    const deadline = Date.now() + 20_000;
    let used = 0;
    while (used < 300_000 && Date.now() < deadline) {
      const u = process.cpuUsage(start);
      used = u.user + u.system;
    }
    const after = threadCpuSeconds(process.pid, process.pid);
    expect(used).toBeGreaterThanOrEqual(300_000);
    expect(after - before).toBeGreaterThanOrEqual(0.2);
    // One thread's total cannot exceed its process's (all threads), read after it.
    expect(after).toBeLessThanOrEqual(cpuSeconds(process.pid));
  });

  it('is NaN for a thread the process does not have', () => {
    expect(threadCpuSeconds(process.pid, 2 ** 31 - 1)).toBeNaN();
  });
});
