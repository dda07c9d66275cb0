/**
 * The control socket against wireguard-go itself (issue 17): the same set
 * requests go to a real tunvpn daemon and to Debian's wireguard-go, each in
 * its own network namespace, and after every request their errnos, their
 * `get=1` answers (normalised: no times, counters or order) and tunvpn's
 * kernel routes are compared (bench/lib/uapi-differential.ts).
 *
 * First every divergence found so far, replayed as a fixed case (each from
 * the start state); then a bounded seeded run of generated and mutated
 * requests. Deliberate divergences are named in DIVERGENCES and must show
 * up where a case expects them. Long runs: npm run fuzz:uapi -- --requests N --seed S.
 *
 * UAPI_DIFF_CLI=path/to/dist/src/cli/main.js runs the cases against another
 * build (an older checkout, to see them fail); UAPI_DIFF_REQUESTS and
 * UAPI_DIFF_SEED change the generated run.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DIVERGENCES, DifferentialRunner, runGenerated, type Divergence } from '../../bench/lib/uapi-differential.js';
import { describeIntegration } from '../helpers/netns.js';

interface Case {
  name: string;
  /** Request templates, in order, from the start state (PRIV0, port 20000, no peers). */
  requests: string[];
  /** The named divergence each request must be explained by (undefined: none, the two must agree). */
  named?: (string | undefined)[];
}

