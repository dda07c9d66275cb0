/*
 * tunvpn_udp: a batched UDP socket for the tunnel's underlay, as an N-API
 * binding in the style of tunvpn_tun (src/tun/native/tun.c).
 *
 * Receiving is the hot path. The socket is non-blocking and watched by a
 * uv_poll handle on the main loop; on each wakeup one recvmmsg() fills up to
 * batch_size slots of a slab JavaScript allocated once, with the lengths in a
 * Uint32Array and each sender's address in a fixed-size encoding (below) in
 * a Uint8Array, and we make ONE call into JavaScript with the count. If the
 * batch came back full we go round again, a few times at most, so a flood
 * saves epoll round trips but cannot starve the loop (uv_poll is
 * level-triggered: what is left wakes us on the next iteration). Nothing is
 * allocated per datagram on either side.
 *
 * Sending is synchronous: sendBatch() hands a whole batch to one sendmmsg()
 * (the kernel copies the bytes, so the caller may reuse its buffers as soon
 * as the call returns). UDP semantics: EAGAIN (send buffer full) drops the
 * rest of the batch and counts it; any other failure of one datagram
 * (ENETUNREACH, EPERM from a firewall, EMSGSIZE...) is counted with its errno
 * and the batch goes on. Nothing on the send path throws for a network
 * condition.
 *
 * Endpoint encoding (ENDPOINT_SIZE bytes, compared bytewise, so every byte
 * is deterministic):
 *   [0]      family: 4 or 6
 *   [1]      0
 *   [2..3]   port, big-endian
 *   [4..7]   IPv6 scope id, little-endian (0 for IPv4)
 *   [8..23]  address: 4 bytes for IPv4 (rest 0), 16 for IPv6
 * An IPv4-mapped IPv6 address is encoded as IPv4: the IPv6 socket is
 * IPV6_V6ONLY, with a separate IPv4 socket on the same port (as WireGuard).
 *
 * Counters live in a Float64Array JavaScript passes to open(), so reading
 * stats costs no native call.
 *
 * Lifetime is as in tun.c: the poll handle exists only while receiving and
 * holds the external strongly; close() stops it and closes the fd; an env
 * cleanup hook and the external's finalizer do the same on teardown.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "../../native/napi-common.h"

#define MAX_BATCH 1024 /* UIO_MAXIOV: the most one recvmmsg/sendmmsg takes */
#define MAX_ROUNDS 4   /* full receive batches per wakeup before yielding */
#define ENDPOINT_SIZE 24
/* UDP GSO: at most this many segments per send (the kernel's limit is 64
 * before Linux 6.? and 128 after), and at most this much payload (an IP
 * datagram's length field). */
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 65000
/* After the kernel refuses one GSO send (EMSGSIZE, EINVAL, EIO: see send_prepared),
 * this many sendBatch calls go without GSO before it is tried again. */
#define GSO_PAUSE_BATCHES 64
/* A numeric address with an IPv6 %scope suffix. */
#define ADDRESS_MAX (INET6_ADDRSTRLEN + IF_NAMESIZE + 1)

/* Indices into the counters Float64Array. */
enum {
  C_RECEIVED,
  C_SENT,
  C_SEND_ERRORS,
  C_SEND_DROPS,
  C_LAST_SEND_ERRNO,
  C_TRUNCATED,
  C_RECV_ERRORS,
  C_GSO_DATAGRAMS, /* datagrams that left inside GSO sends */
  C_GSO_REFUSED,   /* GSO sends the kernel refused, resent one datagram each */
  C_COUNT
};

typedef struct udp_sock {
  tv_poller pl;
  int fd;
  int family;
  int closed;
  int cleanup_registered;
  napi_ref slab_ref;
  napi_ref lengths_ref;
  napi_ref sources_ref;
  napi_ref counters_ref;
  double *counters;
  /* receive side, set by startReceiving */
  uint8_t *slab;
  size_t slot_size;
  uint32_t *lengths;
  uint8_t *sources;
  uint32_t batch_size;
  struct mmsghdr *rmsgs;
  struct iovec *riov;
  struct sockaddr_storage *rnames;
  /* send side, allocated at open for MAX_BATCH */
  struct mmsghdr *smsgs;
  struct iovec *siov;
  struct sockaddr_storage *snames;
  /* one UDP_SEGMENT control message per send message */
  uint8_t (*scmsg)[CMSG_SPACE(sizeof(uint16_t))];
  /* Datagrams of one destination and size go out as one GSO send; off for
   * good only when the kernel has no UDP GSO at all. */
  int gso;
  /* sendBatch calls left without GSO after a refused GSO send. */
  uint32_t gso_pause;
} udp_sock;

/* ---------- endpoint encoding ---------- */

