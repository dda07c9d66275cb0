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

// ---- the packet path (src/pipeline, src/transport) ----

/**
 * The most datagrams one sendBatch carries: UIO_MAXIOV, what one sendmmsg
 * takes (MAX_BATCH in udp.c). A TUN batch larger than this (with offload a
 * read can split into more) goes out in several sends.
 */
export const SEND_BATCH_MAX = 1024;

/** The most decrypted packets one TUN writeBatch carries; a larger datagram batch is written in several. */
export const TUN_WRITE_BATCH_MAX = 1024;

/**
 * Datagrams per native receive batch (one recvmmsg): 128 amortises the
 * JS call over enough datagrams at 10 Gbit/s without a slab so large that
 * it falls out of the cache (docs/performance.md).
 */
export const RECV_BATCH_SIZE = 128;

/**
 * What a pipeline slot holds beyond the larger of the MTU and 1500: a
 * transport datagram's 32 bytes of header and tag plus up to 15 of
 * padding, with room to spare, so no MTU the config allows needs a
 * reallocation on the packet path.
 */
export const SLOT_PADDING = 256;

/**
 * Under load when at least this many initiations arrive in one window
 * (about 320/s: a legitimate peer sends one per Rekey-Timeout, and one core
 * completes ~1,400 handshakes/s); stays so for a second after the flood, as
 * wireguard-go does.
 */
export const UNDER_LOAD_INITIATIONS = 32;
export const UNDER_LOAD_WINDOW_MS = 100;
export const UNDER_LOAD_AFTER_MS = 1_000;

/** Failing UDP sends are summarised in the log at most this often (never per packet). */
export const SEND_ERROR_LOG_INTERVAL_MS = 10_000;

/**
 * Packets a peer keeps while it waits for a session (the oldest is dropped
 * beyond): wireguard-go's QueueStagedSize is 128 too.
 */
export const STAGED_PACKETS_MAX = 128;
