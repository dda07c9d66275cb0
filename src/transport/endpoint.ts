import { isIPv4, isIPv6 } from 'node:net';
import { lookup } from 'node:dns/promises';
import { TunvpnError } from '../errors.js';

/**
 * A peer's underlay address: where its datagrams come from and go to. An
 * IPv6 link-local address carries its zone (`fe80::1%eth0`, or the
 * interface index `fe80::1%2`): without one the kernel cannot tell which
 * link to send on.
 */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export class EndpointError extends TunvpnError {
  constructor(message: string, cause?: unknown) {
    super('ENDPOINT_UNRESOLVED', message, { cause });
  }
}

/** "1.2.3.4:51820", "[fd00::1]:51820" or "[fe80::1%eth0]:51820", as wg prints endpoints. */
export function formatEndpoint(e: Endpoint): string {
  return e.family === 6 ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** Whether an IPv6 address (without zone) is link-local unicast, fe80::/10. */
function isLinkLocal6(address: string): boolean {
  const first = address.split(':')[0];
  if (first === '' || first.length > 4) return false;
  return (parseInt(first, 16) & 0xffc0) === 0xfe80;
}

/**
 * What is wrong with an IPv6 zone, or undefined: a Linux interface name
 * (1 to 15 bytes, not "." or "..", no '/', ':', '%', whitespace or control
 * characters: dev_valid_name) or an interface index (1 to 2^32-1).
 */
function zoneProblem(zone: string): string | undefined {
  if (zone.length === 0) return 'the zone after "%" is empty';
  if (/^\d+$/.test(zone)) {
    const n = Number(zone);
    return n >= 1 && n <= 0xffffffff ? undefined : `zone "${zone}" is not an interface index (1 to 4294967295)`;
  }
  if (Buffer.byteLength(zone) > 15) return `zone "${zone}" is longer than 15 bytes (an interface name)`;
  if (zone === '.' || zone === '..' || /[/:%\s\u0000-\u001f\u007f]/.test(zone)) return `zone "${zone}" is not an interface name`;
  return undefined;
}

/**
 * Checks an IPv6 literal that may carry a zone ("fe80::1%eth0"). Returns
 * the reason it is not acceptable as an endpoint host, or undefined. A
 * link-local address needs a zone, and only a link-local address may have
 * one (on any other the kernel ignores it: surely a mistake).
 */
export function ipv6EndpointProblem(host: string): string | undefined {
  const pct = host.indexOf('%');
  const address = pct < 0 ? host : host.slice(0, pct);
  if (!isIPv6(address)) return `"${host}" is not an IPv6 address`;
  const linkLocal = isLinkLocal6(address);
  if (pct < 0) return linkLocal ? `"${host}" is link-local: it needs a zone naming the interface, e.g. [${host}%eth0]` : undefined;
  const problem = zoneProblem(host.slice(pct + 1));
  if (problem !== undefined) return `"${host}": ${problem}`;
  if (!linkLocal) return `"${host}": a zone (%${host.slice(pct + 1)}) belongs only on a link-local (fe80::/10) address`;
  return undefined;
}

/**
 * Resolves a configured host (IP literal, IPv6 with zone, or hostname) to an
 * endpoint. The zone stays in `address` as written: the transport turns
 * it into the scope id (native: getaddrinfo, i.e. if_nametoindex; node:dgram
 * takes `addr%zone` as it is).
 */
export async function resolveEndpoint(host: string, port: number): Promise<Endpoint> {
  if (isIPv4(host)) return { address: host, port, family: 4 };
  if (host.includes(':')) {
    const problem = ipv6EndpointProblem(host);
    if (problem !== undefined) throw new EndpointError(`cannot use endpoint host: ${problem}`);
    return { address: host, port, family: 6 };
  }
  try {
    const res = await lookup(host, { verbatim: true });
    return { address: res.address, port, family: res.family === 6 ? 6 : 4 };
  } catch (err) {
    throw new EndpointError(`cannot resolve endpoint host "${host}": ${(err as Error).message}`, err);
  }
}
