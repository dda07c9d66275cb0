/**
 * TUN read benchmark: packets per second read from a TUN device and handed
 * to JavaScript, by our binding (non-blocking fd, uv_poll, batches) against
 * the fs-stream approach (blocking fd read through fs.createReadStream on the
 * libuv thread pool, as the tuntap2 package does), in the same run.
 *
 * Run as root:  npx tsc -p tsconfig.json && node dist/bench/tun-read.js
 * Options:      --seconds N (live window per approach, default 3)
 *               --drain N (packets queued for the drain scenario, default 500000)
 *
 * The outer process creates a fresh network namespace and re-runs itself
 * inside it (`ip netns exec`), because a TUN device belongs to the namespace
 * of the process that creates it. Load comes from a tiny C program compiled
 * on the fly (sendmmsg of small UDP datagrams to an address routed to the
 * TUN), bounded in time and packets. The namespace is deleted in every
 * outcome.
 *
 * Two scenarios, both approaches each: "drain" queues N packets first and
 * times reading them all (the reader's own ceiling, nothing competing for
 * the CPU); "live" runs the sender alongside for a fixed window (on two
 * cores the binding is then bounded by what the sender can offer).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { loadNativeTun } from '../src/tun/native-binding.js';
import * as ip from '../src/tun/iproute.js';
import { TunDevice } from '../src/tun/tun-device.js';
import { deleteNamespace } from '../src/testbed/netns.js';
import { numArg } from './lib/args.js';

const execFileP = promisify(execFile);

const WARMUP_MS = 300;
const MAX_PACKETS = 100_000_000;
const SENDER_C = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* sender DST_IP PORT DURATION_MS MAX_PACKETS: sendmmsg of 16-byte UDP
 * datagrams until the time or packet bound; prints "sent seconds". */
enum { B = 64, LEN = 16 };
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  if (argc < 5) return 2;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); return 1; }
  double dur = atof(argv[3]) / 1000.0;
  unsigned long long max = strtoull(argv[4], 0, 10), sent = 0;
  static char payload[B][LEN];
  struct iovec iov[B];
  struct mmsghdr m[B];
  memset(m, 0, sizeof m);
  for (int i = 0; i < B; i++) {
    memset(payload[i], 0x5a, LEN);
    iov[i].iov_base = payload[i];
    iov[i].iov_len = LEN;
    m[i].msg_hdr.msg_iov = &iov[i];
    m[i].msg_hdr.msg_iovlen = 1;
  }
  double t0 = now(), t = t0;
  while (sent < max && t - t0 < dur) {
    int r = sendmmsg(s, m, B, 0);
    if (r > 0) sent += r;
    else if (r < 0 && errno != ENOBUFS && errno != EAGAIN && errno != EINTR) { perror("sendmmsg"); return 1; }
    t = now();
  }
  printf("%llu %.3f\n", sent, t - t0);
  return 0;
}
`;

interface Result {
  approach: string;
  scenario: 'live' | 'drain';
  packets: number;
  seconds: number;
  pps: number;
  /** live: the rate the sender offered during the run. */
  senderPps?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs the sender to completion; resolves with [packets sent, packets/s]. */
function runSender(bin: string, dst: string, durationMs: number, maxPackets: number): Promise<[number, number]> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [dst, '9', String(durationMs), String(maxPackets)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const guard = setTimeout(() => child.kill('SIGKILL'), durationMs + 10_000);
    child.once('exit', (code) => {
      clearTimeout(guard);
      const [sent, secs] = out.trim().split(/\s+/).map(Number);
      if (code !== 0 || !(secs > 0)) reject(new Error(`sender failed (${code}): ${out}`));
      else resolve([sent, sent / secs]);
    });
  });
}

type Approach = 'binding' | 'fs';
const LABEL: Record<Approach, string> = { binding: 'binding (uv_poll, batches)', fs: 'fs.createReadStream (thread pool)' };

/** A TUN device at `cidr` read by one approach, counting packets delivered to JavaScript. */
interface Reader {
  readonly name: string;
  readonly count: () => number;
  /** Starts reading; `target` resolves with the time the count reached it. */
  start(target: number): Promise<bigint>;
  close(): Promise<void>;
}

async function openReader(approach: Approach, cidr: string, txqueuelen?: number): Promise<Reader> {
  let packets = 0;
  let target = Infinity;
  let reached: (t: bigint) => void = () => undefined;
  const onTarget = new Promise<bigint>((resolve) => (reached = resolve));
  let name: string;
  let startReading: () => void;
  let close: () => Promise<void>;
  if (approach === 'binding') {
    const dev = TunDevice.open({ batchSize: 256 });
    name = dev.name;
    let bytes = 0;
    startReading = () =>
      dev.onPackets((_slots, lengths, count) => {
        // Touch what JavaScript received, as a consumer would.
        for (let i = 0; i < count; i++) bytes += lengths[i];
        packets += count;
        if (packets >= target) {
          target = Infinity;
          reached(process.hrtime.bigint());
        }
      });
    close = async () => {
      dev.close();
      if (packets > 0 && bytes === 0) throw new Error('binding delivered no bytes');
    };
  } else {
    const [fd, n] = loadNativeTun().openFd('', false);
    name = n;
    let stream: ReturnType<typeof createReadStream> | undefined;
    startReading = () => {
      stream = createReadStream('', { fd, highWaterMark: 65536, autoClose: false });
      stream.on('data', () => {
        if (++packets >= target) {
          target = Infinity;
          reached(process.hrtime.bigint());
        }
      });
      stream.on('error', () => undefined);
    };
    close = async () => {
      stream?.destroy();
      // A blocking read is still parked in the thread pool; deleting the
      // interface wakes it with an error so the fd can go.
      await execFileP('ip', ['link', 'del', 'dev', n]).catch(() => undefined);
      await sleep(50);
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
    };
  }
  await ip.addAddress(name, cidr);
  await ip.runIp(['link', 'set', 'dev', name, 'up', ...(txqueuelen ? ['txqueuelen', String(txqueuelen)] : [])]);
  return {
    name,
    count: () => packets,
    start: (t: number) => {
      target = t;
      startReading();
      return onTarget;
    },
    close,
  };
}

/** Sender and reader run together for `seconds`; rate over the window after warm-up. */
async function live(approach: Approach, sender: string, seconds: number, cidr: string, dst: string): Promise<Result> {
  const reader = await openReader(approach, cidr);
  try {
    void reader.start(Infinity);
    const sent = runSender(sender, dst, WARMUP_MS + seconds * 1000 + 300, MAX_PACKETS);
    await sleep(WARMUP_MS);
    const c0 = reader.count();
    const t0 = process.hrtime.bigint();
    await sleep(seconds * 1000);
    const packets = reader.count() - c0;
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const [, senderPps] = await sent;
    return { approach: LABEL[approach], scenario: 'live', packets, seconds: secs, pps: packets / secs, senderPps };
  } finally {
    await reader.close();
  }
}

/**
 * The device queue is filled first (txqueuelen raised to hold it all), then
 * reading starts: the time to drain it is the reader's own ceiling, with no
 * sender competing for the two cores.
 */
async function drain(approach: Approach, sender: string, packets: number, cidr: string, dst: string): Promise<Result> {
  const reader = await openReader(approach, cidr, packets + 1000);
  try {
    const [queued] = await runSender(sender, dst, 10_000, packets);
    await sleep(100);
    const t0 = process.hrtime.bigint();
    const done = reader.start(queued);
    const t1 = await Promise.race([done, sleep(30_000).then(() => undefined)]);
    if (t1 === undefined) throw new Error(`${approach}: drained only ${reader.count()} of ${queued} packets in 30 s`);
    const secs = Number(t1 - t0) / 1e9;
    return { approach: LABEL[approach], scenario: 'drain', packets: queued, seconds: secs, pps: queued / secs };
  } finally {
    await reader.close();
  }
}

async function inner(seconds: number, drainPackets: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tunbench-'));
  const results: Result[] = [];
  try {
    writeFileSync(join(dir, 'sender.c'), SENDER_C);
    execFileSync('cc', ['-O2', '-o', join(dir, 'sender'), join(dir, 'sender.c')]);
    const sender = join(dir, 'sender');
    results.push(await drain('fs', sender, drainPackets, '10.211.0.1/24', '10.211.0.2'));
    results.push(await drain('binding', sender, drainPackets, '10.210.0.1/24', '10.210.0.2'));
    results.push(await live('fs', sender, seconds, '10.213.0.1/24', '10.213.0.2'));
    results.push(await live('binding', sender, seconds, '10.212.0.1/24', '10.212.0.2'));
    process.stdout.write(`RESULT ${JSON.stringify(results)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // A thread-pool read may still be parked on an fs device; do not wait for it.
  process.exit(0);
}