/* sockaddr -> encoding; IPv4-mapped IPv6 becomes IPv4. */
static void encode_sockaddr(const struct sockaddr_storage *ss, uint8_t *out) {
  memset(out, 0, ENDPOINT_SIZE);
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    out[0] = 4;
    memcpy(out + 2, &a->sin_port, 2);
    memcpy(out + 8, &a->sin_addr, 4);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    memcpy(out + 2, &a->sin6_port, 2);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      out[0] = 4;
      memcpy(out + 8, a->sin6_addr.s6_addr + 12, 4);
    } else {
      uint32_t scope = a->sin6_scope_id;
      out[0] = 6;
      out[4] = scope & 0xff;
      out[5] = (scope >> 8) & 0xff;
      out[6] = (scope >> 16) & 0xff;
      out[7] = (scope >> 24) & 0xff;
      memcpy(out + 8, &a->sin6_addr, 16);
    }
  }
}

/* encoding -> sockaddr; returns its length, or 0 for a malformed encoding. */
static socklen_t decode_sockaddr(const uint8_t *in, struct sockaddr_storage *ss) {
  if (in[0] == 4) {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    memcpy(&a->sin_port, in + 2, 2);
    memcpy(&a->sin_addr, in + 8, 4);
    return sizeof *a;
  }
  if (in[0] == 6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    memset(a, 0, sizeof *a);
    a->sin6_family = AF_INET6;
    memcpy(&a->sin6_port, in + 2, 2);
    a->sin6_scope_id = (uint32_t)in[4] | ((uint32_t)in[5] << 8) | ((uint32_t)in[6] << 16) | ((uint32_t)in[7] << 24);
    memcpy(&a->sin6_addr, in + 8, 16);
    return sizeof *a;
  }
  return 0;
}

/* Parses a numeric address (IPv4, IPv6, IPv6 with %scope) into a sockaddr.
 * Returns 0 or an EAI_* code. */
static int parse_address(const char *address, uint16_t port, int family_hint, struct sockaddr_storage *ss, socklen_t *len) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = family_hint;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  char service[8];
  snprintf(service, sizeof service, "%u", port);
  int rc = getaddrinfo(address, service, &hints, &res);
  if (rc != 0) return rc;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

/* ---------- lifetime ---------- */

static void stop_receiving(udp_sock *s) {
  poller_stop(&s->pl);
  delete_ref(s->pl.env, &s->slab_ref);
  delete_ref(s->pl.env, &s->lengths_ref);
  delete_ref(s->pl.env, &s->sources_ref);
  s->slab = NULL;
  s->lengths = NULL;
  s->sources = NULL;
  free(s->rmsgs);
  free(s->riov);
  free(s->rnames);
  s->rmsgs = NULL;
  s->riov = NULL;
  s->rnames = NULL;
}

static void cleanup_hook(void *arg);

static void close_sock(udp_sock *s) {
  if (s->closed) return;
  s->closed = 1;
  stop_receiving(s);
  poller_destroy_async(&s->pl);
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  /* Counters stay readable after close (final stats); the reference goes
   * with the sock. */
  if (s->cleanup_registered) {
    s->cleanup_registered = 0;
    napi_remove_env_cleanup_hook(s->pl.env, cleanup_hook, s);
  }
}

static void free_sock(udp_sock *s) {
  free(s->smsgs);
  free(s->siov);
  free(s->snames);
  free(s->scmsg);
  free(s);
}

static void cleanup_hook(void *arg) {
  udp_sock *s = arg;
  s->cleanup_registered = 0;
  close_sock(s);
  /* The env is going away: the counters reference must not outlive it. */
  delete_ref(s->pl.env, &s->counters_ref);
  s->counters = NULL;
}

static void finalize_sock(napi_env env, void *data, void *hint) {
  udp_sock *s = data;
  close_sock(s);
  delete_ref(env, &s->counters_ref);
  s->counters = NULL;
  if (s->pl.in_callback) {
    s->pl.free_pending = 1;
  } else {
    free_sock(s);
  }
}

static udp_sock *get_sock(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    throw_type(env, "expected a UDP socket handle");
    return NULL;
  }
  return p;
}

/* ---------- open ---------- */

/* Sets a buffer size; as root the FORCE variant passes net.core.*mem_max. */
static void set_buffer(int fd, int force_opt, int opt, int32_t size) {
  if (size <= 0) return;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof size) == 0) return;
  (void)setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

static int get_buffer(int fd, int opt) {
  int v = 0;
  socklen_t l = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, opt, &v, &l) < 0) return 0;
  return v;
}

