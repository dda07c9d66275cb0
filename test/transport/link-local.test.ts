/**
 * Scoped IPv6 link-local endpoints, end to end: two hosts whose only
 * underlay addresses are link-local on one veth, each configured with the
 * other's address and its zone (A by interface name, one with '_' in it,
 * B by interface index). The tunnel carries a ping both ways, with the native transport
 * and with node:dgram (TUNVPN_UDP=dgram); the status record and `wg show`
 * (the control socket's get) show the endpoint with its zone, both as
 * configured and as learned from the peer's packets (roaming). On this IPv6
 * underlay full-size packets are not fragmented (padding stops at the
 * MTU), also after a reload lowers the MTU.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeIntegration, Netns, pingUntil, run, uniqueSuffix, waitForLinkUp } from '../helpers/netns.js';
import { ConfigDir, startDaemon, type DaemonProcess } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, type KeyPairText } from '../helpers/daemon.js';
import { ipv6EndpointProblem, resolveEndpoint } from '../../src/transport/endpoint.js';
import { parseEndpoint } from '../../src/config/formats.js';
import { convertWgQuick } from '../../src/config/wgquick-convert.js';

interface Status {
  peers: { name?: string; endpoint?: string }[];
}

/** IPv6 datagrams the host had to reassemble (a fragmented underlay). */
async function reassemblies(ns: Netns): Promise<number> {
  const { stdout } = await ns.exec('nstat', ['-az', 'Ip6ReasmReqds']);
  return Number(/Ip6ReasmReqds\s+(\d+)/.exec(stdout)?.[1] ?? 'NaN');
}

async function status(d: DaemonProcess): Promise<Status> {
  const from = d.records().length;
  d.signal('SIGUSR1');
  const rec = await d.waitForLog(/^status$/, 5_000, from);
  return rec.status as Status;
}

describe('link-local endpoints: parsing', () => {
  it('accepts a link-local address with an interface name or index as zone, in config and import', async () => {
    expect(parseEndpoint('[fe80::1%eth0]:51820')).toEqual({ host: 'fe80::1%eth0', port: 51820 });
    expect(parseEndpoint('[fe80::1%veth_a.10]:51820')).toEqual({ host: 'fe80::1%veth_a.10', port: 51820 });
    expect(parseEndpoint('[FE80::aa:1%7]:1')).toEqual({ host: 'FE80::aa:1%7', port: 1 });
    expect(await resolveEndpoint('fe80::1%eth0', 51820)).toEqual({ address: 'fe80::1%eth0', port: 51820, family: 6 });
    const key = 'yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=';
    const conv = convertWgQuick(
      `[Interface]\nPrivateKey = ${key}\nListenPort = 1\n[Peer]\nPublicKey = ${key}\nEndpoint = [fe80::2%eth1]:51820\nAllowedIPs = 10.0.0.2/32\n`,
      'wg0',
    );
    expect(conv.config.peers[0].endpoint).toBe('[fe80::2%eth1]:51820');
  });

  it('refuses a missing, empty or malformed zone, and a zone on an address that is not link-local', async () => {
    const cases: [string, RegExp][] = [
      ['[fe80::1]:51820', /link-local: it needs a zone/],
      ['[fe80::1%]:51820', /zone after "%" is empty/],
      ['[fe80::1%a/b]:51820', /not an interface name/],
      ['[fe80::1%a:b]:51820', /not an interface name/],
      ['[fe80::1%0]:51820', /not an interface index/],
      ['[fe80::1%4294967296]:51820', /not an interface index/],
      ['[fe80::1%abcdefghijklmnop]:51820', /longer than 15 bytes/],
      ['[fd00::1%eth0]:51820', /belongs only on a link-local/],
      ['[2001:db8::1%2]:51820', /belongs only on a link-local/],
    ];
    for (const [text, re] of cases) expect(() => parseEndpoint(text), text).toThrow(re);
    expect(ipv6EndpointProblem('fd00::1')).toBeUndefined();
    await expect(resolveEndpoint('fe80::1', 1)).rejects.toThrow(/needs a zone/);
    await expect(resolveEndpoint('fd00::1%eth0', 1)).rejects.toThrow(/link-local/);
    const key = 'yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=';
    expect(() => convertWgQuick(`[Interface]\nPrivateKey = ${key}\nListenPort = 1\n[Peer]\nPublicKey = ${key}\nEndpoint = [fe80::2]:51820\n`, 'wg0')).toThrow(
      /line 6: Endpoint: .*needs a zone/,
    );
  });
});

