import { PROTOCOL_DROP_REASONS } from '../protocol/device.js';

/**
 * Why a packet was dropped. Stable names: logs, `tunvpn show` and the
 * metrics all use them. The protocol core's reasons are its own list
 * (PROTOCOL_DROP_REASONS); these are the ones the pipeline decides.
 */
export const PIPELINE_DROP_REASONS = [
  // inbound (UDP side): larger than a receive slot, counted by the transport
  'oversized',
  // inbound, after decryption
  'source-not-allowed',
  'bad-inner-packet',
  // outbound (TUN side)
  'no-peer',
  'no-endpoint',
  'bad-ip-version',
  'bad-ip-header',
  'tun-write-failed',
] as const;

export const DROP_REASONS = [...PROTOCOL_DROP_REASONS, ...PIPELINE_DROP_REASONS] as const;

export type DropReason = (typeof DROP_REASONS)[number];

/** One counter per reason, every one present (0 until it happens). */
export type DropCounters = Record<DropReason, number>;

export function newDropCounters(): DropCounters {
  // fromEntries cannot say that every key is there; DROP_REASONS is every key.
  return Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as DropCounters;
}