/* open(family: 4|6, address: string, port, reusePort, rcvbuf, sndbuf,
 *      counters: Float64Array, gso: boolean)
 *   -> [handle, boundPort, rcvbuf, sndbuf]
 * (buffer sizes as the kernel reports them, i.e. doubled). */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 8) return throw_type(env, "open needs 8 arguments");
  int32_t family = 0, rcvbuf = 0, sndbuf = 0;
  uint32_t port = 0;
  if (napi_get_value_int32(env, argv[0], &family) != napi_ok || (family != 4 && family != 6)) return throw_type(env, "family must be 4 or 6");
  char address[ADDRESS_MAX];
  size_t alen = 0;
  if (napi_get_value_string_utf8(env, argv[1], address, sizeof address, &alen) != napi_ok) return throw_type(env, "address must be a string");
  if (napi_get_value_uint32(env, argv[2], &port) != napi_ok || port > 65535) return throw_type(env, "port must be an integer in 0..65535");
  int reuse = get_bool(env, argv[3]);
  napi_get_value_int32(env, argv[4], &rcvbuf);
  napi_get_value_int32(env, argv[5], &sndbuf);
  napi_typedarray_type ta_type;
  size_t ta_len = 0;
  void *ta_data = NULL;
  if (napi_get_typedarray_info(env, argv[6], &ta_type, &ta_len, &ta_data, NULL, NULL) != napi_ok || ta_type != napi_float64_array || ta_len < C_COUNT)
    return throw_type(env, "counters must be a Float64Array of at least 9 elements");

  struct sockaddr_storage ss;
  socklen_t sslen = 0;
  int af = family == 4 ? AF_INET : AF_INET6;
  int rc = parse_address(alen ? address : (family == 4 ? "0.0.0.0" : "::"), (uint16_t)port, af, &ss, &sslen);
  if (rc != 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "not an IPv%d address: \"%s\"", family, address);
    return throw_code(env, "EINVAL", msg);
  }

  int fd = socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket", NULL);
  int one = 1;
  const char *failed = NULL;
  if (af == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) failed = "setsockopt IPV6_V6ONLY";
  if (!failed && reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) failed = "setsockopt SO_REUSEPORT";
  if (!failed) {
    set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf);
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) failed = "bind";
  }
  if (!failed && getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) failed = "getsockname";
  if (failed) {
    int err = errno;
    close(fd);
    char what[96];
    snprintf(what, sizeof what, "UDP port %u (IPv%d)", port, family);
    return throw_errno(env, err, failed, what);
  }
  uint16_t bound = ntohs(af == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port);

  udp_sock *s = calloc(1, sizeof *s);
  if (s) {
    s->smsgs = calloc(MAX_BATCH, sizeof *s->smsgs);
    s->siov = calloc(MAX_BATCH, sizeof *s->siov);
    s->snames = calloc(MAX_BATCH, sizeof *s->snames);
    s->scmsg = calloc(MAX_BATCH, sizeof *s->scmsg);
  }
  if (!s || !s->smsgs || !s->siov || !s->snames || !s->scmsg) {
    close(fd);
    if (s) free_sock(s);
    return throw_errno(env, ENOMEM, "calloc", NULL);
  }
  for (int i = 0; i < MAX_BATCH; i++) {
    s->smsgs[i].msg_hdr.msg_iov = &s->siov[i];
    s->smsgs[i].msg_hdr.msg_iovlen = 1;
    s->smsgs[i].msg_hdr.msg_name = &s->snames[i];
  }
  s->pl.env = env;
  s->fd = fd;
  s->family = family;
  s->pl.reffed = 1;
  s->gso = get_bool(env, argv[7]);
  s->counters = ta_data;
  memset(s->counters, 0, C_COUNT * sizeof(double));

  napi_value handle, port_val, rcv_val, snd_val, result;
  if (napi_create_external(env, s, finalize_sock, NULL, &handle) != napi_ok) {
    close(fd);
    free_sock(s);
    return NULL;
  }
  napi_create_reference(env, argv[6], 1, &s->counters_ref);
  if (napi_add_env_cleanup_hook(env, cleanup_hook, s) == napi_ok) s->cleanup_registered = 1;
  napi_create_uint32(env, bound, &port_val);
  napi_create_int32(env, get_buffer(fd, SO_RCVBUF), &rcv_val);
  napi_create_int32(env, get_buffer(fd, SO_SNDBUF), &snd_val);
  napi_create_array_with_length(env, 4, &result);
  napi_set_element(env, result, 0, handle);
  napi_set_element(env, result, 1, port_val);
  napi_set_element(env, result, 2, rcv_val);
  napi_set_element(env, result, 3, snd_val);
  return result;
}

/* ---------- receiving ---------- */

static void report_error(udp_sock *s, int err, const char *syscall) {
  napi_env env = s->pl.env;
  napi_value fn = NULL;
  if (!s->pl.on_error) return;
  napi_get_reference_value(env, s->pl.on_error, &fn);
  napi_value error = make_errno_error(env, err, syscall, NULL);
  if (fn) poller_call_js(&s->pl, fn, 1, &error);
}

static void on_poll(uv_poll_t *h, int status, int events);

/* One recvmmsg into the slab. Returns the datagrams delivered into slots
 * (truncated ones are dropped and counted), or -errno. */
