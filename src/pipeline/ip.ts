/**
 * The few IP header facts the pipeline needs, read straight from packet
 * buffers without allocating.
 */

/** 4, 6, or 0 when the buffer cannot hold the fixed header of its version. */
export function ipVersion(buf: Uint8Array, length: number): 0 | 4 | 6 {
  if (length < 1) return 0;
  const v = buf[0] >> 4;
  if (v === 4 && length >= 20) return 4;
  if (v === 6 && length >= 40) return 6;
  return 0;
}

/**
 * The packet's own length from its header (decrypted plaintext is padded to
 * a multiple of 16, so this trims the padding), or -1 when the header is
 * malformed or claims more bytes than there are.
 */
export function ipPacketLength(buf: Uint8Array, length: number): number {
  const v = ipVersion(buf, length);
  let total: number;
  if (v === 4) {
    const ihl = (buf[0] & 0x0f) * 4;
    total = (buf[2] << 8) | buf[3];
    if (ihl < 20 || total < ihl) return -1;
  } else if (v === 6) {
    total = 40 + ((buf[4] << 8) | buf[5]);
  } else {
    return -1;
  }
  return total <= length ? total : -1;
}
