import { parseCidr, formatCidr, type Cidr } from './peers/cidr.js';

/** True when every address of `inner` lies inside `outer`. */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || outer.bits > inner.bits) return false;
  for (let bit = 0; bit < outer.bits; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if ((outer.bytes[byte] & mask) !== (inner.bytes[byte] & mask)) return false;
  }
  return true;
}

/**
 * The routes the daemon adds through its interface: every peer's allowed
 * IPs, except those already covered by the interface's own addresses (the
 * kernel's connected route reaches them), deduplicated, in canonical form.
 */
export function planRoutes(interfaceAddresses: readonly string[], allowedIPs: readonly string[]): string[] {
  const connected = interfaceAddresses.map((a) => parseCidr(a));
  const seen = new Set<string>();
  const routes: string[] = [];
  for (const text of allowedIPs) {
    const cidr = parseCidr(text);
    if (connected.some((c) => cidrCovers(c, cidr))) continue;
    const canonical = formatCidr(cidr);
    if (seen.has(canonical)) continue;
    seen.add(canonical);
    routes.push(canonical);
  }
  return routes;
}