static int receive_batch(udp_sock *s, int *full) {
  uint32_t max = s->batch_size;
  for (uint32_t i = 0; i < max; i++) {
    /* The kernel overwrites these per call. */
    s->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    s->rmsgs[i].msg_hdr.msg_flags = 0;
  }
  int r;
  do {
    r = recvmmsg(s->fd, s->rmsgs, max, MSG_DONTWAIT, NULL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  *full = (uint32_t)r == max;
  uint32_t n = 0;
  for (int i = 0; i < r; i++) {
    if (s->rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
      s->counters[C_TRUNCATED]++;
      continue;
    }
    /* Compact so that slots 0..n hold whole datagrams. */
    if (n != (uint32_t)i) memcpy(s->slab + (size_t)n * s->slot_size, s->slab + (size_t)i * s->slot_size, s->rmsgs[i].msg_len);
    s->lengths[n] = s->rmsgs[i].msg_len;
    encode_sockaddr(&s->rnames[i], s->sources + (size_t)n * ENDPOINT_SIZE);
    n++;
  }
  return (int)n;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  udp_sock *s = h->data;
  napi_env env = s->pl.env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  s->pl.in_callback++;

  if (status < 0) {
    /* libuv stops the watcher on POLLERR. For a UDP socket that is a
     * pending socket error (an ICMP error on some kernels/configurations):
     * fetching SO_ERROR clears it, so report it and watch again; anything
     * else is final. */
    int soerr = 0;
    socklen_t l = sizeof soerr;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &l) == 0 && soerr != 0) {
      s->counters[C_RECV_ERRORS]++;
      report_error(s, soerr, "recvmmsg");
      if (!s->closed && s->pl.poll) uv_poll_start(s->pl.poll, UV_READABLE, on_poll);
    } else if (!s->closed && s->pl.poll) {
      report_error(s, -status, "poll");
      stop_receiving(s);
    }
  } else {
    for (int round = 0; round < MAX_ROUNDS && !s->closed && s->pl.poll; round++) {
      int full = 0;
      int n = receive_batch(s, &full);
      if (n < 0) {
        int err = -n;
        if (err == EAGAIN) break;
        /* Soft errors (an ICMP error queued on the socket, ENOMEM): the
         * kernel cleared it by reporting it; go on receiving. */
        s->counters[C_RECV_ERRORS]++;
        report_error(s, err, "recvmmsg");
        break;
      }
      if (n > 0 && s->pl.on_batch) {
        s->counters[C_RECEIVED] += n;
        napi_value fn, count;
        napi_get_reference_value(env, s->pl.on_batch, &fn);
        napi_create_uint32(env, (uint32_t)n, &count);
        poller_call_js(&s->pl, fn, 1, &count);
      }
      if (!full) break;
    }
  }

  s->pl.in_callback--;
  napi_close_handle_scope(env, scope);
  if (s->closed) poller_destroy_async(&s->pl);
  if (s->pl.free_pending && !s->pl.in_callback) free_sock(s);
}

/* startReceiving(handle, slab: ArrayBuffer, slotSize, lengths: Uint32Array,
 *                sources: Uint8Array, batchSize, onBatch(count), onError(err)) */
static napi_value js_start_receiving(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 8) return throw_type(env, "startReceiving needs 8 arguments");
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return NULL;
  if (s->closed) return throw_errno(env, EBADF, "startReceiving", NULL);
  if (s->pl.poll) return throw_errno(env, EALREADY, "startReceiving", NULL);

  void *slab = NULL;
  size_t slab_len = 0;
  if (napi_get_arraybuffer_info(env, argv[1], &slab, &slab_len) != napi_ok) return throw_type(env, "slab must be an ArrayBuffer");
  uint32_t slot_size = 0, batch = 0;
  if (napi_get_value_uint32(env, argv[2], &slot_size) != napi_ok || slot_size == 0) return throw_type(env, "slotSize must be a positive integer");
  napi_typedarray_type t;
  size_t len_len = 0, src_len = 0;
  void *len_data = NULL, *src_data = NULL;
  if (napi_get_typedarray_info(env, argv[3], &t, &len_len, &len_data, NULL, NULL) != napi_ok || t != napi_uint32_array)
    return throw_type(env, "lengths must be a Uint32Array");
  if (napi_get_typedarray_info(env, argv[4], &t, &src_len, &src_data, NULL, NULL) != napi_ok || t != napi_uint8_array)
    return throw_type(env, "sources must be a Uint8Array");
  if (napi_get_value_uint32(env, argv[5], &batch) != napi_ok || batch == 0 || batch > MAX_BATCH)
    return throw_type(env, "batchSize must be an integer in 1..1024");
  if (len_len < batch || src_len < (size_t)batch * ENDPOINT_SIZE || slab_len < (size_t)slot_size * batch)
    return throw_type(env, "slab, lengths or sources too small for batchSize");
  napi_valuetype t1, t2;
  napi_typeof(env, argv[6], &t1);
  napi_typeof(env, argv[7], &t2);
  if (t1 != napi_function || t2 != napi_function) return throw_type(env, "onBatch and onError must be functions");

  struct mmsghdr *msgs = calloc(batch, sizeof *msgs);
  struct iovec *iov = calloc(batch, sizeof *iov);
  struct sockaddr_storage *names = calloc(batch, sizeof *names);
  int rc = (msgs && iov && names) ? poller_start(&s->pl, s->fd, on_poll, s) : -ENOMEM;
  if (rc < 0) {
    free(msgs);
    free(iov);
    free(names);
    return throw_errno(env, -rc, rc == -ENOMEM ? "malloc" : "uv_poll_start", NULL);
  }
  for (uint32_t i = 0; i < batch; i++) {
    iov[i].iov_base = (uint8_t *)slab + (size_t)i * slot_size;
    iov[i].iov_len = slot_size;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &names[i];
  }
  s->rmsgs = msgs;
  s->riov = iov;
  s->rnames = names;
  s->slab = slab;
  s->slot_size = slot_size;
  s->lengths = len_data;
  s->sources = src_data;
  s->batch_size = batch;
  napi_create_reference(env, argv[1], 1, &s->slab_ref);
  napi_create_reference(env, argv[3], 1, &s->lengths_ref);
  napi_create_reference(env, argv[4], 1, &s->sources_ref);
  poller_keep(&s->pl, argv[0], argv[6], argv[7], "tunvpn:NativeUdpSocket");
  return NULL;
}

