/*
 * TUN offloads (IFF_VNET_HDR): splitting TSO super-packets that the kernel
 * hands us, and coalescing received TCP segments into one super-packet per
 * write (GRO done by us). Pure functions on byte buffers: no N-API, no
 * syscalls, so the same code serves the device and the tests.
 *
 * Every read and write on a TUN device opened with IFF_VNET_HDR starts
 * with a struct virtio_net_hdr (10 bytes, host byte order for a TUN
 * device on a little-endian host; see linux/virtio_net.h).
 *
 *   read:  gso_type NONE: one packet; with NEEDS_CSUM its TCP/UDP checksum
 *          holds only the pseudo-header sum and we complete it.
 *          gso_type TCPV4/TCPV6: a TCP super-packet of up to 64 KiB; we cut
 *          it into gso_size segments with their own IP and TCP headers and
 *          full checksums (tso_begin / tso_next).
 *   write: consecutive segments of one TCP flow in a batch become one
 *          super-packet (gro_plan), written with NEEDS_CSUM and gso_type
 *          TCPV4/TCPV6: the kernel then forwards or receives one packet
 *          instead of dozens, and segments it again only if the next hop
 *          needs that.
 */
#ifndef TUNVPN_OFFLOAD_H
#define TUNVPN_OFFLOAD_H

#include <linux/virtio_net.h>
#include <stddef.h>
#include <stdint.h>

#define VNET_HDR_LEN ((size_t)sizeof(struct virtio_net_hdr))

/* Ones'-complement sum helpers (RFC 1071), in host byte order. */
uint64_t csum_add(const uint8_t *p, size_t n, uint64_t sum);
uint16_t csum_fold(uint64_t sum);

/* Completes the checksum of a gso_type NONE packet read with NEEDS_CSUM.
 * 0 on success, -1 if the header points outside the packet. */
int offload_complete_csum(uint8_t *pkt, size_t len, const struct virtio_net_hdr *h);

/* Cuts a TCP super-packet into segments. */
typedef struct tso_iter {
  const uint8_t *pkt;
  size_t len;
  size_t iph_len;  /* IP header length */
  size_t hdr_len;  /* IP + TCP header length */
  size_t gso_size; /* payload bytes per segment */
  size_t off;      /* next payload byte */
  uint32_t seg;    /* segments produced so far */
  int v6;
} tso_iter;

/* 0: ready to iterate; -1: not a TCP super-packet we can cut. */
int tso_begin(tso_iter *it, const uint8_t *pkt, size_t len, const struct virtio_net_hdr *h);
/* Writes the next segment into out (cap bytes); returns its length, 0 when
 * the packet is exhausted, -1 if the segment does not fit in cap. */
long tso_next(tso_iter *it, uint8_t *out, size_t cap);

/* Coalescing plan for one batch of packets about to be written. */
#define GRO_MAX_FLOWS 16
#define GRO_MAX_SEGS 64

typedef struct gro_unit {
  uint32_t head;  /* index of the first packet */
  uint32_t count; /* packets in the unit; the rest follow through chain[] */
  struct virtio_net_hdr h;
  uint16_t hdr_len; /* IP + TCP header bytes the followers' payloads come after */
} gro_unit;

/*
 * Groups pkts[0..n) into write units, in the order they must be written:
 * consecutive, in-order TCP segments of one flow (same addresses, ports,
 * ACK, IP and TCP options; ACK or ACK|PSH only; equal sizes but a shorter
 * last one; valid checksums) form one unit of at most GRO_MAX_SEGS packets
 * and 65535 bytes; everything else is a unit of one. A unit's head packet
 * is rewritten in place (lengths, IPv4 header checksum, PSH, TCP checksum
 * field = pseudo-header sum) so that head + the followers' payloads is the
 * super-packet. chain[i] is the next packet of i's unit. units must hold n
 * entries. Returns the number of units.
 */
uint32_t gro_plan(uint8_t *const *pkts, const uint32_t *lens, uint32_t n, uint32_t *chain, gro_unit *units);

#endif
