/* TUN offloads: see offload.h. */
#include "offload.h"

#include <string.h>

#define IPPROTO_TCP_ 6
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Sums 16-bit words as they lie in memory. The ones'-complement sum does
 * not depend on byte order (RFC 1071), so the folded result stored back
 * with memcpy is right on the wire. 32-bit halves of 64-bit loads are
 * summed because 2^32 and 2^16 are both 1 modulo 0xffff. */
uint64_t csum_add(const uint8_t *p, size_t n, uint64_t sum) {
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    sum += (v & 0xffffffffu) + (v >> 32);
    p += 8;
    n -= 8;
  }
  while (n >= 2) {
    uint16_t v;
    memcpy(&v, p, 2);
    sum += v;
    p += 2;
    n -= 2;
  }
  if (n) {
    uint8_t last[2] = {p[0], 0};
    uint16_t v;
    memcpy(&v, last, 2);
    sum += v;
  }
  return sum;
}

uint16_t csum_fold(uint64_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)sum;
}

static inline void store_csum(uint8_t *at, uint16_t v) { memcpy(at, &v, 2); }

/* Pseudo-header sum: both addresses (adjacent in IPv4 and IPv6 headers),
 * protocol and the transport length, as words in network order. */
static uint64_t pseudo_sum(const uint8_t *ip, int v6, uint32_t l4_len) {
  uint64_t sum = v6 ? csum_add(ip + 8, 32, 0) : csum_add(ip + 12, 8, 0);
  uint8_t tail[4] = {0, IPPROTO_TCP_, (uint8_t)(l4_len >> 8), (uint8_t)l4_len};
  return csum_add(tail, 4, sum);
}

static void ipv4_header_csum(uint8_t *ip, size_t iph) {
  ip[10] = ip[11] = 0;
  store_csum(ip + 10, (uint16_t)~csum_fold(csum_add(ip, iph, 0)));
}

int offload_complete_csum(uint8_t *pkt, size_t len, const struct virtio_net_hdr *h) {
  size_t start = h->csum_start, at = start + h->csum_offset;
  if (start >= len || at + 2 > len) return -1;
  /* The field holds the pseudo-header sum; summing over it completes it. */
  uint16_t c = (uint16_t)~csum_fold(csum_add(pkt + start, len - start, 0));
  if (c == 0 && h->csum_offset == 6) c = 0xffff; /* UDP: 0 means "no checksum" */
  store_csum(pkt + at, c);
  return 0;
}

/* ---------- TSO: cutting super-packets ---------- */

int tso_begin(tso_iter *it, const uint8_t *pkt, size_t len, const struct virtio_net_hdr *h) {
  uint8_t type = h->gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
  size_t iph;
  int v6;
  if (type == VIRTIO_NET_HDR_GSO_TCPV4) {
    if (len < 20 || pkt[0] >> 4 != 4) return -1;
    iph = (size_t)(pkt[0] & 0x0f) * 4;
    if (iph < 20 || pkt[9] != IPPROTO_TCP_) return -1;
    v6 = 0;
  } else if (type == VIRTIO_NET_HDR_GSO_TCPV6) {
    if (len < 40 || pkt[0] >> 4 != 6 || pkt[6] != IPPROTO_TCP_) return -1;
    iph = 40;
    v6 = 1;
  } else {
    return -1;
  }
  if (len < iph + 20) return -1;
  size_t hdr = iph + (size_t)(pkt[iph + 12] >> 4) * 4;
  if (hdr < iph + 20 || hdr >= len || h->gso_size == 0) return -1;
  it->pkt = pkt;
  it->len = len;
  it->iph_len = iph;
  it->hdr_len = hdr;
  it->gso_size = h->gso_size;
  it->off = hdr;
  it->seg = 0;
  it->v6 = v6;
  return 0;
}

long tso_next(tso_iter *it, uint8_t *out, size_t cap) {
  if (it->off >= it->len) return 0;
  size_t payload = it->len - it->off;
  if (payload > it->gso_size) payload = it->gso_size;
  size_t hdr = it->hdr_len, iph = it->iph_len, total = hdr + payload;
  if (total > cap) return -1;
  const uint8_t *in = it->pkt;
  memcpy(out, in, hdr);
  memcpy(out + hdr, in + it->off, payload);
  if (it->v6) {
    put16(out + 4, (uint16_t)(total - 40));
  } else {
    put16(out + 2, (uint16_t)total);
    put16(out + 4, (uint16_t)(get16(in + 4) + it->seg));
    ipv4_header_csum(out, iph);
  }
  uint8_t *tcp = out + iph;
  put32(tcp + 4, get32(in + iph + 4) + (uint32_t)(it->off - hdr));
  int last = it->off + payload == it->len;
  if (!last) tcp[13] &= (uint8_t)~(TCP_FIN | TCP_PSH);
  if (it->seg > 0) tcp[13] &= (uint8_t)~TCP_CWR;
  tcp[16] = tcp[17] = 0;
  uint64_t sum = pseudo_sum(out, it->v6, (uint32_t)(total - iph));
  store_csum(tcp + 16, (uint16_t)~csum_fold(csum_add(tcp, total - iph, sum)));
  it->off += payload;
  it->seg++;
  return (long)total;
}