async function outer(seconds: number, drainPackets: number): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (needs network namespaces and /dev/net/tun)');
  const ns = `tbn-${process.pid % 100000}`;
  await execFileP('ip', ['netns', 'add', ns]);
  try {
    await execFileP('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const self = fileURLToPath(import.meta.url);
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, self, '--inner', '--seconds', String(seconds), '--drain', String(drainPackets)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const guard = setTimeout(() => child.kill('SIGKILL'), (2 * seconds + 120) * 1000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearTimeout(guard);
    const line = out.split('\n').find((l) => l.startsWith('RESULT '));
    if (code !== 0 || !line) throw new Error(`benchmark child failed (${code}): ${out}`);
    const results = JSON.parse(line.slice(7)) as Result[];
    const rate = (n: number): string => Math.round(n).toLocaleString('en-US').padStart(11);
    console.log('TUN read, 44-byte IPv4/UDP packets delivered to JavaScript (same run, fresh namespace):');
    for (const scenario of ['drain', 'live'] as const) {
      const fs = results.find((r) => r.scenario === scenario && r.approach === LABEL.fs);
      const binding = results.find((r) => r.scenario === scenario && r.approach === LABEL.binding);
      if (!fs || !binding) continue;
      console.log(
        scenario === 'drain'
          ? `\n[drain] ${drainPackets} packets queued first (txqueuelen raised), then read; reader-limited:`
          : `\n[live] sendmmsg sender running alongside for ${seconds} s (2 cores shared):`,
      );
      for (const r of [fs, binding]) {
        const extra = r.senderPps === undefined ? '' : `; sender offered ${rate(r.senderPps).trim()} pkt/s`;
        console.log(`  ${r.approach.padEnd(36)} ${rate(r.pps)} pkt/s  (${r.packets} in ${r.seconds.toFixed(3)} s${extra})`);
      }
      const ratio = binding.pps / fs.pps;
      const met = ratio >= 20 && binding.pps >= 300_000;
      console.log(`  ratio binding / fs-stream: ${ratio.toFixed(1)}x   targets (>= 20x, >= 300,000 pkt/s): ${met ? 'met' : 'NOT met'}`);
    }
  } finally {
    await deleteNamespace(ns);
  }
}

const args = process.argv.slice(2);
const seconds = numArg(args, '--seconds', 3, 1, 30);
const drainPackets = numArg(args, '--drain', 500_000, 1_000, 1_000_000);
(args.includes('--inner') ? inner(seconds, drainPackets) : outer(seconds, drainPackets)).catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});
