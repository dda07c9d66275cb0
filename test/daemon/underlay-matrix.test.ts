/**
 * The underlay matrix (issue 12; the test bed of src/testbed/site-to-site.ts): site to site from
 * tunvpn to tunvpn and from tunvpn to Debian's wireguard-go, over every
 * underlay users have:
 *
 *   IPv4 and IPv6 underlays, each with 1500-byte links and with links of
 *   exactly tunnel MTU + WireGuard's overhead (60 / 80 bytes: PPPoE-like),
 *   for tunnel MTU 1420 (the default) and 1280.
 *
 * (IPv6 with 1500-byte links is the exact case for 1420: 7 underlays), and
 * an eighth: IPv4 through a NAT in front of host B, exact links, MTU 1420
 * (the NAT reassembles and refragments, so it is counted too). On each, per
 * peer kind ("cell"): DF pings of the largest inner packet that fits
 * the tunnel, IPv4 and IPv6, both directions, and one byte more refused with
 * the tunnel MTU; TCP both ways over inner IPv4 and IPv6, checked end to end
 * with SHA-256; and the underlay fragmented nothing: IpReasmReqds /
 * Ip6ReasmReqds on the receiving host, IpFragCreates / Ip6FragCreates on the
 * sender, unchanged across the cell.
 *
 * One bed per underlay carries both peer kinds, so the namespaces and host
 * A's daemon are built once: host A runs one tunvpn with two peers, host B
 * runs tunvpn (LAN subnets ADDR) and wireguard-go (ADDR_LAN2) side by side.
 * The two cells of a bed run one after the other (fragment counters are per
 * host, so a cell must have its hosts to itself); BEDS_AT_ONCE beds run
 * concurrently. The wireguard-go cells also carry the interop cases this
 * replaced (each side initiating, with and without a preshared key), spread
 * over the beds. Design, results and timing: docs/hardening.md, "Underlay matrix".
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { counterGrowth, describeIntegration, fragmentCounters, pingUntil, uniqueSuffix, type FragmentCounters, type Netns } from '../helpers/netns.js';
import {
  ADDR,
  ADDR_LAN2,
  ConfigDir,
  SiteToSite,
  exactUnderlayMtu,
  startDaemon,
  type DaemonProcess,
  type UnderlayFamily,
} from '../../src/testbed/site-to-site.js';
import { WireguardGo } from '../../src/testbed/wireguard-go.js';
import { makeKeyPair, tcpTransfer, type TransferResult } from '../helpers/daemon.js';

/**
 * Beds built and exercised at the same time (2 cores, shared with the rest of
 * the suite); TUNVPN_MATRIX_BEDS_AT_ONCE=N to measure other choices.
 */
const BEDS_AT_ONCE = ((n: number) => (Number.isInteger(n) && n >= 1 ? n : 2))(Number(process.env.TUNVPN_MATRIX_BEDS_AT_ONCE));
/** Per TCP transfer (four per cell: two each way). */
const TRANSFER_BYTES = 2 * 1024 * 1024;
/** Generous on a loaded machine (~1 s when it works), and far below what fragmentation costs. */
const TRANSFER_LIMIT_S = 20;
const DF_PINGS = 3;

interface Underlay {
  family: UnderlayFamily;
  linkMtu: number;
  tunnelMtu: number;
  /** Host B behind a NAT (masquerade): only B's side can open the tunnel. */
  nat?: boolean;
}

const UNDERLAYS: Underlay[] = [];
for (const family of ['v4', 'v6'] as const) {
  for (const tunnelMtu of [1420, 1280]) {
    for (const linkMtu of new Set([1500, exactUnderlayMtu(tunnelMtu, family)])) UNDERLAYS.push({ family, linkMtu, tunnelMtu });
  }
}
// The one a home user meets most: IPv4 through a NAT, on a PPPoE-like link that leaves no byte spare.
UNDERLAYS.push({ family: 'v4', linkMtu: exactUnderlayMtu(1420, 'v4'), tunnelMtu: 1420, nat: true });

function underlayName(u: Underlay): string {
  const exact = u.linkMtu === exactUnderlayMtu(u.tunnelMtu, u.family) ? ` = ${u.tunnelMtu}+${u.linkMtu - u.tunnelMtu}` : '';
  return `IP${u.family} underlay${u.nat ? ' through a NAT in front of host B' : ''}, ${u.linkMtu}-byte links${exact}, tunnel MTU ${u.tunnelMtu}`;
}

