/**
 * Loaded with `node --import` in front of a CLI under test: when the
 * process exits, writes its own resource usage (peak RSS, CPU) as one JSON
 * line to the file descriptor named by TUNVPN_RUSAGE_FD. Node has no way to
 * read a child's rusage, and /proc/PID/status is gone once the child has
 * exited; this is exact and costs nothing while the CLI runs.
 */
import { writeSync } from 'node:fs';

const fd = Number(process.env.TUNVPN_RUSAGE_FD);
if (Number.isInteger(fd) && fd > 2) {
  process.on('exit', () => {
    try {
      const u = process.resourceUsage();
      writeSync(fd, `${JSON.stringify({ maxRssKiB: u.maxRSS, userUs: u.userCPUTime, systemUs: u.systemCPUTime })}\n`);
    } catch {
      /* the reader went away: nothing to report to */
    }
  });
}
