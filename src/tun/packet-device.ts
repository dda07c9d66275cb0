/**
 * The seam between the pipeline and the TUN side (as wireguard-go's
 * tun.Device): batches of IP packets in, batches out. TunDevice is the
 * real one; test/pipeline/fakes.ts has an in-memory one.
 */

/**
 * One batch read from the device: packet i is slots[i][0..lengths[i]).
 * All three are reused after the handler returns.
 */
export type PacketBatchHandler = (slots: readonly Uint8Array[], lengths: Uint32Array, count: number) => void;

export interface PacketDevice {
  /** Sets the batch handler and starts reading (a later call replaces the handler). */
  onPackets(handler: PacketBatchHandler): void;
  /** Read-side failures after open; reading may stop. */
  onError(handler: (err: Error) => void): void;
  /**
   * Writes packets[i][0..lengths[i]) for i < count in one call and returns
   * how many were written (the rest were dropped: queue full). A failure
   * throws an error whose `written` says how many went before it.
   */
  writeBatch(packets: readonly Uint8Array[], count: number, lengths: Uint32Array): number;
}

/** Packets a failed writeBatch wrote before it threw (0 when the error does not say). */
export function writtenBefore(err: unknown): number {
  if (typeof err === 'object' && err !== null && 'written' in err && typeof err.written === 'number') return err.written;
  return 0;
}
