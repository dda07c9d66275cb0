/**
 * `npm run fuzz:uapi -- --requests N --seed S [--cli PATH] [--quiet]`:
 * the control-socket differential fuzzer (bench/lib/uapi-differential.ts)
 * for long runs. Same seed, same requests. Prints every divergence as it is
 * found (the request template, both errnos, what differs) and a summary:
 * how many requests both accepted, both refused, and how many each named
 * (deliberate) divergence explained. Exit 1 if anything else diverged.
 *
 * `--cli` runs another build of tunvpn (e.g. an older checkout's
 * dist/src/cli/main.js) against the same wireguard-go. Needs root,
 * /usr/bin/wireguard-go and `ip`.
 */
import { numArg } from './lib/args.js';
import { DifferentialRunner, runGenerated } from './lib/uapi-differential.js';

function strArg(args: readonly string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const requests = numArg(args, '--requests', 2000, 1, 10_000_000);
  const seed = numArg(args, '--seed', 1, 0, 0xffffffff);
  const cli = strArg(args, '--cli');
  const quiet = args.includes('--quiet');
  const byKind: Record<string, number> = {};
  const runner = await DifferentialRunner.create({ cli }, (d, i) => {
    byKind[d.kind] = (byKind[d.kind] ?? 0) + 1;
    if (!quiet)
      console.log(`#${i} ${d.kind}: tunvpn errno=${d.tvErrno} wireguard-go errno=${d.wgErrno}\n  request: ${JSON.stringify(d.request)}\n  ${d.detail}`);
  });
  let summary;
  try {
    summary = await runGenerated(runner, requests, seed, (done) =>
      console.error(`... ${done} requests, ${runner.summary.divergences.length} divergences, ${Math.round(runner.summary.ms / 1000)} s`),
    );
  } finally {
    await runner.close();
  }
  const { divergences, ms, ...rest } = summary;
  console.log(JSON.stringify({ seed, seconds: Math.round(ms / 100) / 10, ...rest, divergences: divergences.length, divergencesByKind: byKind }, null, 2));
  return divergences.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
