/*
 * libFuzzer harness for src/tun/native/offload.c: the code that reads TSO
 * super-packets from the kernel and coalesces packets that peers sent (and
 * that were authenticated, but are otherwise arbitrary) into GSO writes.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I src/tun/native \
 *     test/fuzz/offload-fuzz.c src/tun/native/offload.c -o /tmp/offload-fuzz
 *   /tmp/offload-fuzz -max_total_time=120 -max_len=70000
 *
 * Input: byte 0 picks the mode. Mode 0: a virtio header (10 bytes) and one
 * packet for tso_begin/tso_next and offload_complete_csum. Mode 1: a batch,
 * each packet prefixed by a 2-byte length, for gro_plan; besides memory
 * safety it checks the plan's invariants: every packet in exactly one
 * unit, units of at most GRO_MAX_SEGS packets and 65535 bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "offload.h"

#define MAX_PKTS 256

static void fuzz_read(const uint8_t *data, size_t size) {
  if (size < VNET_HDR_LEN) return;
  struct virtio_net_hdr h;
  memcpy(&h, data, VNET_HDR_LEN);
  size_t len = size - VNET_HDR_LEN;
  uint8_t *pkt = malloc(len ? len : 1);
  memcpy(pkt, data + VNET_HDR_LEN, len);
  offload_complete_csum(pkt, len, &h);
  tso_iter it;
  if (tso_begin(&it, pkt, len, &h) == 0) {
    uint8_t seg[2048];
    for (int i = 0; i < 70000; i++) {
      long r = tso_next(&it, seg, sizeof seg);
      if (r <= 0) break;
      if ((size_t)r > sizeof seg) abort();
    }
  }
  free(pkt);
}

static void fuzz_coalesce(const uint8_t *data, size_t size) {
  uint8_t *pkts[MAX_PKTS];
  uint32_t lens[MAX_PKTS], chain[MAX_PKTS];
  gro_unit units[MAX_PKTS];
  uint32_t n = 0;
  while (size >= 2 && n < MAX_PKTS) {
    size_t len = (size_t)(data[0] | data[1] << 8);
    data += 2;
    size -= 2;
    if (len > size) len = size;
    pkts[n] = malloc(len ? len : 1); /* own allocation: ASan sees overreads */
    memcpy(pkts[n], data, len);
    lens[n] = (uint32_t)len;
    n++;
    data += len;
    size -= len;
  }
  uint32_t k = gro_plan(pkts, lens, n, chain, units);
  if (k > n) abort();
  uint8_t seen[MAX_PKTS] = {0};
  uint32_t covered = 0;
  for (uint32_t u = 0; u < k; u++) {
    uint32_t count = 0, bytes = 0;
    for (uint32_t i = units[u].head; i != UINT32_MAX; i = chain[i]) {
      if (i >= n || seen[i]) abort();
      seen[i] = 1;
      bytes += i == units[u].head ? lens[i] : lens[i] - units[u].hdr_len;
      count++;
    }
    if (count != units[u].count || count > GRO_MAX_SEGS) abort();
    if (count > 1 && bytes > 65535) abort();
    covered += count;
  }
  if (covered != n) abort();
  for (uint32_t i = 0; i < n; i++) free(pkts[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  if (data[0] & 1) {
    fuzz_coalesce(data + 1, size - 1);
  } else {
    fuzz_read(data + 1, size - 1);
  }
  return 0;
}
