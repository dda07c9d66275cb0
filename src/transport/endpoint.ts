import { isIPv4, isIPv6 } from 'node:net';
import { lookup } from 'node:dns/promises';
import { TunvpnError } from '../errors.js';

/** A peer's underlay address: where its datagrams come from and go to. */
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

/** "1.2.3.4:51820" or "[fd00::1]:51820", as wg prints endpoints. */
export function formatEndpoint(e: Endpoint): string {
  return e.family === 6 ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** Resolves a configured host (IP literal or hostname) to an endpoint. */
export async function resolveEndpoint(host: string, port: number): Promise<Endpoint> {
  if (isIPv4(host)) return { address: host, port, family: 4 };
  if (isIPv6(host)) return { address: host, port, family: 6 };
  try {
    const res = await lookup(host, { verbatim: true });
    return { address: res.address, port, family: res.family === 6 ? 6 : 4 };
  } catch (err) {
    throw new EndpointError(`cannot resolve endpoint host "${host}": ${(err as Error).message}`, err);
  }
}