type Kind = 'tunvpn' | 'wireguard-go';

/** Which interop case a bed's wireguard-go cell carries (the old interop test's four, round robin). */
interface WgVariant {
  initiator: 'tunvpn' | 'wireguard-go';
  psk: boolean;
}

function wgVariant(index: number, u: Underlay): WgVariant {
  const psk = Math.floor(index / 2) % 2 === 1;
  // Behind the NAT only host B's side can start.
  return { initiator: u.nat || index % 2 === 1 ? 'wireguard-go' : 'tunvpn', psk };
}

/** One cell's figures, printed as a table when the file ends. */
interface CellReport {
  /** Position in UNDERLAYS, then the cell: the table is printed in matrix order. */
  order: number;
  underlay: string;
  kind: string;
  pings: string;
  tcp: string;
  fragments: string;
  /** Seconds: the bed's set-up (namespaces, three daemons), and this cell. */
  setup: string;
  cell: string;
}
const reports: CellReport[] = [];

function semaphore(slots: number): { acquire(): Promise<void>; release(): void } {
  let free = slots;
  const waiting: (() => void)[] = [];
  return {
    async acquire() {
      if (free > 0) {
        free--;
        return;
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    },
    release() {
      const next = waiting.shift();
      if (next) next();
      else free++;
    },
  };
}
const beds = semaphore(BEDS_AT_ONCE);

interface PingResult {
  what: string;
  ok: boolean;
  output: string;
}

/** `count` DF pings of `size` bytes of ICMP payload; ok when all are answered. */
async function dfPing(from: Netns, dst: string, size: number, count: number): Promise<PingResult> {
  const what = `${from.name} -> ${dst} -s ${size}`;
  try {
    const { stdout } = await from.exec('ping', ['-n', '-q', '-M', 'do', '-s', String(size), '-c', String(count), '-i', '0.2', '-W', '2', dst], {
      timeoutMs: 15_000,
    });
    return { what, ok: new RegExp(`\\b${count} received`).test(stdout), output: stdout };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { what, ok: false, output: `${e.stdout ?? ''}${e.stderr ?? String(err)}` };
  }
}

/**
 * One byte more than fits: must be refused, by the router in front of the
 * tunnel or by the sender's own path MTU cache, naming the tunnel MTU. This
 * proves the "largest" pings above really were the largest.
 */
async function oversizePing(from: Netns, dst: string, size: number, mtu: number): Promise<PingResult> {
  const what = `${from.name} -> ${dst} -s ${size} (one byte over)`;
  try {
    const { stdout } = await from.exec('ping', ['-n', '-M', 'do', '-s', String(size), '-c', '1', '-W', '2', dst], { timeoutMs: 10_000 });
    return { what, ok: false, output: `answered: ${stdout}` };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    const output = `${e.stdout ?? ''}${e.stderr ?? ''}`;
    return { what, ok: new RegExp(`mtu\\s*[=:]?\\s*${mtu}\\b`, 'i').test(output), output };
  }
}

interface TransferOutcome {
  what: string;
  result?: TransferResult;
  error?: string;
}

async function transfer(from: Netns, to: Netns, addr: string, port: number, what: string): Promise<TransferOutcome> {
  try {
    return { what, result: await tcpTransfer(from, to, addr, port, TRANSFER_BYTES, TRANSFER_LIMIT_S) };
  } catch (err) {
    const e = err as { stderr?: string; message?: string };
    return { what, error: (e.stderr || e.message || String(err)).trim().split('\n').slice(-2).join(' ') };
  }
}

function mbits(r: TransferResult): string {
  return ((r.received * 8) / (r.ms * 1000)).toFixed(0);
}

function nonZero(c: FragmentCounters): string {
  return Object.entries(c)
    .filter(([, v]) => v !== 0)
    .map(([k, v]) => `${k} +${String(v)}`)
    .join(', ');
}

describeIntegration('underlay matrix: tunvpn to tunvpn and to wireguard-go', ['ping', 'nstat', 'nft', 'wireguard-go', 'wg'], () => {
  afterAll(() => {
    if (reports.length === 0) return;
    const rows = [...reports]
      .sort((x, y) => x.order - y.order)
      .map((r) => `| ${r.underlay} | ${r.kind} | ${r.pings} | ${r.tcp} | ${r.fragments} | ${r.setup} | ${r.cell} |`);
    const head = '| underlay | peer | DF pings | TCP Mbit/s (A->B v4, B->A v4, A->B v6, B->A v6) | fragments | bed set-up s | cell s |';
    console.log([head, '|---|---|---|---|---|---|---|', ...rows].join('\n'));
  });

  for (const [index, u] of UNDERLAYS.entries()) {
    const variant = wgVariant(index, u);
    describe.concurrent(underlayName(u), () => {
      let bed: SiteToSite | undefined;
      let dir: ConfigDir | undefined;
      let wg: WireguardGo | undefined;
      const daemons: DaemonProcess[] = [];
      const named = new Map<'A' | 'B', DaemonProcess>();
      const started = (host: 'A' | 'B', d: DaemonProcess): void => {
        daemons.push(d);
        named.set(host, d);
      };
      let aPublicKey = '';
      let aInterface = '';
      const bKeys: Record<Kind, string> = { tunvpn: '', 'wireguard-go': '' };
      let setupSeconds = NaN;

      beforeAll(async () => {
        await beds.acquire();
        const setupStarted = performance.now();
        bed = await SiteToSite.create('mx', { underlayFamily: u.family, underlayMtu: u.linkMtu, secondLan: true, natInFrontOfB: u.nat });
        dir = await ConfigDir.create();
        const [a, b, w] = [makeKeyPair(), makeKeyPair(), makeKeyPair()];
        aPublicKey = a.publicKey;
        bKeys.tunvpn = b.publicKey;
        bKeys['wireguard-go'] = w.publicKey;
        // Through the NAT: host A knows no endpoint for B's side (it learns the NAT's), B's side keeps its mapping open.
        const keepalive = u.nat ? 25 : undefined;
        const presharedKey = variant.psk ? randomBytes(32).toString('base64') : undefined;
        const suffix = uniqueSuffix();
        // Unique names: the control sockets of all of them share /var/run/wireguard.
        aInterface = `mx${suffix}a`;
        const cfgA = await dir.writeHost('a', {
          interfaceName: aInterface,
          privateKey: a.privateKey,
          listenPort: 51820,
          mtu: u.tunnelMtu,
          addresses: [`${ADDR.taTun.v4}/24`, `${ADDR.taTun.v6}/64`, '10.62.1.1/24', 'fd62:1::1/64'],
          peers: [
            {
              name: 'b-tunvpn',
              publicKey: b.publicKey,
              endpoint: u.nat ? undefined : bed.endpoint('b', 51820),
              allowedIPs: [`${ADDR.tbTun.v4}/32`, `${ADDR.tbTun.v6}/128`, ADDR.lanB.v4, ADDR.lanB.v6],
            },
            {
              name: 'b-wireguard-go',
              publicKey: w.publicKey,
              // The side that does not initiate has no endpoint: it learns it from the handshake.
              endpoint: variant.initiator === 'tunvpn' ? bed.endpoint('b', 51821) : undefined,
              allowedIPs: ['10.62.1.2/32', 'fd62:1::2/128', ADDR_LAN2.lanB.v4, ADDR_LAN2.lanB.v6],
              presharedKey,
            },
          ],
        });
        const cfgB = await dir.writeHost('b', {
          interfaceName: `mx${suffix}b`,
          privateKey: b.privateKey,
          listenPort: 51820,
          mtu: u.tunnelMtu,
          addresses: [`${ADDR.tbTun.v4}/24`, `${ADDR.tbTun.v6}/64`],
          peers: [
            {
              name: 'a',
              publicKey: a.publicKey,
              endpoint: bed.endpoint('a', 51820),
              allowedIPs: [`${ADDR.taTun.v4}/32`, `${ADDR.taTun.v6}/128`, ADDR.lanA.v4, ADDR.lanA.v6],
              persistentKeepalive: keepalive,
            },
          ],
        });
        // The side that initiates starts last, so its start-up handshake finds the other listening.
        if (u.nat) started('A', await startDaemon(bed.ta, cfgA));
        // Settled, not Promise.all: what did start is registered for afterAll even if the other fails.
        const settled = await Promise.allSettled([
          startDaemon(bed.tb, cfgB).then((d) => started('B', d)),
          WireguardGo.start(bed.tb, dir, {
            namePrefix: 'mxw',
            privateKey: w.privateKey,
            listenPort: 51821,
            mtu: u.tunnelMtu,
            addresses: ['10.62.1.2/24', 'fd62:1::2/64'],
            peers: [
              {
                publicKey: a.publicKey,
                endpoint: variant.initiator === 'wireguard-go' ? bed.endpoint('a', 51820) : undefined,
                allowedIPs: ['10.62.1.1/32', 'fd62:1::1/128', ADDR_LAN2.lanA.v4, ADDR_LAN2.lanA.v6],
                presharedKey,
                persistentKeepalive: keepalive,
              },
            ],
            routes: [ADDR_LAN2.lanA.v4, ADDR_LAN2.lanA.v6],
          }).then((go) => {
            wg = go;
          }),
        ]);
        for (const r of settled) if (r.status === 'rejected') throw r.reason;
        if (!u.nat) started('A', await startDaemon(bed.ta, cfgA));
        setupSeconds = (performance.now() - setupStarted) / 1000;
      }, 240_000);

      afterAll(async () => {
        try {
          await Promise.all(daemons.map((d) => d.stop()));
          await wg?.stop();
          await bed?.destroy();
          await dir?.destroy();
        } finally {
          beds.release();
        }
      }, 60_000);

      // The bed is what the cells claim: were the MTU or the family not applied, an "exact"
      // cell would quietly test a roomy 1500-byte dual-stack link instead.
      it.sequential(`the underlay is IP${u.family} only, ${u.linkMtu} bytes on every link`, async ({ expect }) => {
        if (!bed) throw new Error('no bed');
        const ends: [Netns, string][] = [
          [bed.ta, bed.underA],
          [bed.tb, bed.underB],
        ];
        if (bed.nat) {
          const { stdout } = await bed.nat.exec('ip', ['-o', 'link', 'show', 'type', 'veth']);
          for (const line of stdout.trim().split('\n')) expect(line).toMatch(new RegExp(`\\bmtu ${u.linkMtu}\\b`));
          expect(stdout.trim().split('\n')).toHaveLength(2);
        }
        for (const [ns, ifname] of ends) {
          const link = await ns.exec('ip', ['-o', 'link', 'show', ifname]);
          expect(link.stdout).toMatch(new RegExp(`\\bmtu ${u.linkMtu}\\b`));
          const { stdout } = await ns.exec('ip', ['-o', 'addr', 'show', 'dev', ifname, 'scope', 'global']);
          expect(/\binet /.test(stdout), `${ifname}: ${stdout}`).toBe(u.family === 'v4');
          expect(/\binet6 /.test(stdout), `${ifname}: ${stdout}`).toBe(u.family === 'v6');
        }
      });

      const cells: [Kind, string][] = [
        ['tunvpn', 'tunvpn <-> tunvpn'],
        ['wireguard-go', `tunvpn <-> wireguard-go (${variant.initiator} initiates, ${variant.psk ? 'with' : 'without'} a preshared key)`],
      ];
      for (const [kind, title] of cells) {
        it.sequential(`${title}: largest DF pings both ways, TCP both ways intact, nothing fragmented`, async ({ expect, onTestFailed }) => {
          // The test's own expect: cells of other beds run at the same time, and the global one would
          // file their soft failures under whichever test ran last.
          if (!bed) throw new Error('no bed');
          onTestFailed(() => {
            const tails = [...named].map(([host, d]) => `tunvpn on host ${host}:\n${d.lines.slice(-15).join('\n')}`);
            console.log(`${underlayName(u)}, ${kind}: last log lines\n${tails.join('\n')}\nwireguard-go:\n${wg?.log.slice(-2000) ?? ''}`);
          });
          const cellStarted = performance.now();
          const { la, lb } = bed;
          const hosts = bed.underlayHosts;
          const hostLabel = (i: number): string => (i === 0 ? 'A' : i === hosts.length - 1 ? 'B' : 'NAT');
          const addrs = kind === 'tunvpn' ? { a: ADDR.la, b: ADDR.lb } : { a: ADDR_LAN2.la, b: ADDR_LAN2.lb };
          const mtu = u.tunnelMtu;

          // The tunnel is up; for wireguard-go, the side the variant names sends first.
          const bFirst = u.nat === true || (kind === 'wireguard-go' && variant.initiator === 'wireguard-go');
          const [first, firstDst, second, secondDst] = bFirst ? [lb, addrs.a.v4, la, addrs.b.v4] : [la, addrs.b.v4, lb, addrs.a.v4];
          expect(await pingUntil(first, firstDst, 15_000)).toMatch(/1 received/);
          expect(await pingUntil(second, secondDst, 5_000)).toMatch(/1 received/);

          const before = await Promise.all(hosts.map((h) => fragmentCounters(h)));

          const pings = await Promise.all([
            dfPing(la, addrs.b.v4, mtu - 28, DF_PINGS),
            dfPing(lb, addrs.a.v4, mtu - 28, DF_PINGS),
            dfPing(la, addrs.b.v6, mtu - 48, DF_PINGS),
            dfPing(lb, addrs.a.v6, mtu - 48, DF_PINGS),
          ]);
          const over = await Promise.all([
            oversizePing(la, addrs.b.v4, mtu - 27, mtu),
            oversizePing(lb, addrs.a.v4, mtu - 27, mtu),
            oversizePing(la, addrs.b.v6, mtu - 47, mtu),
            oversizePing(lb, addrs.a.v6, mtu - 47, mtu),
          ]);
          const transfers = await Promise.all([
            transfer(la, lb, addrs.b.v4, 5101, 'A->B v4'),
            transfer(lb, la, addrs.a.v4, 5102, 'B->A v4'),
            transfer(la, lb, addrs.b.v6, 5103, 'A->B v6'),
            transfer(lb, la, addrs.a.v6, 5104, 'B->A v6'),
          ]);

          const after = await Promise.all(hosts.map((h) => fragmentCounters(h)));
          const growth = Object.fromEntries(hosts.map((_, i) => [hostLabel(i), counterGrowth(before[i], after[i])]));
          const fragText = Object.entries(growth)
            .filter(([, g]) => nonZero(g))
            .map(([host, g]) => `${host}: ${nonZero(g)}`)
            .join('; ');
          reports.push({
            order: index * 2 + (kind === 'tunvpn' ? 0 : 1),
            underlay: underlayName(u),
            kind,
            pings: `${pings.filter((p) => p.ok).length}/4 sizes answered, ${over.filter((p) => p.ok).length}/4 one-over refused`,
            tcp: transfers.map((t) => (t.result ? (t.result.remote === t.result.local ? mbits(t.result) : 'CORRUPT') : 'FAILED')).join(', '),
            fragments: fragText || 'none',
            setup: setupSeconds.toFixed(1),
            cell: ((performance.now() - cellStarted) / 1000).toFixed(1),
          });

          // Soft: a broken cell reports every way it is broken, not just the first.
          for (const p of pings) expect.soft(p.ok, `DF ping ${p.what}: ${p.output}`).toBe(true);
          for (const p of over) expect.soft(p.ok, `oversize ping ${p.what}: ${p.output}`).toBe(true);
          for (const t of transfers) {
            expect.soft(t.error, `TCP ${t.what}`).toBeUndefined();
            if (t.result) {
              expect.soft(t.result.received, `TCP ${t.what} bytes`).toBe(TRANSFER_BYTES);
              expect.soft(t.result.remote, `TCP ${t.what} SHA-256`).toBe(t.result.local);
            }
          }
          const zero: FragmentCounters = { IpReasmReqds: 0, IpFragCreates: 0, Ip6ReasmReqds: 0, Ip6FragCreates: 0 };
          expect.soft(growth, `underlay fragmentation (${fragText})`).toEqual(Object.fromEntries(hosts.map((_, i) => [hostLabel(i), zero])));

          if (u.nat) {
            // Host A learned B's side at the NAT's public address: the tunnel really crossed it.
            const { stdout } = await bed.ta.exec('wg', ['show', aInterface, 'endpoints']);
            const seen = new Map(
              stdout
                .trim()
                .split('\n')
                .map((l) => l.trim().split(/\s+/) as [string, string]),
            );
            expect(seen.get(bKeys[kind]) ?? '').toMatch(new RegExp(`^${ADDR.tbUnder.v4.replace(/\./g, '\\.')}:\\d+$`));
          }

          if (kind === 'wireguard-go') {
            if (!wg) throw new Error('no wireguard-go');
            const handshakes = await wg.latestHandshakes();
            expect(handshakes.get(aPublicKey) ?? 0).toBeGreaterThan(0);
          }
        });
      }
    });
  }
});
