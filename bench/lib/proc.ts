/**
 * The /proc reader is src/testbed/proc.ts, shared with the tests; these
 * names stay here for the benchmarks that import them from bench/lib.
 */
export { cpuSeconds, resolveDaemonPid, statusMb } from '../../src/testbed/proc.js';
