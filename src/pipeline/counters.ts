/**
 * Why a packet was dropped. Stable names: logs, `tunvpn show` and the
 * metrics (later) all use them.
 */
export const DROP_REASONS = [
  // inbound (UDP side), as the protocol core reports them
  'malformed',
  'oversized',
  'unknown-index',
  'unknown-peer',
  'replay',
  'bad-auth',
  'bad-mac',
  'bad-cookie',
  'stale-timestamp',
  'handshake-flood',
  'rate-limited',
  'expired',
  'invalid-key',
  'unexpected-message',
  // inbound, decided by the pipeline
  'source-not-allowed',
  'bad-inner-packet',
  // outbound (TUN side)
  'no-peer',
  'no-endpoint',
  'bad-ip-version',
  'bad-ip-header',
  'queue-full',
  'tun-write-failed',
  'other',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export type DropCounters = Record<DropReason, number>;

export function newDropCounters(): DropCounters {
  const c = {} as Record<string, number>;
  for (const r of DROP_REASONS) c[r] = 0;
  return c as DropCounters;
}