static napi_value js_set_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_type(env, "setRef(handle, ref)");
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return NULL;
  poller_set_ref(&s->pl, get_bool(env, argv[1]));
  return NULL;
}

/* setMark(handle, mark: uint32): SO_MARK on the socket, so policy rules
 * (`not fwmark M table T`) can keep the tunnel's own datagrams off the
 * tunnel. Takes effect for the next datagram sent: no rebind, sessions and
 * the port stay. Needs CAP_NET_ADMIN (EPERM otherwise); 0 clears it. */
static napi_value js_set_mark(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_type(env, "setMark(handle, mark)");
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return NULL;
  uint32_t mark = 0;
  if (napi_get_value_uint32(env, argv[1], &mark) != napi_ok) return throw_type(env, "mark must be an integer in 0..4294967295");
  if (s->fd < 0) return throw_errno(env, EBADF, "setsockopt SO_MARK", NULL);
  if (setsockopt(s->fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) return throw_errno(env, errno, "setsockopt SO_MARK", NULL);
  return NULL;
}

/* ---------- sending ---------- */

static int get_u8(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  napi_typedarray_type type;
  size_t length = 0;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &type, &length, &p, NULL, NULL) != napi_ok || type != napi_uint8_array) return -1;
  *data = p;
  *len = length;
  return 0;
}

static void count_send_error(udp_sock *s, int err) {
  s->counters[C_SEND_ERRORS]++;
  s->counters[C_LAST_SEND_ERRNO] = err;
}

/* Datagrams in messages [from, to): one per iovec (several under GSO). */
static uint32_t datagrams_in(udp_sock *s, uint32_t from, uint32_t to) {
  uint32_t d = 0;
  for (uint32_t i = from; i < to; i++) d += (uint32_t)s->smsgs[i].msg_hdr.msg_iovlen;
  return d;
}

/* Datagrams in the GSO messages of [from, to) (the kernel took them). */
static uint32_t gso_datagrams_in(udp_sock *s, uint32_t from, uint32_t to) {
  uint32_t d = 0;
  for (uint32_t i = from; i < to; i++)
    if (s->smsgs[i].msg_hdr.msg_controllen) d += (uint32_t)s->smsgs[i].msg_hdr.msg_iovlen;
  return d;
}

/* Turns a GSO message back into one message per datagram, in place after
 * the prepared ones; returns the new message count. */
static uint32_t split_gso(udp_sock *s, uint32_t at, uint32_t n);

/* Sends the prepared messages [0, n). Returns how many datagrams the kernel
 * took; *stopped is set when EAGAIN ended the batch early. */