/* ---------- GRO: coalescing a write batch ---------- */

typedef struct tcp_pkt {
  uint8_t *ip;
  uint32_t len;
  uint32_t iph;     /* IP header length */
  uint32_t hdr;     /* IP + TCP header length */
  uint32_t payload; /* TCP payload bytes */
  uint32_t seq;
  uint8_t flags;
  uint8_t v6;
} tcp_pkt;

typedef struct flow {
  uint32_t head, tail, count;
  uint32_t total;    /* bytes of the super-packet so far (IP header included) */
  uint32_t gso;      /* payload size of every segment but the last */
  uint32_t next_seq; /* sequence number the next segment must carry */
  uint32_t order;    /* when the flow was opened: the write order at the end */
  uint8_t active, ended, psh, verified;
  tcp_pkt first;
} flow;

/* A well-formed TCP packet without IPv4 options or IPv6 extension headers
 * whose IP length matches len: 1, filling t; anything else: 0. */
static int parse_tcp(uint8_t *p, uint32_t len, tcp_pkt *t) {
  if (len < 20) return 0;
  uint8_t ver = p[0] >> 4;
  if (ver == 4) {
    if (len < 40 || p[0] != 0x45 || p[9] != IPPROTO_TCP_ || get16(p + 2) != len) return 0;
    if ((p[6] & 0x3f) != 0 || p[7] != 0) return 0; /* a fragment (MF or an offset) */
    t->iph = 20;
    t->v6 = 0;
  } else if (ver == 6) {
    if (len < 60 || p[6] != IPPROTO_TCP_ || get16(p + 4) + 40u != len) return 0;
    t->iph = 40;
    t->v6 = 1;
  } else {
    return 0;
  }
  uint32_t doff = (uint32_t)(p[t->iph + 12] >> 4) * 4;
  if (doff < 20 || t->iph + doff > len) return 0;
  t->ip = p;
  t->len = len;
  t->hdr = t->iph + doff;
  t->payload = len - t->hdr;
  t->seq = get32(p + t->iph + 4);
  t->flags = p[t->iph + 13];
  return 1;
}

/* Same connection and direction: version, addresses and ports. */
static int same_flow(const tcp_pkt *a, const tcp_pkt *b) {
  if (a->v6 != b->v6) return 0;
  int addr_ok = a->v6 ? memcmp(a->ip + 8, b->ip + 8, 32) == 0 : memcmp(a->ip + 12, b->ip + 12, 8) == 0;
  return addr_ok && memcmp(a->ip + a->iph, b->ip + b->iph, 4) == 0;
}

static int tcp_csum_ok(const tcp_pkt *t) {
  uint32_t l4 = t->len - t->iph;
  return csum_fold(csum_add(t->ip + t->iph, l4, pseudo_sum(t->ip, t->v6, l4))) == 0xffff;
}

/* The merged packet keeps only the head's headers and has its TCP checksum
 * computed anew, so a member's own checksums are checked before it joins:
 * a corrupt packet is written alone and the kernel drops it as usual. */
static int packet_csums_ok(const tcp_pkt *t) {
  if (!t->v6 && csum_fold(csum_add(t->ip, t->iph, 0)) != 0xffff) return 0;
  return tcp_csum_ok(t);
}

static int is_candidate(const tcp_pkt *t) {
  return t->payload > 0 && (t->flags == TCP_ACK || t->flags == (TCP_ACK | TCP_PSH));
}

/* What the kernel's own GRO requires before merging two segments: the same
 * IP fields that do not change per segment, the same ACK, window and TCP
 * options, the next sequence number, no larger than the first segment. */
static int can_join(flow *f, const tcp_pkt *t) {
  const tcp_pkt *h = &f->first;
  if (f->ended || f->count >= GRO_MAX_SEGS || t->hdr != h->hdr || t->seq != f->next_seq) return 0;
  if (t->payload > f->gso || f->total + t->payload > 65535) return 0;
  const uint8_t *a = h->ip, *b = t->ip;
  if (h->v6) {
    if (memcmp(a, b, 4) != 0 || a[7] != b[7]) return 0; /* traffic class, flow label, hop limit */
  } else {
    if (a[1] != b[1] || a[8] != b[8] || (a[6] & 0x40) != (b[6] & 0x40)) return 0; /* TOS, TTL, DF */
  }
  const uint8_t *ta = a + h->iph, *tb = b + t->iph;
  /* ACK (8..11), then data offset, window (14..15); options after 20 */
  if (memcmp(ta + 8, tb + 8, 4) != 0 || ta[12] != tb[12] || memcmp(ta + 14, tb + 14, 2) != 0) return 0;
  if (memcmp(ta + 20, tb + 20, h->hdr - h->iph - 20) != 0) return 0;
  if (!f->verified) {
    if (!packet_csums_ok(h)) return 0;
    f->verified = 1;
  }
  return packet_csums_ok(t);
}

