/**
 * A preload for the daemon under a bench (`--node-args "--import
 * ./dist/bench/lib/stall-preload.js"`): a 1 ms interval timer that logs
 * every turn of the event loop that came more than 12 ms late, with the
 * CPU the process used meanwhile (close to the gap: the daemon's own work,
 * a GC included; far below it: the scheduler ran something else). One
 * line per gap, `MONO_US EPOCH_MS gap MS user MS sys MS`, in
 * `$TUNVPN_STALL_DIR/stall-PID.log` (default: the temp directory); MONO_US
 * is CLOCK_MONOTONIC in microseconds, the clock of a .cpuprofile, so a gap
 * can be matched to the profile's samples. Measurement only: never loaded
 * by the daemon itself.
 */
import { appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const file = join(process.env.TUNVPN_STALL_DIR ?? tmpdir(), `stall-${process.pid}.log`);
const mono = (): number => Number(process.hrtime.bigint() / 1000n);
let last = mono();
let lastCpu = process.cpuUsage();
const stalls: string[] = [];
setInterval(() => {
  const now = mono();
  const gapMs = (now - last) / 1000;
  if (gapMs > 12) {
    const c = process.cpuUsage(lastCpu);
    stalls.push(`${now} ${Date.now()} gap ${gapMs.toFixed(1)} user ${(c.user / 1000).toFixed(1)} sys ${(c.system / 1000).toFixed(1)}`);
  }
  last = now;
  lastCpu = process.cpuUsage();
}, 1).unref();
const flush = (): void => {
  if (stalls.length > 0) appendFileSync(file, `${stalls.splice(0).join('\n')}\n`);
};
setInterval(flush, 500).unref();
process.on('exit', flush);
