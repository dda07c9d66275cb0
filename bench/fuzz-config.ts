/**
 * `npm run fuzz:config -- --cases N --seed S [--case K] [--keep]`: the
 * config fuzzer (bench/lib/config-fuzz.ts) against the compiled
 * `tunvpn check`. Prints a summary and every failing case (replay one with
 * --case K and the same seed; --keep leaves the generated files in place).
 * Exits 1 when any case failed.
 */
import { numArg } from './lib/args.js';
import { DEFAULT_LIMITS, fuzzConfig } from './lib/config-fuzz.js';

const args = process.argv.slice(2);
const cases = numArg(args, '--cases', 500, 1, 10_000_000);
const seed = numArg(args, '--seed', 1, 0, 0xffffffff);
const only = args.includes('--case') ? numArg(args, '--case', 0, 0, 10_000_000) : undefined;
const concurrency = numArg(args, '--jobs', 2, 1, 64);
const report = await fuzzConfig({
  cases,
  seed,
  only,
  concurrency,
  keep: args.includes('--keep'),
  limits: {
    timeoutMs: numArg(args, '--timeout-ms', DEFAULT_LIMITS.timeoutMs, 100, 600_000),
    maxRssMb: numArg(args, '--max-rss-mb', DEFAULT_LIMITS.maxRssMb, 16, 65_536),
    heapMb: numArg(args, '--heap-mb', DEFAULT_LIMITS.heapMb, 16, 65_536),
  },
  log: (line) => console.log(line),
});
console.log(
  `fuzz:config seed ${report.seed}: ${report.cases} cases in ${(report.durationMs / 1000).toFixed(1)} s, ` +
    `exit codes ${JSON.stringify(report.exitCodes)}, slowest ${report.maxWallMs.toFixed(0)} ms, peak RSS ${report.maxRssMb.toFixed(0)} MiB, ` +
    `${report.failures.length} failures`,
);
for (const f of report.failures) {
  console.log(
    `\ncase ${f.index} (exit ${f.code}): ${f.what.join('; ')}\n  ${f.problems.join('\n  ')}\n${f.stderr
      .split('\n')
      .slice(0, 8)
      .map((l) => `    | ${l}`)
      .join('\n')}`,
  );
}
if (report.failures.length) console.log(`\nfiles kept in ${report.dir}`);
process.exit(report.failures.length ? 1 : 0);