const CASES: Case[] = [
  {
    name: 'issue 17 item 1: fe80::/64 (the kernel route on our interface) added, dropped, added again, then unrelated sets',
    requests: [
      'public_key={PUB1}\nallowed_ip=fe80::/64\n',
      'public_key={PUB1}\nreplace_allowed_ips=true\n',
      'public_key={PUB1}\nallowed_ip=fe80::/64\n',
      'listen_port=20001\n',
      'public_key={PUB2}\nallowed_ip=10.1.0.0/16\n',
      'public_key={PUB1}\nremove=true\n',
    ],
  },
  {
    name: "issue 17 item 1: allowed IPs inside the interface's own prefixes get no route; the connected route stays",
    requests: [
      'public_key={PUB1}\nallowed_ip=10.77.0.0/24\nallowed_ip=10.77.0.9/32\nallowed_ip=fd77::/64\n',
      'public_key={PUB1}\nreplace_allowed_ips=true\nallowed_ip=10.77.0.0/16\n',
      'replace_peers=true\n',
    ],
  },
  {
    name: "issue 17 item 1: an allowed IP equal to another device's route is refused, nothing changes, later sets work",
    requests: [
      'public_key={PUB2}\nallowed_ip=10.1.0.0/16\n',
      'public_key={PUB1}\nallowed_ip=10.2.0.0/16\nallowed_ip=10.99.0.0/24\n',
      'public_key={PUB1}\nallowed_ip=fd99::/64\n',
      'public_key={PUB1}\nallowed_ip=10.99.0.128/25\n',
      'listen_port=20002\n',
    ],
    named: [undefined, 'route of another device', 'route of another device', undefined, undefined],
  },
  {
    name: 'issue 17 item 2: private_key=K and public_key=pub(K) in one request (the section is ignored)',
    requests: ['private_key={PRIV1}\npublic_key={PUB1}\nallowed_ip=10.1.0.0/16\n', 'public_key={PUB0}\nallowed_ip=10.2.0.0/16\n'],
  },
  {
    name: "issue 17 item 3: private_key set to a peer's private key is refused (no zombie peer), then set back",
    requests: [
      'public_key={PUB1}\nallowed_ip=10.1.0.0/16\nendpoint=127.0.0.1:51820\n',
      'private_key={PRIV1}\n',
      'private_key={PRIV0}\n',
      'public_key={PUB1}\nallowed_ip=10.2.0.0/16\n',
    ],
    named: [undefined, 'private key of a peer', undefined, undefined],
  },
  {
    name: 'issue 17 item 3: the private key of a peer removed earlier in the same request is accepted',
    requests: ['public_key={PUB1}\nallowed_ip=10.1.0.0/16\n', 'replace_peers=true\nprivate_key={PRIV1}\n', 'private_key={PRIV0}\n'],
  },
  {
    name: 'issue 17 item 4: a peer removed and re-added in one request (and after replace_peers) has no endpoint',
    requests: [
      'public_key={PUB1}\nendpoint=127.0.0.1:51820\nallowed_ip=10.1.0.0/16\npersistent_keepalive_interval=25\n',
      'public_key={PUB1}\nremove=true\npublic_key={PUB1}\n',
      'public_key={PUB1}\nendpoint=127.0.0.2:9\npreshared_key={PSK1}\n',
      'replace_peers=true\npublic_key={PUB1}\nallowed_ip=10.2.0.0/16\n',
    ],
  },
  {
    name: 'issue 17 item 5: an allowed_ip before replace_allowed_ips, remove or update_only still takes the prefix from its owner',
    requests: [
      'public_key={PUB1}\nallowed_ip=10.1.0.0/16\nallowed_ip=10.2.0.0/16\nallowed_ip=10.3.0.0/16\n',
      'public_key={PUB2}\nallowed_ip=10.1.0.0/16\nreplace_allowed_ips=true\n',
      'public_key={PUB3}\nallowed_ip=10.2.0.0/16\nremove=true\n',
      'public_key={PUB4}\nallowed_ip=10.3.0.0/16\nupdate_only=true\n',
      'public_key={PUB1}\nallowed_ip=10.4.0.0/16\npublic_key={PUB1}\nupdate_only=true\nallowed_ip=10.5.0.0/16\n',
    ],
  },
  {
    name: 'issue 17 item 6: the port get reports after listen_port=0 can be set again (wg showconf | wg setconf)',
    requests: ['listen_port=0\n', 'listen_port={PORT}\n', 'listen_port={PORT}\npublic_key={PUB1}\nallowed_ip=10.1.0.0/16\n', 'listen_port=20000\n'],
  },
  {
    name: "issue 17 item 7: after private_key=K, the interface's old public key is an ordinary peer",
    requests: ['private_key={PRIV6}\npublic_key={PUB0}\nallowed_ip=10.1.0.0/16\n', 'public_key={PUB6}\nallowed_ip=10.2.0.0/16\n'],
  },
  {
    name: 'issue 17 item 9: numbers with any number of leading zeros',
    requests: [
      'listen_port=000000000000000000000000020001\npublic_key={PUB1}\npersistent_keepalive_interval=0000000000000000000025\nendpoint=127.0.0.1:000000000000000000000000007\n',
      'fwmark=000000000000000000000000\n',
    ],
  },
  {
    name: 'issue 17 item 9: endpoint port 0',
    requests: ['public_key={PUB1}\nendpoint=127.0.0.1:0\n'],
  },
  {
    name: 'issue 17 item 9: endpoints reported in canonical form',
    requests: [
      'public_key={PUB1}\nendpoint=[FD00::A]:9\npublic_key={PUB2}\nendpoint=[0:0::1]:5\npublic_key={PUB3}\nendpoint=[::FFFF:7F00:1]:10\npublic_key={PUB4}\nendpoint=[::ffff:127.0.0.1]:11\n',
    ],
  },
  {
    name: 'issue 17 item 9: allowed_ip=10.0.0.0/08 refused (current Go; Debian wireguard-go is built with Go 1.19)',
    requests: ['public_key={PUB1}\nallowed_ip=10.0.0.0/08\n', 'public_key={PUB1}\nallowed_ip=10.0.0.0/+8\n', 'public_key={PUB1}\nallowed_ip=10.0.0.0/8\n'],
    named: ['Go 1.19 netip', 'Go 1.19 netip', undefined],
  },
  {
    name: 'issue 17 item 9: an all-zero private key (tunvpn cannot run keyless)',
    requests: ['public_key={PUB1}\nallowed_ip=10.1.0.0/16\n', 'private_key={ZERO}\n', 'private_key={ZERO}\nprivate_key={PRIV0}\n'],
    named: [undefined, 'keyless interface', 'keyless interface'],
  },
  {
    name: 'issue 12 item 4: scoped link-local endpoints; a zone naming no interface is EINVAL, also on a dummy section',
    requests: [
      'public_key={PUB1}\nendpoint=[fe80::1%lo]:51820\nallowed_ip=10.1.0.0/16\n',
      'public_key={PUB2}\nallowed_ip=10.2.0.0/16\nendpoint=[fe80::2%nosuch0]:7\n',
      'public_key={PUB3}\nupdate_only=true\nendpoint=[fe80::2%nosuch0]:7\n',
      'public_key={PUB4}\nendpoint=[fe80::3%1]:7\n',
    ],
  },
  {
    name: 'IPv4-mapped IPv6 prefixes, printed with a dotted tail as Go prints them, and routed',
    requests: ['public_key={PUB1}\nallowed_ip=::ffff:10.0.0.0/104\nallowed_ip=::ffff:10.1.2.3/128\n'],
  },
  {
    name: 'issue 16: fwmark is set (SO_MARK on the native sockets), reported by get, cleared by 0, like any field',
    requests: ['fwmark=7\n', 'fwmark=0\npublic_key={PUB1}\n', 'public_key={PUB2}\nallowed_ip=10.1.0.0/16\nfwmark=7\n', 'fwmark=4294967295\n', 'fwmark=00\n'],
  },
  {
    name: 'a port in use is EADDRINUSE on both sides; one that only a later line moves on from is not bound at all',
    requests: ['listen_port=20009\n', 'listen_port=20009\nlisten_port={PORT}\n', 'listen_port=20009\nlisten_port=20001\n'],
    named: [undefined, 'only the final port is bound', 'only the final port is bound'],
  },
  {
    name: "a set body with CRLF line ends (Go's scanner drops the \\r); \\r\\n ends the request",
    requests: ['listen_port=20001\r\n', 'public_key={PUB1}\r\nallowed_ip=10.1.0.0/16\r\n', '\r\n', 'public_key={PUB1}\r\n\r\nallowed_ip=10.2.0.0/16\n'],
  },
  {
    name: 'found by the fuzzer: a request that fails on its last line after adding a route changes nothing',
    requests: [
      'public_key={PUB3}\nallowed_ip=10.1.2.0/24\nendpoint=[fe80::2%nosuch0]:7\n',
      'public_key={PUB3}\nallowed_ip=10.1.2.0/24\nallowed_ip=010.1.2.0/24\n',
    ],
  },
];