static uint32_t send_prepared(udp_sock *s, uint32_t n, int *stopped) {
  uint32_t off = 0, sent = 0;
  while (off < n) {
    int r = sendmmsg(s->fd, s->smsgs + off, n - off, MSG_DONTWAIT);
    if (r > 0) {
      sent += datagrams_in(s, off, off + (uint32_t)r);
      s->counters[C_GSO_DATAGRAMS] += gso_datagrams_in(s, off, off + (uint32_t)r);
      off += (uint32_t)r;
      continue;
    }
    int err = r < 0 ? errno : EIO;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      *stopped = 1;
      s->counters[C_SEND_DROPS] += datagrams_in(s, off, n);
      break;
    }
    if (s->smsgs[off].msg_hdr.msg_controllen && (err == EMSGSIZE || err == EINVAL || err == EIO || err == ENOPROTOOPT || err == EOPNOTSUPP)) {
      /* The kernel refused to segment this send; its datagrams go one by
       * one. Why decides for how long:
       * - ENOPROTOOPT / EOPNOTSUPP: no UDP GSO in this kernel. Every later
       *   GSO send would fail the same way: off for good.
       * - EMSGSIZE (what Linux 6.18 answers here) or EINVAL (older
       *   kernels): a property of this send, not of the socket: its
       *   segment does not fit the route's MTU (a path MTU lower than the
       *   tunnel was sized for, or a datagram past it), or too many
       *   segments. Sent without GSO the same datagrams leave (fragmented
       *   by the kernel if they must), and the next batch may be fine
       *   (other sizes, other peers, a fixed route). Before, EMSGSIZE was
       *   counted as an ordinary error: the whole batch was lost.
       * - EIO: this route cannot offload the checksum (xfrm, a device
       *   without it): also one route's, not every peer's.
       * For the last two GSO pauses for GSO_PAUSE_BATCHES sendBatch calls
       * and is then tried again: a refused send costs the kernel a full
       * copy of the batch before it fails, so a lasting cause costs one
       * wasted copy per GSO_PAUSE_BATCHES batches, while a passing one
       * costs GSO for a moment only, never for good. */
      if (err == ENOPROTOOPT || err == EOPNOTSUPP) s->gso = 0;
      else s->gso_pause = GSO_PAUSE_BATCHES;
      s->counters[C_GSO_REFUSED]++;
      n = split_gso(s, off, n);
      continue;
    }
    /* sendmmsg reports an error only for the first message of a call:
     * this one failed; count it and carry on with the next. */
    uint32_t lost = (uint32_t)s->smsgs[off].msg_hdr.msg_iovlen;
    s->counters[C_SEND_ERRORS] += lost;
    s->counters[C_LAST_SEND_ERRNO] = err;
    off++;
  }
  return sent;
}

static uint32_t split_gso(udp_sock *s, uint32_t at, uint32_t n) {
  /* Messages after `at` move up to make room; the iovecs stay where they
   * are (each datagram already has its own), so only headers are written. */
  struct msghdr *g = &s->smsgs[at].msg_hdr;
  uint32_t k = (uint32_t)g->msg_iovlen;
  if (k <= 1) {
    g->msg_control = NULL;
    g->msg_controllen = 0;
    return n;
  }
  memmove(&s->smsgs[at + k], &s->smsgs[at + 1], (n - at - 1) * sizeof s->smsgs[0]);
  memmove(&s->snames[at + k], &s->snames[at + 1], (n - at - 1) * sizeof s->snames[0]);
  for (uint32_t j = at + k; j < n + k - 1; j++) s->smsgs[j].msg_hdr.msg_name = &s->snames[j];
  struct iovec *first = g->msg_iov;
  socklen_t namelen = g->msg_namelen;
  for (uint32_t j = 0; j < k; j++) {
    struct msghdr *m = &s->smsgs[at + j].msg_hdr;
    if (j > 0) memcpy(&s->snames[at + j], &s->snames[at], sizeof s->snames[0]);
    m->msg_name = &s->snames[at + j];
    m->msg_namelen = namelen;
    m->msg_iov = first + j;
    m->msg_iovlen = 1;
    m->msg_control = NULL;
    m->msg_controllen = 0;
    m->msg_flags = 0;
  }
  /* Later messages may be GSO too: unfold them on their turn. */
  return n + k - 1;
}

/* sendBatch's arguments once checked: bufs[i] (lengths[i] bytes of it) to
 * dests[i], for i in [0, count). */
typedef struct send_batch_args {
  napi_value bufs;
  napi_value dests;
  const uint32_t *lengths;
  uint32_t count;
} send_batch_args;

/* throw_type for the helpers that return a status: -1. */
static int fail_type(napi_env env, const char *msg) {
  throw_type(env, msg);
  return -1;
}

/* Checks sendBatch's arguments (the arrays' elements are checked as they are
 * read, in prepare_chunk). 0, or -1 with a JS exception pending. */
static int parse_send_batch(napi_env env, napi_callback_info info, udp_sock **sock, send_batch_args *a) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) return fail_type(env, "sendBatch(handle, bufs, lengths, dests, count)");
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return -1;
  if (s->closed) {
    throw_errno(env, EBADF, "sendmmsg", NULL);
    return -1;
  }
  bool is_array = false;
  uint32_t bufs_len = 0, dests_len = 0;
  napi_is_array(env, argv[1], &is_array);
  if (!is_array) return fail_type(env, "bufs must be an array");
  napi_is_array(env, argv[3], &is_array);
  if (!is_array) return fail_type(env, "dests must be an array");
  napi_get_array_length(env, argv[1], &bufs_len);
  napi_get_array_length(env, argv[3], &dests_len);
  napi_typedarray_type t;
  size_t lengths_len = 0;
  void *lengths_data = NULL;
  if (napi_get_typedarray_info(env, argv[2], &t, &lengths_len, &lengths_data, NULL, NULL) != napi_ok || t != napi_uint32_array)
    return fail_type(env, "lengths must be a Uint32Array");
  if (napi_get_value_uint32(env, argv[4], &a->count) != napi_ok) return fail_type(env, "count must be a non-negative integer");
  if (a->count > bufs_len || a->count > dests_len || a->count > lengths_len) return fail_type(env, "count exceeds bufs, lengths or dests");
  a->bufs = argv[1];
  a->dests = argv[3];
  a->lengths = lengths_data;
  *sock = s;
  return 0;
}

