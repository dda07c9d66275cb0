/**
 * Why a packet was dropped. Stable names: logs, `tunvpn show` and the
 * metrics (later) all use them.
 */
export const DROP_REASONS = [
  // inbound (UDP side)
  'malformed',
  'unknown-index',
  'replay',
  'bad-auth',
  'bad-mac',
  'stale-timestamp',
  'rate-limited',
  'expired',
  'handshake-failed',
  'source-not-allowed',
  'bad-inner-packet',
  // outbound (TUN side)
  'no-peer',
  'no-endpoint',
  'bad-ip-version',
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

/** Maps a protocol drop code onto a counter, unknown codes to 'other'. */
export function dropReasonOf(code: string): DropReason {
  return (DROP_REASONS as readonly string[]).includes(code) ? (code as DropReason) : 'other';
}
