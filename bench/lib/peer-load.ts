/**
 * Start-up with many peers: a config with N peers (random public keys,
 * distinct /32 allowed IPs inside the interface's own /16, as on a hub that
 * gives every client one address), timed from process spawn to the daemon's
 * "tunvpn up" log line, and its memory once up. wireguard-go loading the
 * same peer set with `wg setconf` is the reference.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Netns, sleep, uniqueSuffix } from '../../src/testbed/netns.js';
import { ConfigDir, DaemonProcess, startDaemon, type KeyPair, type PeerSpec } from '../../src/testbed/site-to-site.js';
import { statusMb } from '../../src/testbed/proc.js';

export interface PeerLoadResult {
  vpn: string;
  peers: number;
  /** Spawn to ready (tunvpn: "tunvpn up" logged; wireguard-go: `wg setconf` done). */
  startMs: number;
  rssMb: number;
  hwmMb: number;
}

/** Peer i's tunnel address inside the interface's own /16 (10.100.0.0/16). */
export function peerAddress(i: number): string {
  const n = i + 2; // .0.0 is the network, .0.1 the interface itself
  return `10.100.${(n >> 8) & 255}.${n & 255}`;
}

function randomPeers(count: number): PeerSpec[] {
  const peers: PeerSpec[] = [];
  for (let i = 0; i < count; i++) {
    peers.push({ name: `p${i}`, publicKey: randomBytes(32).toString('base64'), allowedIPs: [`${peerAddress(i)}/32`] });
  }
  return peers;
}

const SETTLE_MS = 500;

export async function tunvpnPeerLoad(count: number, key: KeyPair): Promise<PeerLoadResult> {
  const ns = await Netns.create('bkl');
  const dir = await ConfigDir.create();
  let proc: DaemonProcess | undefined;
  try {
    const cfg = await dir.writeHost('load', {
      interfaceName: `tvl${uniqueSuffix()}`.slice(0, 15),
      privateKey: key.privateKey,
      listenPort: 51820,
      addresses: ['10.100.0.1/16'],
      peers: randomPeers(count),
    });
    const t0 = Date.now();
    proc = await startDaemon(ns, cfg, [], []);
    const up = proc.records().find((r) => typeof r.msg === 'string' && r.msg.startsWith('tunvpn up'));
    const upAt = typeof up?.time === 'number' ? up.time : Date.now();
    const startMs = upAt - t0;
    await sleep(SETTLE_MS);
    const pid = proc.child.pid ?? -1;
    return { vpn: 'tunvpn', peers: count, startMs, rssMb: statusMb(pid, 'VmRSS'), hwmMb: statusMb(pid, 'VmHWM') };
  } finally {
    await proc?.stop();
    await ns.destroy();
    await dir.destroy();
  }
}

export const WG_ENV = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };

/** A wg(8) config file: the interface's key and port, and each peer's key and allowed IPs. */
export function wgConf(privateKey: string, peers: readonly PeerSpec[]): string {
  const lines = ['[Interface]', `PrivateKey = ${privateKey}`, 'ListenPort = 51820', ''];
  for (const p of peers) lines.push('[Peer]', `PublicKey = ${p.publicKey}`, `AllowedIPs = ${p.allowedIPs.join(', ')}`, '');
  return lines.join('\n');
}

/** wireguard-go (`path`) in the foreground, its device `ifname` in the namespace. */
export function spawnWireguardGo(ns: Netns, path: string, ifname: string): DaemonProcess {
  return new DaemonProcess(ns.spawn(path, ['-f', ifname], { stdio: ['ignore', 'pipe', 'pipe'], env: WG_ENV }));
}

/** Waits until `wg` can talk to the device (10 s at most); `name` is the daemon's name in the error. */
export async function waitForWgDevice(ns: Netns, ifname: string, proc: DaemonProcess, name: string): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const ok = await ns.exec('wg', ['show', ifname, 'listen-port']).then(
      () => true,
      () => false,
    );
    if (ok) return;
    if (!proc.running || Date.now() - t0 > 10_000) throw new Error(`${name} did not come up:\n${proc.lines.join('\n')}`);
    await sleep(20);
  }
}

/** `path` is the wireguard-go binary, `name` its column in the report (e.g. "wireguard-go 0.0.20250522"). */
export async function wireguardGoPeerLoad(count: number, key: KeyPair, path = 'wireguard-go', name = 'wireguard-go'): Promise<PeerLoadResult> {
  const ns = await Netns.create('bkw');
  const dir = await ConfigDir.create();
  let proc: DaemonProcess | undefined;
  try {
    const ifname = `wgl${uniqueSuffix()}`.slice(0, 15);
    const conf = join(dir.path, 'wg.conf');
    await writeFile(conf, wgConf(key.privateKey, randomPeers(count)), { mode: 0o600 });
    const t0 = Date.now();
    proc = spawnWireguardGo(ns, path, ifname);
    await waitForWgDevice(ns, ifname, proc, 'wireguard-go');
    await ns.exec('wg', ['setconf', ifname, conf], { timeoutMs: 60_000 });
    await ns.exec('ip', ['addr', 'add', '10.100.0.1/16', 'dev', ifname]);
    await ns.exec('ip', ['link', 'set', ifname, 'up']);
    const startMs = Date.now() - t0;
    await sleep(SETTLE_MS);
    const pid = proc.child.pid ?? -1;
    return { vpn: name, peers: count, startMs, rssMb: statusMb(pid, 'VmRSS'), hwmMb: statusMb(pid, 'VmHWM') };
  } finally {
    await proc?.stop();
    await ns.destroy();
    await dir.destroy();
  }
}