/* Prepares one chunk of the batch, from datagram *next on, into the send
 * messages [0, n): datagrams with a bad destination are counted as errors
 * and left out. iovecs are used in datagram order, and a message covers one
 * or, under GSO, several consecutive ones. Stops at the end of the batch or
 * when half the iovecs are used (so split_gso has room to unfold a
 * message); *next is then the first datagram not taken. Returns n, or -1
 * with a JS exception pending (a bad element). */
static long prepare_chunk(napi_env env, udp_sock *s, const send_batch_args *a, int use_gso, uint32_t *next) {
  const uint32_t *lengths = a->lengths;
  uint32_t i = *next, n = 0, iov = 0;
  const uint8_t *run_dest = NULL;
  size_t run_bytes = 0;
  for (; i < a->count && iov < MAX_BATCH / 2; i++) {
    napi_value el;
    uint8_t *data = NULL, *dest = NULL;
    size_t blen = 0, dlen = 0;
    if (napi_get_element(env, a->bufs, i, &el) != napi_ok || get_u8(env, el, &data, &blen) < 0) return fail_type(env, "bufs must hold Uint8Arrays");
    if (lengths[i] > blen) return fail_type(env, "lengths[i] exceeds bufs[i]");
    if (napi_get_element(env, a->dests, i, &el) != napi_ok || get_u8(env, el, &dest, &dlen) < 0 || dlen < ENDPOINT_SIZE) return fail_type(env, "dests must hold encoded endpoints");
    if (dest[0] != s->family) {
      count_send_error(s, EAFNOSUPPORT);
      continue;
    }
    uint32_t len = lengths[i];
    s->siov[iov].iov_base = data;
    s->siov[iov].iov_len = len;
    if (use_gso && s->gso && !s->gso_pause && n > 0 && run_dest && len > 0 && memcmp(run_dest, dest, ENDPOINT_SIZE) == 0) {
      /* Join the previous message if every datagram so far has this
       * size (the kernel cuts the payload into gso_size pieces; only the
       * last may be shorter). */
      struct msghdr *p = &s->smsgs[n - 1].msg_hdr;
      size_t seg = s->siov[iov - p->msg_iovlen].iov_len;
      if (s->siov[iov - 1].iov_len == seg && len <= seg && p->msg_iovlen < GSO_MAX_SEGMENTS && run_bytes + len <= GSO_MAX_BYTES) {
        p->msg_iovlen++;
        run_bytes += len;
        if (!p->msg_controllen) {
          struct cmsghdr *c = (struct cmsghdr *)s->scmsg[n - 1];
          p->msg_control = c;
          p->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
          c->cmsg_level = SOL_UDP;
          c->cmsg_type = UDP_SEGMENT;
          c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
          uint16_t gso_size = (uint16_t)seg;
          memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);
        }
        iov++;
        continue;
      }
    }
    struct msghdr *m = &s->smsgs[n].msg_hdr;
    m->msg_namelen = decode_sockaddr(dest, &s->snames[n]);
    m->msg_iov = &s->siov[iov];
    m->msg_iovlen = 1;
    m->msg_control = NULL;
    m->msg_controllen = 0;
    m->msg_flags = 0;
    run_dest = dest;
    run_bytes = len;
    n++;
    iov++;
  }
  *next = i;
  return (long)n;
}

/* sendBatch(handle, bufs: Uint8Array[], lengths: Uint32Array,
 *           dests: Uint8Array[], count) -> number sent
 * Chunk by chunk: prepare the messages, send them; an EAGAIN ends the batch
 * (the rest is counted as dropped). */
static napi_value js_send_batch(napi_env env, napi_callback_info info) {
  send_batch_args a;
  udp_sock *s = NULL;
  if (parse_send_batch(env, info, &s, &a) < 0) return NULL;
  uint32_t total = 0, i = 0;
  int stopped = 0;
  int use_gso = s->gso && s->gso_pause == 0;
  if (s->gso_pause) s->gso_pause--;
  while (i < a.count && !stopped) {
    long n = prepare_chunk(env, s, &a, use_gso, &i);
    if (n < 0) return NULL;
    total += send_prepared(s, (uint32_t)n, &stopped);
    if (stopped) s->counters[C_SEND_DROPS] += a.count - i;
  }
  s->counters[C_SENT] += total;
  napi_value out;
  napi_create_uint32(env, total, &out);
  return out;
}

