/**
 * planRoutes' shortcuts (canonical IPv4 text, octet-aligned connected
 * prefixes matched by their leading octets) against the general rule it
 * stands for: every allowed IP in canonical form, minus those a connected
 * prefix covers (cidrCovers on parsed prefixes), once each, in order.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatCidr, parseCidr } from '../src/peers/cidr.js';
import { cidrCovers, planRoutes } from '../src/routing.js';

function reference(addresses: readonly string[], allowed: readonly string[]): string[] {
  const connected = addresses.map((a) => parseCidr(a));
  const out: string[] = [];
  const seen = new Set<string>();
  for (const text of allowed) {
    const cidr = parseCidr(text);
    if (connected.some((c) => cidrCovers(c, cidr))) continue;
    const canonical = formatCidr(cidr);
    if (seen.has(canonical)) continue;
    seen.add(canonical);
    out.push(canonical);
  }
  return out;
}

/** Addresses and prefixes from a few nearby networks, so that coverage is common. */
const octet = fc.constantFrom(0, 1, 10, 100, 128, 255);
const ipv4 = fc.tuple(fc.constantFrom(10, 192), octet, octet, octet).map((o) => o.join('.'));
const prefix = (lengths: number[]): fc.Arbitrary<string> =>
  fc.tuple(ipv4, fc.constantFrom(...lengths)).map(([a, n]) => {
    const c = parseCidr(`${a}/${n}`);
    return formatCidr(c);
  });
const anyLength = Array.from({ length: 33 }, (_, i) => i);
const address = fc.oneof(
  fc.tuple(ipv4, fc.constantFrom(0, 8, 16, 24, 32)).map(([a, n]) => `${a}/${n}`),
  fc.tuple(ipv4, fc.constantFrom(...anyLength)).map(([a, n]) => `${a}/${n}`),
  fc.constantFrom('fd00::1/64', '10.100.0.1/16'),
);
const allowed = fc.oneof(
  prefix([0, 8, 16, 24, 32]),
  prefix(anyLength),
  fc.tuple(ipv4, fc.constantFrom(8, 16, 24, 23)).map(([a, n]) => `${a}/${n}`), // host bits possibly set
  fc.constantFrom('fd00::/64', 'fd00::1/128', '::/0', '10.100.0.2/32'),
);

describe('planRoutes: the shortcuts give the general rule', () => {
  it('for any interface addresses and allowed IPs', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(address, { maxLength: 3 }), fc.array(allowed, { maxLength: 12 }), async (addrs, ips) => {
        expect(await planRoutes(addrs, ips)).toEqual(reference(addrs, ips));
      }),
      { numRuns: 2000 },
    );
  });

  it("leaves a hub's tunnel addresses to the connected route and routes its LANs", async () => {
    const ips = ['10.100.0.2/32', '10.128.0.0/24', '10.100.255.255/32', '10.101.0.0/24', '10.100.0.0/16', '10.100.0.0/15'];
    expect(await planRoutes(['10.100.0.1/16'], ips)).toEqual(['10.128.0.0/24', '10.101.0.0/24', '10.100.0.0/15']);
    expect(await planRoutes(['10.100.0.1/32'], ['10.100.0.1/32', '10.100.0.12/32', '10.100.0.0/24'])).toEqual(['10.100.0.12/32', '10.100.0.0/24']);
  });
});