const requests = Number(process.env.UAPI_DIFF_REQUESTS ?? 3000);
const seed = Number(process.env.UAPI_DIFF_SEED ?? 17);

describeIntegration('control socket against wireguard-go, request by request (differential)', ['wireguard-go'], () => {
  let runner: DifferentialRunner;

  beforeAll(async () => {
    runner = await DifferentialRunner.create({ cli: process.env.UAPI_DIFF_CLI });
  }, 60_000);

  afterAll(async () => {
    await runner?.close();
  });

  it('names each deliberate divergence once', () => {
    const names = DIVERGENCES.map((d) => d.name);
    expect(new Set(names).size).toBe(names.length);
  });

  it.each(CASES.map((c) => [c.name, c] as const))(
    '%s',
    async (_name, c) => {
      await runner.reset();
      const found: Divergence[] = [];
      const named: (string | undefined)[] = [];
      for (const template of c.requests) {
        const r = await runner.request(template);
        found.push(...(r?.divergences ?? []));
        named.push(r?.named);
      }
      expect(found).toEqual([]);
      expect(named).toEqual(c.named ?? c.requests.map(() => undefined));
    },
    60_000,
  );

  it(`a seeded run of ${requests} generated and mutated requests (seed ${seed}) diverges only where named`, async () => {
    await runner.reset();
    const before = { ...runner.summary, divergences: runner.summary.divergences.length };
    const summary = await runGenerated(runner, requests, seed);
    const found = summary.divergences.slice(before.divergences).map((d) => ({ index: d.index - before.requests, ...d.divergence }));
    expect(found).toEqual([]);
    // The run exercises both paths, not only refusals.
    expect(summary.accepted - before.accepted).toBeGreaterThan(requests / 3);
    expect(summary.bothRefused - before.bothRefused).toBeGreaterThan(requests / 20);
  }, 240_000);
});
