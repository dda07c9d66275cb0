/**
 * Implementation constants: values this implementation chose (sizes,
 * periods, slices), not the protocol's (those are in
 * src/protocol/constants.ts and can be overridden per device). Each says
 * why it has its value, so changing one is a decision, not a guess.
 */

/**
 * The daemon's timer tick: the protocol's timers are coarse (seconds), so
 * 100 ms is precise enough and costs nothing measurable when idle.
 */
export const TICK_MS = 100;

/**
 * UDP socket receive and send buffers (SO_RCVBUF/SO_SNDBUF): sized for
 * bursts, so a batch that arrives while the event loop is busy is queued
 * by the kernel instead of dropped. See docs/decisions.md.
 */
export const SOCKET_BUFFER_BYTES = 4 << 20;

/**
 * What a transport data message adds to an inner packet of at most MTU
 * bytes: header 16 (type, receiver index, counter) + padding up to 15 (to
 * a multiple of 16) + Poly1305 tag 16. The largest datagram an MTU makes
 * is MTU + this, and the largest MTU a datagram size allows is that minus
 * this.
 */
export const TRANSPORT_OVERHEAD = 16 + 15 + 16;

/** Labels of at most this many peers go into a change's log line (the counts are always there): the line stays readable for 20,000. */
export const LOGGED_PEERS = 10;

/** Allowed IPs a removed peer gives up per slice: about 1 us each, so about 1 ms between yields to the event loop. */
export const REMOVE_SLICE = 1000;