/* send(handle, buf: Uint8Array, length, dest: Uint8Array) -> boolean sent */
static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return throw_type(env, "send(handle, buf, length, dest)");
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return NULL;
  if (s->closed) return throw_errno(env, EBADF, "sendmsg", NULL);
  uint8_t *data = NULL, *dest = NULL;
  size_t len = 0, dlen = 0;
  uint32_t length = 0;
  if (get_u8(env, argv[1], &data, &len) < 0) return throw_type(env, "buf must be a Uint8Array");
  if (napi_get_value_uint32(env, argv[2], &length) != napi_ok || length > len) return throw_type(env, "length must be an integer within buf");
  if (get_u8(env, argv[3], &dest, &dlen) < 0 || dlen < ENDPOINT_SIZE) return throw_type(env, "dest must be an encoded endpoint");
  bool ok = false;
  if (dest[0] != s->family) {
    count_send_error(s, EAFNOSUPPORT);
  } else {
    struct sockaddr_storage ss;
    socklen_t sl = decode_sockaddr(dest, &ss);
    for (;;) {
      ssize_t r = sendto(s->fd, data, length, MSG_DONTWAIT, (struct sockaddr *)&ss, sl);
      if (r >= 0) {
        ok = true;
        s->counters[C_SENT]++;
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) s->counters[C_SEND_DROPS]++;
      else count_send_error(s, errno);
      break;
    }
  }
  napi_value out;
  napi_get_boolean(env, ok, &out);
  return out;
}

/* ---------- endpoints, misc ---------- */

/* encodeEndpoint(address: string, port) -> Uint8Array(ENDPOINT_SIZE) */
static napi_value js_encode_endpoint(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char address[ADDRESS_MAX];
  size_t alen = 0;
  uint32_t port = 0;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], address, sizeof address, &alen) != napi_ok)
    return throw_type(env, "encodeEndpoint(address: string, port: number)");
  if (napi_get_value_uint32(env, argv[1], &port) != napi_ok || port > 65535) return throw_type(env, "port must be an integer in 0..65535");
  struct sockaddr_storage ss;
  socklen_t sl = 0;
  if (alen == 0 || alen >= sizeof address - 1 || parse_address(address, (uint16_t)port, AF_UNSPEC, &ss, &sl) != 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "not an IP address: \"%.100s\"", address);
    return throw_code(env, "EINVAL", msg);
  }
  napi_value ab, out;
  void *data = NULL;
  napi_create_arraybuffer(env, ENDPOINT_SIZE, &data, &ab);
  encode_sockaddr(&ss, data);
  napi_create_typedarray(env, napi_uint8_array, ENDPOINT_SIZE, ab, 0, &out);
  return out;
}

/* decodeEndpoint(encoded: Uint8Array, offset) -> [address, port, family] */
static napi_value js_decode_endpoint(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t *data = NULL;
  size_t len = 0;
  uint32_t offset = 0;
  if (argc < 2 || get_u8(env, argv[0], &data, &len) < 0 || napi_get_value_uint32(env, argv[1], &offset) != napi_ok)
    return throw_type(env, "decodeEndpoint(encoded: Uint8Array, offset: number)");
  if ((size_t)offset + ENDPOINT_SIZE > len) return throw_type(env, "offset out of range");
  struct sockaddr_storage ss;
  socklen_t sl = decode_sockaddr(data + offset, &ss);
  if (sl == 0) return throw_type(env, "not an encoded endpoint");
  char host[NI_MAXHOST];
  int rc = getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, NULL, 0, NI_NUMERICHOST);
  if (rc != 0) return throw_type(env, "not an encoded endpoint");
  uint16_t port = (uint16_t)((data[offset + 2] << 8) | data[offset + 3]);
  napi_value result, a, p, f;
  napi_create_string_utf8(env, host, NAPI_AUTO_LENGTH, &a);
  napi_create_uint32(env, port, &p);
  napi_create_uint32(env, data[offset], &f);
  napi_create_array_with_length(env, 3, &result);
  napi_set_element(env, result, 0, a);
  napi_set_element(env, result, 1, p);
  napi_set_element(env, result, 2, f);
  return result;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return throw_type(env, "close(handle)");
  udp_sock *s = get_sock(env, argv[0]);
  if (!s) return NULL;
  close_sock(s);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value size;
  napi_create_uint32(env, ENDPOINT_SIZE, &size);
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"startReceiving", NULL, js_start_receiving, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setRef", NULL, js_set_ref, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setMark", NULL, js_set_mark, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendBatch", NULL, js_send_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"send", NULL, js_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"encodeEndpoint", NULL, js_encode_endpoint, NULL, NULL, NULL, napi_enumerable, NULL},
      {"decodeEndpoint", NULL, js_decode_endpoint, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ENDPOINT_SIZE", NULL, NULL, NULL, NULL, size, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
