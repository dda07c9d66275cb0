/**
 * The traffic measurements, run from LAN A to LAN B through whatever tunnel
 * the test bed carries: iperf3 TCP (JSON), iperf3 UDP at a capped packet
 * rate (so every run is bounded in packets as well as time), and ping.
 */
import type { ChildProcess } from 'node:child_process';
import type { Netns } from '../../src/testbed/netns.js';
import { sleep } from '../../src/testbed/netns.js';

export interface TcpResult {
  streams: number;
  seconds: number;
  /** Received by the far end (iperf3 end.sum_received). */
  bytes: number;
  mbps: number;
  retransmits: number;
}

export interface UdpResult {
  payload: number;
  seconds: number;
  sent: number;
  lost: number;
  /** Packets per second that reached LAN B. */
  rxPps: number;
  lossPercent: number;
}

export interface PingResult {
  count: number;
  received: number;
  minMs: number;
  avgMs: number;
  maxMs: number;
  mdevMs: number;
}

interface IperfEnd {
  end?: {
    sum_received?: { bytes?: number; seconds?: number; bits_per_second?: number };
    sum_sent?: { retransmits?: number; seconds?: number };
    sum?: { packets?: number; lost_packets?: number; seconds?: number; lost_percent?: number };
  };
  error?: string;
}

/** An iperf3 server in `ns` for the lifetime of one VPN's measurements. */
export class IperfServer {
  private constructor(private readonly child: ChildProcess) {}

  static async start(ns: Netns, bind: string, port: number): Promise<IperfServer> {
    const child = ns.spawn('iperf3', ['-s', '--forceflush', '-B', bind, '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('iperf3 server did not start')), 5_000);
      child.stdout?.on('data', (chunk: Buffer) => {
        if (chunk.toString('utf8').includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`iperf3 server exited ${String(code)}`));
      });
    });
    // Drain its output so a long run never blocks on a full pipe.
    child.stdout?.resume();
    child.stderr?.resume();
    return new IperfServer(child);
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

async function iperf(ns: Netns, args: string[], seconds: number): Promise<IperfEnd> {
  let stdout: string;
  try {
    ({ stdout } = await ns.exec('iperf3', [...args, '-J'], { timeoutMs: (seconds + 15) * 1000 }));
  } catch (err) {
    // iperf3 -J exits non-zero with its error inside the JSON.
    stdout = String((err as { stdout?: string }).stdout ?? '');
    if (!stdout) throw err;
  }
  const json = JSON.parse(stdout) as IperfEnd;
  if (json.error) throw new Error(`iperf3 ${args.join(' ')}: ${json.error}`);
  return json;
}

export async function tcpThroughput(ns: Netns, dst: string, port: number, streams: number, seconds: number): Promise<TcpResult> {
  const j = await iperf(ns, ['-c', dst, '-p', String(port), '-t', String(seconds), '-P', String(streams)], seconds);
  const rx = j.end?.sum_received ?? {};
  const secs = rx.seconds ?? seconds;
  const bytes = rx.bytes ?? 0;
  return { streams, seconds: secs, bytes, mbps: (bytes * 8) / secs / 1e6, retransmits: j.end?.sum_sent?.retransmits ?? 0 };
}

/** UDP at up to `maxPps` packets per second of `payload` bytes each. */
export async function udpRate(ns: Netns, dst: string, port: number, payload: number, seconds: number, maxPps: number): Promise<UdpResult> {
  const bitsPerSecond = Math.round(maxPps * payload * 8);
  const j = await iperf(ns, ['-c', dst, '-p', String(port), '-u', '-l', String(payload), '-b', String(bitsPerSecond), '-t', String(seconds)], seconds);
  const s = j.end?.sum ?? {};
  const sent = s.packets ?? 0;
  const lost = Math.max(0, s.lost_packets ?? 0);
  const secs = s.seconds ?? seconds;
  return {
    payload,
    seconds: secs,
    sent,
    lost,
    rxPps: (sent - lost) / secs,
    lossPercent: sent > 0 ? (100 * lost) / sent : 100,
  };
}

export async function ping(ns: Netns, dst: string, count: number, intervalS: number): Promise<PingResult> {
  let stdout: string;
  try {
    ({ stdout } = await ns.exec('ping', ['-n', '-q', '-c', String(count), '-i', String(intervalS), '-W', '1', dst], {
      timeoutMs: (count * intervalS + 10) * 1000,
    }));
  } catch (err) {
    stdout = String((err as { stdout?: string }).stdout ?? '');
  }
  const recv = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(stdout);
  return {
    count,
    received: recv ? Number(recv[2]) : 0,
    minMs: rtt ? Number(rtt[1]) : Number.NaN,
    avgMs: rtt ? Number(rtt[2]) : Number.NaN,
    maxMs: rtt ? Number(rtt[3]) : Number.NaN,
    mdevMs: rtt ? Number(rtt[4]) : Number.NaN,
  };
}

/** One TCP run with a ping alongside it, started once the flow is under way. */
export async function tcpWithPing(ns: Netns, dst: string, port: number, streams: number, seconds: number): Promise<{ tcp: TcpResult; ping: PingResult }> {
  const intervalS = 0.1;
  const pingSeconds = Math.max(0.5, seconds - 1);
  const tcpP = tcpThroughput(ns, dst, port, streams, seconds);
  const pingP = sleep(500).then(() => ping(ns, dst, Math.max(3, Math.floor(pingSeconds / intervalS)), intervalS));
  const [tcp, p] = await Promise.all([tcpP, pingP]);
  return { tcp, ping: p };
}