static void emit_single(uint32_t i, gro_unit *units, uint32_t *nunits) {
  gro_unit *u = &units[(*nunits)++];
  memset(u, 0, sizeof *u);
  u->head = i;
  u->count = 1;
}

/* Turns the flow's head into the super-packet's header and emits the unit. */
static void close_flow(flow *f, gro_unit *units, uint32_t *nunits) {
  f->active = 0;
  emit_single(f->head, units, nunits);
  if (f->count == 1) return;
  gro_unit *u = &units[*nunits - 1];
  u->count = f->count;
  tcp_pkt *t = &f->first;
  uint8_t *p = t->ip;
  if (t->v6) {
    put16(p + 4, (uint16_t)(f->total - 40));
  } else {
    put16(p + 2, (uint16_t)f->total);
    ipv4_header_csum(p, t->iph);
  }
  uint8_t *tcp = p + t->iph;
  if (f->psh) tcp[13] |= TCP_PSH;
  /* CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum. */
  store_csum(tcp + 16, csum_fold(pseudo_sum(p, t->v6, f->total - t->iph)));
  u->hdr_len = (uint16_t)t->hdr;
  u->h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  u->h.gso_type = t->v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
  u->h.hdr_len = (uint16_t)t->hdr;
  u->h.gso_size = (uint16_t)f->gso;
  u->h.csum_start = (uint16_t)t->iph;
  u->h.csum_offset = 16;
}

/* A packet parse_tcp turned down that may still be TCP (IPv4 options or a
 * fragment; IPv6 extension headers): closes the open flows between its
 * two hosts, so it cannot overtake segments of its own connection. UDP and
 * ICMP leave them open. */
static void close_flows_between(flow *flows, const uint8_t *p, uint32_t len, gro_unit *units, uint32_t *nunits) {
  int v6;
  if (len >= 20 && p[0] >> 4 == 4 && p[9] == IPPROTO_TCP_) {
    v6 = 0;
  } else if (len >= 40 && p[0] >> 4 == 6 && p[6] != 17 && p[6] != 58) {
    v6 = 1;
  } else {
    return;
  }
  for (int k = 0; k < GRO_MAX_FLOWS; k++) {
    flow *f = &flows[k];
    if (!f->active || f->first.v6 != v6) continue;
    int same = v6 ? memcmp(f->first.ip + 8, p + 8, 32) == 0 : memcmp(f->first.ip + 12, p + 12, 8) == 0;
    if (same) close_flow(f, units, nunits);
  }
}

uint32_t gro_plan(uint8_t *const *pkts, const uint32_t *lens, uint32_t n, uint32_t *chain, gro_unit *units) {
  flow flows[GRO_MAX_FLOWS];
  uint32_t nunits = 0, order = 0;
  memset(flows, 0, sizeof flows);
  for (uint32_t i = 0; i < n; i++) {
    chain[i] = UINT32_MAX;
    tcp_pkt t;
    if (!parse_tcp(pkts[i], lens[i], &t)) {
      close_flows_between(flows, pkts[i], lens[i], units, &nunits);
      emit_single(i, units, &nunits);
      continue;
    }
    flow *f = NULL;
    for (int k = 0; k < GRO_MAX_FLOWS; k++) {
      if (flows[k].active && same_flow(&flows[k].first, &t)) {
        f = &flows[k];
        break;
      }
    }
    int cand = is_candidate(&t);
    if (f && cand && can_join(f, &t)) {
      chain[f->tail] = i;
      f->tail = i;
      f->count++;
      f->total += t.payload;
      f->next_seq += t.payload;
      if (t.payload < f->gso || (t.flags & TCP_PSH)) f->ended = 1;
      if (t.flags & TCP_PSH) f->psh = 1;
      continue;
    }
    /* Anything else of this connection goes after what we hold of it. */
    if (f) close_flow(f, units, &nunits);
    if (!cand) {
      emit_single(i, units, &nunits);
      continue;
    }
    flow *slot = NULL, *oldest = NULL;
    for (int k = 0; k < GRO_MAX_FLOWS; k++) {
      if (!flows[k].active) {
        slot = &flows[k];
        break;
      }
      if (!oldest || flows[k].order < oldest->order) oldest = &flows[k];
    }
    if (!slot) {
      close_flow(oldest, units, &nunits);
      slot = oldest;
    }
    memset(slot, 0, sizeof *slot);
    slot->active = 1;
    slot->head = slot->tail = i;
    slot->count = 1;
    slot->total = t.len;
    slot->gso = t.payload;
    slot->next_seq = t.seq + t.payload;
    slot->order = order++;
    slot->ended = slot->psh = (t.flags & TCP_PSH) ? 1 : 0;
    slot->first = t;
  }
  /* Close what is still open, oldest first. */
  for (;;) {
    flow *oldest = NULL;
    for (int k = 0; k < GRO_MAX_FLOWS; k++)
      if (flows[k].active && (!oldest || flows[k].order < oldest->order)) oldest = &flows[k];
    if (!oldest) break;
    close_flow(oldest, units, &nunits);
  }
  return nunits;
}