describeIntegration('link-local endpoints: a tunnel over a link-local-only underlay', ['ping', 'wg', 'nstat'], () => {
  let ta: Netns;
  let tb: Netns;
  let ifA: string;
  let ifB: string;
  let indexB: string;
  let dir: ConfigDir;
  let a: KeyPairText;
  let b: KeyPairText;

  beforeAll(async () => {
    ta = await Netns.create('llta');
    tb = await Netns.create('lltb');
    // Only link-local addresses on the underlay (no IPv4, no global IPv6),
    // and only ours: no address generated from the MAC (addr_gen_mode none).
    for (const ns of [ta, tb]) await ns.exec('sysctl', ['-q', '-w', 'net.ipv6.conf.default.addr_gen_mode=1']);
    // A's end has a name with '_' and '.', legal on Linux but not in node's
    // isIPv6() zone syntax (which the config used to check with).
    const suffix = uniqueSuffix().slice(-4);
    ifA = `ll_${suffix}.a`;
    ifB = `llb${suffix}`;
    await run('ip', ['link', 'add', ifA, 'netns', ta.name, 'type', 'veth', 'peer', 'name', ifB, 'netns', tb.name]);
    for (const [ns, ifname, addr] of [
      [ta, ifA, 'fe80::a/64'],
      [tb, ifB, 'fe80::b/64'],
    ] as const) {
      await ns.exec('ip', ['-6', 'addr', 'add', addr, 'dev', ifname, 'nodad']);
      await ns.exec('ip', ['link', 'set', ifname, 'up']);
    }
    await waitForLinkUp(ta, ifA);
    await waitForLinkUp(tb, ifB);
    const { stdout } = await tb.exec('ip', ['-o', 'link', 'show', ifB]);
    indexB = stdout.split(':')[0].trim();
    dir = await ConfigDir.create();
    [a, b] = [makeKeyPair(), makeKeyPair()];
  });

  afterAll(async () => {
    await Promise.all([ta?.destroy(), tb?.destroy()]);
    await dir?.destroy();
  });

  for (const transport of ['native', 'dgram'] as const) {
    it(`${transport}: carries a ping both ways; endpoints keep their zone in status and wg show`, async () => {
      // A knows B by interface name; B knows A by interface index at first.
      const cfgA = await dir.writeHost(`a-${transport}`, {
        interfaceName: 'lla0',
        privateKey: a.privateKey,
        listenPort: 51820,
        addresses: ['10.62.9.1/24'],
        peers: [{ name: 'b', publicKey: b.publicKey, endpoint: `[fe80::b%${ifA}]:51820`, allowedIPs: ['10.62.9.2/32'] }],
      });
      const cfgB = await dir.writeHost(`b-${transport}`, {
        interfaceName: 'llb0',
        privateKey: b.privateKey,
        listenPort: 51821,
        addresses: ['10.62.9.2/24'],
        peers: [{ name: 'a', publicKey: a.publicKey, endpoint: `[fe80::a%${indexB}]:51820`, allowedIPs: ['10.62.9.1/32'] }],
      });
      // B listens on 51821 so that A must learn B's real port from B's packets.
      const daemons: DaemonProcess[] = [];
      if (transport === 'dgram') process.env.TUNVPN_UDP = 'dgram';
      try {
        daemons.push(await startDaemon(ta, cfgA), await startDaemon(tb, cfgB));
      } finally {
        delete process.env.TUNVPN_UDP;
      }
      try {
        for (const d of daemons) expect(d.records().find((r) => r.msg === 'UDP transport open')).toMatchObject({ transport });
        expect(await pingUntil(ta, '10.62.9.2', 10_000)).toMatch(/1 received/);
        expect(await pingUntil(tb, '10.62.9.1', 5_000)).toMatch(/1 received/);
        // A's configured port for B was wrong (51820): the endpoint it shows
        // now was learned from B's packets, zone included.
        const sa = await status(daemons[0]);
        expect(sa.peers[0].endpoint).toBe(`[fe80::b%${ifA}]:51821`);
        const sb = await status(daemons[1]);
        expect(sb.peers[0].endpoint).toBe(`[fe80::a%${indexB}]:51820`);
        const { stdout } = await ta.exec('wg', ['show', 'lla0', 'endpoints']);
        expect(stdout).toContain(`[fe80::b%${ifA}]:51821`);

        // Padding never past the MTU, on an IPv6 underlay: a full-size
        // 1420-byte packet leaves as 1452 bytes of UDP payload, exactly a
        // 1500-byte IPv6 datagram; nothing is fragmented.
        const before = await Promise.all([reassemblies(ta), reassemblies(tb)]);
        await ta.exec('ping', ['-n', '-c', '2', '-M', 'do', '-s', String(1420 - 28), '-W', '2', '10.62.9.2']);
        await tb.exec('ping', ['-n', '-c', '2', '-M', 'do', '-s', String(1420 - 28), '-W', '2', '10.62.9.1']);
        expect(await Promise.all([reassemblies(ta), reassemblies(tb)])).toEqual(before);

        // A reload lowers the MTU to 1276 (not a multiple of 16) over a
        // 1276 + 80 underlay: the running session pads by the new MTU, so a
        // full-size packet still fits (by the old one it would take 4 bytes more).
        for (const [ns, ifname] of [
          [ta, ifA],
          [tb, ifB],
        ] as const)
          await ns.exec('ip', ['link', 'set', ifname, 'mtu', String(1276 + 80)]);
        for (const [i, d] of daemons.entries()) {
          const path = i === 0 ? cfgA : cfgB;
          await writeFile(path, (await readFile(path, 'utf8')).replace('"mtu": 1420', '"mtu": 1276'));
          const from = d.records().length;
          d.signal('SIGHUP');
          await d.waitForLog(/configuration reloaded/, 10_000, from);
        }
        const before2 = await Promise.all([reassemblies(ta), reassemblies(tb)]);
        await ta.exec('ping', ['-n', '-c', '2', '-M', 'do', '-s', String(1276 - 28), '-W', '2', '10.62.9.2']);
        await tb.exec('ping', ['-n', '-c', '2', '-M', 'do', '-s', String(1276 - 28), '-W', '2', '10.62.9.1']);
        expect(await Promise.all([reassemblies(ta), reassemblies(tb)])).toEqual(before2);
        for (const [ns, ifname] of [
          [ta, ifA],
          [tb, ifB],
        ] as const)
          await ns.exec('ip', ['link', 'set', ifname, 'mtu', '1500']);
      } finally {
        await Promise.all(daemons.map((d) => d.stop()));
      }
    });
  }
});
