/*
 * tunvpn_tun: a small N-API binding to Linux TUN devices.
 *
 * Reading is the hot path. The fd is non-blocking and watched by a uv_poll
 * handle on the main loop; on each wakeup we read() until EAGAIN (at most
 * batch_size packets, so one busy device cannot starve the loop; uv_poll is
 * level-triggered, so what is left wakes us again on the next iteration) into
 * slots of a slab that JavaScript allocated once, fill a Uint32Array of
 * lengths, and make ONE call into JavaScript with the packet count. Nothing
 * is allocated per packet, on either side.
 *
 * Lifetime: the poll handle exists only while reading. While it exists the
 * device's external is held by a strong reference, so a device that is being
 * read from is not collected. close() stops the poll, uv_close()s it and
 * closes the fd, after which nothing of ours holds the event loop. An env
 * cleanup hook does the same at environment teardown (worker exit, process
 * exit), and the external's finalizer closes a forgotten device.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "../../native/napi-common.h"
#include "offload.h"

#define MAX_BATCH 4096
#define OVERFLOW_SIZE 65536
/* Offload mode reads a TSO super-packet (up to 64 KiB) past the slot. */
#define SUPER_TAIL (65536 + 256)

typedef struct tun_dev {
  tv_poller pl;
  int fd;
  int closed;
  int cleanup_registered;
  napi_ref slab_ref;
  napi_ref lengths_ref;
  uint8_t *slab;
  size_t slot_size;
  uint32_t *lengths;
  uint32_t batch_size;
  /* Second iovec of every read: the kernel silently truncates a packet to
   * the buffer it is given, so a packet larger than a slot spills here and
   * the read length tells us to drop it instead of delivering a torso. */
  uint8_t *overflow;
  /* Packets the kernel refused to hand over whole (larger than a slot). */
  double oversize_drops;
  /* IFF_VNET_HDR: every read and write starts with a virtio_net_hdr. */
  int vnet;
  /* TUNSETOFFLOAD accepted: reads may be TSO super-packets, writes coalesce. */
  int offload;
  /* Offload mode: a super-packet is read into the current slot and on into
   * super_buf + slot_size, then copied to super_buf to be cut into slots. */
  uint8_t *super_buf;
  /* writeBatch scratch for the coalescing plan (MAX_BATCH entries each). */
  uint8_t **w_pkts;
  uint32_t *w_lens;
  uint32_t *w_chain;
  gro_unit *w_units;
  double tso_packets;   /* super-packets read */
  double tso_segments;  /* segments cut from them */
  double gro_writes;    /* coalesced writes */
  double gro_packets;   /* packets carried by coalesced writes */
  double offload_drops; /* reads with a virtio header we cannot use */
  char name[IFNAMSIZ];
} tun_dev;

/* ---------- lifetime ---------- */

static void stop_reading(tun_dev *d) {
  poller_stop(&d->pl);
  delete_ref(d->pl.env, &d->slab_ref);
  delete_ref(d->pl.env, &d->lengths_ref);
  d->slab = NULL;
  d->lengths = NULL;
  free(d->overflow);
  d->overflow = NULL;
  free(d->super_buf);
  d->super_buf = NULL;
}

static void cleanup_hook(void *arg);

static void free_write_scratch(tun_dev *d) {
  free(d->w_pkts);
  free(d->w_lens);
  free(d->w_chain);
  free(d->w_units);
  d->w_pkts = NULL;
  d->w_lens = NULL;
  d->w_chain = NULL;
  d->w_units = NULL;
}

static void close_dev(tun_dev *d) {
  if (d->closed) return;
  d->closed = 1;
  stop_reading(d);
  poller_destroy_async(&d->pl);
  if (d->fd >= 0) {
    close(d->fd);
    d->fd = -1;
  }
  free_write_scratch(d);
  if (d->cleanup_registered) {
    d->cleanup_registered = 0;
    napi_remove_env_cleanup_hook(d->pl.env, cleanup_hook, d);
  }
}

static void cleanup_hook(void *arg) {
  tun_dev *d = arg;
  d->cleanup_registered = 0; /* the hook is being consumed */
  close_dev(d);
}

static void finalize_dev(napi_env env, void *data, void *hint) {
  tun_dev *d = data;
  close_dev(d);
  if (d->pl.in_callback) {
    d->pl.free_pending = 1;
  } else {
    free(d);
  }
}

static tun_dev *get_dev(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    throw_type(env, "expected a TUN device handle");
    return NULL;
  }
  return p;
}

/* ---------- open ---------- */

/* Opens /dev/net/tun and attaches it to `name` (empty: kernel chooses).
 * Returns the fd or -errno; `out_name` receives the actual name. With
 * `vnet`, asks for virtio headers and the TCP offloads; *offload_ok says
 * whether the kernel took the offloads (headers stay on either way). */
static int open_tun(const char *name, int multi_queue, int blocking, int vnet, int *offload_ok, char out_name[IFNAMSIZ],
                    const char **failed_call) {
  int flags = O_RDWR | O_CLOEXEC | (blocking ? 0 : O_NONBLOCK);
  int fd = open("/dev/net/tun", flags);
  if (fd < 0) {
    *failed_call = "open /dev/net/tun";
    return -errno;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0) | (vnet ? IFF_VNET_HDR : 0);
  if (name && name[0]) {
    memcpy(ifr.ifr_name, name, strlen(name)); /* length checked by caller */
  }
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    *failed_call = "ioctl TUNSETIFF";
    return -err;
  }
  memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
  out_name[IFNAMSIZ - 1] = 0;
  if (offload_ok) *offload_ok = 0;
  if (vnet) {
    int sz = (int)VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      int err = errno;
      close(fd);
      *failed_call = "ioctl TUNSETVNETHDRSZ";
      return -err;
    }
    /* Checksums may be left partial and TCP may come as super-packets,
     * ECN-marked ones too (tso_next keeps CWR on the first segment only). */
    unsigned int want = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    int ok = ioctl(fd, TUNSETOFFLOAD, want | TUN_F_TSO_ECN) == 0 || ioctl(fd, TUNSETOFFLOAD, want) == 0;
    if (ok && offload_ok) *offload_ok = 1;
  }
  return fd;
}

static int read_string_arg(napi_env env, napi_value v, char *buf, size_t cap, size_t *len) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_undefined || t == napi_null) {
    buf[0] = 0;
    *len = 0;
    return 0;
  }
  if (t != napi_string) return -1;
  size_t full = 0;
  napi_get_value_string_utf8(env, v, NULL, 0, &full);
  if (full >= cap) return -2;
  napi_get_value_string_utf8(env, v, buf, cap, len);
  return 0;
}

static int parse_open_args(napi_env env, napi_callback_info info, char name[IFNAMSIZ], int *mq, int *vnet) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  size_t len = 0;
  int r = read_string_arg(env, argc > 0 ? argv[0] : NULL, name, IFNAMSIZ, &len);
  if (argc < 1) {
    name[0] = 0;
    r = 0;
  }
  if (r == -1) {
    throw_type(env, "name must be a string");
    return -1;
  }
  if (r == -2) {
    char msg[96];
    snprintf(msg, sizeof msg, "interface name longer than %d bytes", IFNAMSIZ - 1);
    throw_code(env, "EINVAL", msg);
    return -1;
  }
  *mq = argc > 1 ? get_bool(env, argv[1]) : 0;
  *vnet = argc > 2 ? get_bool(env, argv[2]) : 0;
  return 0;
}

/* open(name?: string, multiQueue?: boolean, offload?: boolean)
 *   -> [handle, actualName, offloadActive] */
static napi_value js_open(napi_env env, napi_callback_info info) {
  char name[IFNAMSIZ];
  char actual[IFNAMSIZ];
  int mq = 0, vnet = 0, offload = 0;
  if (parse_open_args(env, info, name, &mq, &vnet) < 0) return NULL;
  const char *failed = "";
  int fd = open_tun(name, mq, 0, vnet, &offload, actual, &failed);
  if (fd < 0) return throw_errno(env, -fd, failed, name[0] ? name : NULL);

  tun_dev *d = calloc(1, sizeof *d);
  if (!d) {
    close(fd);
    return throw_errno(env, ENOMEM, "calloc", NULL);
  }
  d->pl.env = env;
  d->fd = fd;
  d->pl.reffed = 1;
  d->vnet = vnet;
  d->offload = offload;
  memcpy(d->name, actual, IFNAMSIZ);

  napi_value handle, name_val, offload_val, result;
  if (napi_create_external(env, d, finalize_dev, NULL, &handle) != napi_ok) {
    close(fd);
    free(d);
    return NULL;
  }
  if (napi_add_env_cleanup_hook(env, cleanup_hook, d) == napi_ok) d->cleanup_registered = 1;
  napi_create_string_utf8(env, actual, NAPI_AUTO_LENGTH, &name_val);
  napi_get_boolean(env, offload, &offload_val);
  napi_create_array_with_length(env, 3, &result);
  napi_set_element(env, result, 0, handle);
  napi_set_element(env, result, 1, name_val);
  napi_set_element(env, result, 2, offload_val);
  return result;
}

/* openFd(name?: string, multiQueue?: boolean) -> [fd, actualName]. A plain
 * BLOCKING fd the caller owns; it exists for the fs-stream comparison in the
 * benchmark, not for production use. */
static napi_value js_open_fd(napi_env env, napi_callback_info info) {
  char name[IFNAMSIZ];
  char actual[IFNAMSIZ];
  int mq = 0, vnet = 0;
  if (parse_open_args(env, info, name, &mq, &vnet) < 0) return NULL;
  const char *failed = "";
  int fd = open_tun(name, mq, 1, 0, NULL, actual, &failed);
  if (fd < 0) return throw_errno(env, -fd, failed, name[0] ? name : NULL);
  napi_value fd_val, name_val, result;
  napi_create_int32(env, fd, &fd_val);
  napi_create_string_utf8(env, actual, NAPI_AUTO_LENGTH, &name_val);
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, fd_val);
  napi_set_element(env, result, 1, name_val);
  return result;
}

/* setMtu(name: string, mtu: number): synchronous SIOCSIFMTU, so open() with
 * an MTU stays synchronous. */
static napi_value js_set_mtu(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char name[IFNAMSIZ];
  size_t len = 0;
  int32_t mtu = 0;
  if (argc < 2 || read_string_arg(env, argv[0], name, IFNAMSIZ, &len) != 0 || len == 0 ||
      napi_get_value_int32(env, argv[1], &mtu) != napi_ok) {
    return throw_type(env, "setMtu(name: string, mtu: number)");
  }
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return throw_errno(env, errno, "socket", name);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, len);
  ifr.ifr_mtu = mtu;
  int rc = ioctl(s, SIOCSIFMTU, &ifr);
  int err = errno;
  close(s);
  if (rc < 0) return throw_errno(env, err, "ioctl SIOCSIFMTU", name);
  return NULL;
}

/* Reports a fatal read-side error once and stops polling, so a deleted
 * interface (EBADFD/EIO, POLLERR) cannot make us spin. The fd stays open
 * until JavaScript calls close(). */
static void report_error(tun_dev *d, int err, const char *syscall) {
  napi_env env = d->pl.env;
  napi_value fn = NULL;
  if (d->pl.on_error) napi_get_reference_value(env, d->pl.on_error, &fn);
  napi_value error = make_errno_error(env, err, syscall, d->name);
  stop_reading(d);
  if (fn) poller_call_js(&d->pl, fn, 1, &error);
}

/* Hands slots [0, n) to JavaScript. 0: keep reading; -1: the device was
 * closed from inside the handler. */
static int deliver(tun_dev *d, uint32_t n) {
  if (n > 0 && d->pl.on_batch && !d->closed) {
    napi_env env = d->pl.env;
    napi_value fn, count;
    napi_get_reference_value(env, d->pl.on_batch, &fn);
    napi_create_uint32(env, n, &count);
    poller_call_js(&d->pl, fn, 1, &count);
  }
  return d->closed || !d->slab ? -1 : 0;
}

/* What one offload-mode read put into slot *n (its first slot_size bytes)
 * and on into super_buf + slot_size (the rest, at most SUPER_TAIL), behind
 * header h; r is what readv returned. Turns it into slots from *n on: a
 * packet (checksum completed), or a super-packet cut into segments, handing
 * full batches to JavaScript on the way. Anything unusable is dropped and
 * counted. Returns 0, or -1 if the device went away in a handler. The
 * offloadRead test hook runs this too, on a packet it lays out the same way. */
static int vnet_to_slots(tun_dev *d, const struct virtio_net_hdr *h, size_t r, uint32_t *n) {
  size_t slot = d->slot_size;
  uint8_t *dst = d->slab + (size_t)*n * slot;
  if (r < VNET_HDR_LEN) {
    d->offload_drops++;
    return 0;
  }
  size_t len = r - VNET_HDR_LEN;
  if (len >= slot + SUPER_TAIL) { /* filled every byte: maybe cut short */
    d->oversize_drops++;
    return 0;
  }
  if (h->gso_type == VIRTIO_NET_HDR_GSO_NONE) {
    if (len > slot) {
      d->oversize_drops++;
      return 0;
    }
    if ((h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && offload_complete_csum(dst, len, h) < 0) {
      d->offload_drops++;
      return 0;
    }
    d->lengths[(*n)++] = (uint32_t)len;
    return 0;
  }
  /* A super-packet: make it contiguous in super_buf, then cut it. */
  memcpy(d->super_buf, dst, len < slot ? len : slot);
  tso_iter it;
  if (tso_begin(&it, d->super_buf, len, h) < 0) {
    d->offload_drops++;
    return 0;
  }
  d->tso_packets++;
  for (;;) {
    if (*n == d->batch_size) {
      if (deliver(d, *n) < 0) return -1;
      *n = 0;
    }
    long seg = tso_next(&it, d->slab + (size_t)*n * slot, slot);
    if (seg == 0) break;
    if (seg < 0) { /* gso_size larger than a slot */
      d->oversize_drops++;
      break;
    }
    d->lengths[(*n)++] = (uint32_t)seg;
    d->tso_segments++;
  }
  return 0;
}

/* One read in offload mode into slots from *n on (see vnet_to_slots).
 * Returns 0, -1 if the device went away in a handler, or errno. */
static int read_vnet(tun_dev *d, uint32_t *n) {
  size_t slot = d->slot_size;
  struct virtio_net_hdr h;
  struct iovec iov[3] = {
      {&h, VNET_HDR_LEN},
      {d->slab + (size_t)*n * slot, slot},
      {d->super_buf + slot, SUPER_TAIL},
  };
  ssize_t r;
  do r = readv(d->fd, iov, 3);
  while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN ? EAGAIN : errno;
  return vnet_to_slots(d, &h, (size_t)r, n);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  tun_dev *d = h->data;
  napi_env env = d->pl.env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  d->pl.in_callback++;

  int err = 0;
  const char *failed = "read";
  uint32_t n = 0;
  if (status < 0) {
    /* libuv has already stopped the watcher on POLLERR (e.g. the interface
     * was deleted under us); ask the fd for the real reason, else report
     * the poll status. */
    ssize_t r = read(d->fd, d->slab, d->slot_size);
    if (r < 0 && errno != EAGAIN && errno != EINTR) {
      err = errno;
    } else {
      err = -status;
      failed = "poll";
    }
  }
  if (!err && d->vnet) {
    /* At most batch_size reads; one read may fill several batches. */
    for (uint32_t reads = 0; reads < d->batch_size; reads++) {
      if (n == d->batch_size) {
        int gone = deliver(d, n) < 0;
        n = 0;
        if (gone) break;
      }
      int r = read_vnet(d, &n);
      if (r == 0) continue;
      if (r < 0) { /* the device went away in a handler: nothing left to hand over */
        n = 0;
        break;
      }
      if (r == EAGAIN) break;
      if (r == EFAULT || r == EINVAL || r == EMSGSIZE) { /* the kernel dropped it */
        d->oversize_drops++;
        continue;
      }
      err = r;
      break;
    }
  } else if (!err) {
    uint8_t *slab = d->slab;
    size_t slot = d->slot_size;
    uint32_t max = d->batch_size;
    struct iovec iov[2];
    iov[1].iov_base = d->overflow;
    iov[1].iov_len = OVERFLOW_SIZE;
    while (n < max) {
      iov[0].iov_base = slab + (size_t)n * slot;
      iov[0].iov_len = slot;
      ssize_t r = readv(d->fd, iov, 2);
      if (r >= 0) {
        if ((size_t)r > slot) {
          d->oversize_drops++;
          continue;
        }
        d->lengths[n++] = (uint32_t)r;
        continue;
      }
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN) break;
      /* The kernel frees a packet it failed to copy: skip it, keep going. */
      if (e == EFAULT || e == EINVAL || e == EMSGSIZE) {
        d->oversize_drops++;
        continue;
      }
      err = e;
      break;
    }
  }

  if (n > 0) deliver(d, n);
  if (err && !d->closed && d->pl.poll) report_error(d, err, failed);

  d->pl.in_callback--;
  napi_close_handle_scope(env, scope);
  if (d->closed) poller_destroy_async(&d->pl);
  if (d->pl.free_pending && !d->pl.in_callback) free(d);
}

/* startReading(handle, slab: ArrayBuffer, slotSize, lengths: Uint32Array,
 *              batchSize, onBatch(count), onError(err)) */
static napi_value js_start_reading(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 7) return throw_type(env, "startReading needs 7 arguments");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  if (d->closed) return throw_errno(env, EBADF, "startReading", d->name);
  if (d->pl.poll) return throw_errno(env, EALREADY, "startReading", d->name);

  void *slab = NULL;
  size_t slab_len = 0;
  if (napi_get_arraybuffer_info(env, argv[1], &slab, &slab_len) != napi_ok) return throw_type(env, "slab must be an ArrayBuffer");
  uint32_t slot_size = 0, batch = 0;
  if (napi_get_value_uint32(env, argv[2], &slot_size) != napi_ok || slot_size == 0) return throw_type(env, "slotSize must be a positive integer");
  napi_typedarray_type ta_type;
  size_t ta_len = 0;
  void *ta_data = NULL;
  if (napi_get_typedarray_info(env, argv[3], &ta_type, &ta_len, &ta_data, NULL, NULL) != napi_ok || ta_type != napi_uint32_array)
    return throw_type(env, "lengths must be a Uint32Array");
  if (napi_get_value_uint32(env, argv[4], &batch) != napi_ok || batch == 0 || batch > MAX_BATCH)
    return throw_type(env, "batchSize must be an integer in 1..4096");
  if (ta_len < batch || slab_len < (size_t)slot_size * batch) return throw_type(env, "slab or lengths too small for batchSize");
  napi_valuetype t1, t2;
  napi_typeof(env, argv[5], &t1);
  napi_typeof(env, argv[6], &t2);
  if (t1 != napi_function || t2 != napi_function) return throw_type(env, "onBatch and onError must be functions");

  uint8_t *overflow = malloc(OVERFLOW_SIZE);
  uint8_t *super_buf = d->vnet ? malloc(slot_size + SUPER_TAIL) : NULL;
  if (!overflow || (d->vnet && !super_buf)) {
    free(overflow);
    free(super_buf);
    return throw_errno(env, ENOMEM, "malloc", d->name);
  }
  int rc = poller_start(&d->pl, d->fd, on_poll, d);
  if (rc < 0) {
    free(overflow);
    free(super_buf);
    return throw_errno(env, -rc, "uv_poll_start", d->name);
  }
  d->overflow = overflow;
  d->super_buf = super_buf;
  d->slab = slab;
  d->slot_size = slot_size;
  d->lengths = ta_data;
  d->batch_size = batch;
  napi_create_reference(env, argv[1], 1, &d->slab_ref);
  napi_create_reference(env, argv[3], 1, &d->lengths_ref);
  poller_keep(&d->pl, argv[0], argv[5], argv[6], "tunvpn:TunDevice");
  return NULL;
}

/* setRef(handle, ref: boolean): whether an active reader keeps the loop alive. */
static napi_value js_set_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_type(env, "setRef(handle, ref)");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  poller_set_ref(&d->pl, get_bool(env, argv[1]));
  return NULL;
}

/* ---------- writing ---------- */

/* 1 written, 0 dropped (EAGAIN), -errno on failure. */
static int write_iov(tun_dev *d, const struct iovec *iov, int cnt) {
  for (;;) {
    ssize_t r = writev(d->fd, iov, cnt);
    if (r >= 0) return 1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    return -errno;
  }
}

/* One packet; in vnet mode behind an all-zero header (no offload asked). */
static int write_one(tun_dev *d, const void *data, size_t len) {
  static const struct virtio_net_hdr none;
  struct iovec iov[2] = {{(void *)&none, VNET_HDR_LEN}, {(void *)data, len}};
  return d->vnet ? write_iov(d, iov, 2) : write_iov(d, iov + 1, 1);
}

static int get_bytes(napi_env env, napi_value v, void **data, size_t *len) {
  napi_typedarray_type type;
  size_t length = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, data, NULL, NULL) != napi_ok || type != napi_uint8_array) return -1;
  *len = length;
  return 0;
}

/* write(handle, packet: Uint8Array) -> boolean (false: dropped on EAGAIN) */
static napi_value js_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2) return throw_type(env, "write(handle, packet)");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  if (d->closed) return throw_errno(env, EBADF, "write", d->name);
  void *data = NULL;
  size_t len = 0;
  if (get_bytes(env, argv[1], &data, &len) < 0) return throw_type(env, "packet must be a Uint8Array");
  int r = write_one(d, data, len);
  if (r < 0) return throw_errno(env, -r, "write", d->name);
  napi_value out;
  napi_get_boolean(env, r == 1, &out);
  return out;
}

static int alloc_write_scratch(tun_dev *d) {
  if (d->w_pkts) return 0;
  d->w_pkts = malloc(MAX_BATCH * sizeof *d->w_pkts);
  d->w_lens = malloc(MAX_BATCH * sizeof *d->w_lens);
  d->w_chain = malloc(MAX_BATCH * sizeof *d->w_chain);
  d->w_units = malloc(MAX_BATCH * sizeof *d->w_units);
  if (d->w_pkts && d->w_lens && d->w_chain && d->w_units) return 0;
  free_write_scratch(d);
  return -1;
}

/* Writes one unit of the coalescing plan: the head packet whole, then the
 * followers' payloads, as one super-packet (or one plain packet). */
static int write_unit(tun_dev *d, const gro_unit *u) {
  struct iovec iov[GRO_MAX_SEGS + 1];
  iov[0].iov_base = (void *)&u->h;
  iov[0].iov_len = VNET_HDR_LEN;
  iov[1].iov_base = d->w_pkts[u->head];
  iov[1].iov_len = d->w_lens[u->head];
  int cnt = 2;
  for (uint32_t i = d->w_chain[u->head]; i != UINT32_MAX; i = d->w_chain[i]) {
    iov[cnt].iov_base = d->w_pkts[i] + u->hdr_len;
    iov[cnt].iov_len = d->w_lens[i] - u->hdr_len;
    cnt++;
  }
  int r = write_iov(d, iov, cnt);
  if (r == 1 && u->count > 1) {
    d->gro_writes++;
    d->gro_packets += u->count;
  }
  return r;
}

/* writeBatch(handle, packets: Uint8Array[], lengths: Uint32Array | undefined,
 *            count) -> number of packets written.
 * lengths[i], when given, is how much of packets[i] to write. With offloads
 * on, consecutive segments of a TCP flow go out as one super-packet (see
 * gro_plan), and the heads of coalesced runs are rewritten in place.
 * Stops at the first EAGAIN (returns what was written); any other error
 * throws, with `written` on the error. */
static napi_value js_write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 4) return throw_type(env, "writeBatch(handle, packets, lengths, count)");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  if (d->closed) return throw_errno(env, EBADF, "write", d->name);
  bool is_array = false;
  napi_is_array(env, argv[1], &is_array);
  if (!is_array) return throw_type(env, "packets must be an array");
  uint32_t arr_len = 0, count = 0;
  napi_get_array_length(env, argv[1], &arr_len);
  if (napi_get_value_uint32(env, argv[3], &count) != napi_ok) return throw_type(env, "count must be a non-negative integer");
  if (count > arr_len) count = arr_len;
  if (count > MAX_BATCH) return throw_type(env, "count must be at most 4096");
  napi_valuetype lt;
  napi_typeof(env, argv[2], &lt);
  uint32_t *lengths = NULL;
  if (lt != napi_undefined) {
    napi_typedarray_type type;
    size_t n = 0;
    void *data = NULL;
    if (napi_get_typedarray_info(env, argv[2], &type, &n, &data, NULL, NULL) != napi_ok || type != napi_uint32_array || n < count)
      return throw_type(env, "lengths must be a Uint32Array of at least count entries");
    lengths = data;
  }
  if (alloc_write_scratch(d) < 0) return throw_errno(env, ENOMEM, "malloc", d->name);
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    void *data = NULL;
    size_t len = 0;
    if (napi_get_element(env, argv[1], i, &el) != napi_ok || get_bytes(env, el, &data, &len) < 0)
      return throw_type(env, "packets must hold Uint8Arrays");
    if (lengths) {
      if (lengths[i] > len) return throw_type(env, "a length is larger than its packet");
      len = lengths[i];
    }
    d->w_pkts[i] = data;
    d->w_lens[i] = (uint32_t)len;
  }
  uint32_t units = 0;
  if (d->offload) {
    units = gro_plan(d->w_pkts, d->w_lens, count, d->w_chain, d->w_units);
  } else {
    for (uint32_t i = 0; i < count; i++) {
      d->w_chain[i] = UINT32_MAX;
      memset(&d->w_units[i], 0, sizeof d->w_units[i]);
      d->w_units[i].head = i;
      d->w_units[i].count = 1;
    }
    units = count;
  }
  uint32_t written = 0;
  for (uint32_t k = 0; k < units; k++) {
    const gro_unit *u = &d->w_units[k];
    int r = d->vnet ? write_unit(d, u) : write_one(d, d->w_pkts[u->head], d->w_lens[u->head]);
    if (r == 1) {
      written += u->count;
      continue;
    }
    if (r == 0) break;
    napi_value error = make_errno_error(env, -r, "write", d->name), w;
    napi_create_uint32(env, written, &w);
    napi_set_named_property(env, error, "written", w);
    napi_throw(env, error);
    return NULL;
  }
  napi_value out;
  napi_create_uint32(env, written, &out);
  return out;
}

/* ---------- misc ---------- */

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return throw_type(env, "close(handle)");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  close_dev(d);
  return NULL;
}

static void set_num(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, key, n);
}

/* stats(handle) -> { readOversizeDrops, readOffloadDrops, tsoPackets,
 *                    tsoSegments, groWrites, groPackets } (TunStats names) */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return throw_type(env, "stats(handle)");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  napi_value out;
  napi_create_object(env, &out);
  set_num(env, out, "readOversizeDrops", d->oversize_drops);
  set_num(env, out, "readOffloadDrops", d->offload_drops);
  set_num(env, out, "tsoPackets", d->tso_packets);
  set_num(env, out, "tsoSegments", d->tso_segments);
  set_num(env, out, "groWrites", d->gro_writes);
  set_num(env, out, "groPackets", d->gro_packets);
  return out;
}

/* ---------- the offload code without a device, for tests ---------- */

static napi_value make_buffer(napi_env env, const void *data, size_t len) {
  napi_value b;
  void *dst = NULL;
  napi_create_buffer_copy(env, len, data, &dst, &b);
  return b;
}

static int read_vnet_hdr(napi_env env, napi_value v, struct virtio_net_hdr *h) {
  void *data = NULL;
  size_t len = 0;
  if (get_bytes(env, v, &data, &len) < 0 || len != VNET_HDR_LEN) return -1;
  memcpy(h, data, VNET_HDR_LEN);
  return 0;
}

/* At most this much slab for one offloadRead call. */
#define HOOK_SLAB_MAX (64u << 20)

/* offloadRead(vnetHeader: Uint8Array(10), packet: Uint8Array, slotSize)
 *   -> Buffer[] | null: what a read in offload mode hands JavaScript for
 *   this header and packet (null: dropped). The packet is laid out as
 *   read_vnet's readv lays it out (the kernel cutting short what does not
 *   fit) on a device without an fd, and goes through the device's own
 *   vnet_to_slots. The packet itself is not modified. */
static napi_value js_offload_read(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct virtio_net_hdr h;
  void *data = NULL;
  size_t len = 0;
  uint32_t slot = 0;
  if (argc < 3 || read_vnet_hdr(env, argv[0], &h) < 0 || get_bytes(env, argv[1], &data, &len) < 0 ||
      napi_get_value_uint32(env, argv[2], &slot) != napi_ok || slot == 0)
    return throw_type(env, "offloadRead(vnetHeader: 10 bytes, packet, slotSize)");
  size_t take = len < (size_t)slot + SUPER_TAIL ? len : (size_t)slot + SUPER_TAIL;
  /* A slot for every segment the packet can yield, and one more: a full
   * batch is handed over before the cut goes on, and this device has no
   * reader (closed: a full batch ends the read, reported below). */
  size_t segs = h.gso_type == VIRTIO_NET_HDR_GSO_NONE || h.gso_size == 0 ? 1 : take / h.gso_size + 1;
  size_t batch = segs + 1;
  if (batch > MAX_BATCH) batch = MAX_BATCH;
  if (batch > HOOK_SLAB_MAX / slot) batch = HOOK_SLAB_MAX / slot > 1 ? HOOK_SLAB_MAX / slot : 1;
  tun_dev d;
  memset(&d, 0, sizeof d);
  d.closed = 1;
  d.vnet = 1;
  d.slot_size = slot;
  d.batch_size = (uint32_t)batch;
  d.slab = malloc(batch * slot);
  d.lengths = malloc(batch * sizeof *d.lengths);
  d.super_buf = malloc((size_t)slot + SUPER_TAIL);
  napi_value result = NULL;
  if (!d.slab || !d.lengths || !d.super_buf) {
    throw_errno(env, ENOMEM, "malloc", "offloadRead");
    goto out;
  }
  size_t head = take < slot ? take : slot;
  memcpy(d.slab, data, head);
  memcpy(d.super_buf + slot, (const uint8_t *)data + head, take - head);
  uint32_t n = 0;
  if (vnet_to_slots(&d, &h, VNET_HDR_LEN + take, &n) < 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offloadRead: more segments than the slots this hook allocates");
    goto out;
  }
  if (d.oversize_drops || d.offload_drops) {
    napi_get_null(env, &result);
    goto out;
  }
  napi_create_array_with_length(env, n, &result);
  for (uint32_t i = 0; i < n; i++) napi_set_element(env, result, i, make_buffer(env, d.slab + (size_t)i * slot, d.lengths[i]));
out:
  free(d.slab);
  free(d.lengths);
  free(d.super_buf);
  return result;
}

/* offloadCoalesce(packets: Uint8Array[]) -> Array<[vnetHeader, packet]>:
 * what writeBatch in offload mode would write, one entry per write. The
 * heads of coalesced runs are rewritten in place, as on the device. */
static napi_value js_offload_coalesce(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is_array = false;
  if (argc < 1 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array) return throw_type(env, "offloadCoalesce(packets)");
  uint32_t n = 0;
  napi_get_array_length(env, argv[0], &n);
  if (n > MAX_BATCH) return throw_type(env, "at most 4096 packets");
  uint8_t **pkts = malloc((n + 1) * sizeof *pkts);
  uint32_t *lens = malloc((n + 1) * sizeof *lens), *chain = malloc((n + 1) * sizeof *chain);
  gro_unit *units = malloc((n + 1) * sizeof *units);
  uint8_t *joined = malloc(65536 + 4096);
  napi_value result = NULL;
  if (!pkts || !lens || !chain || !units || !joined) goto out;
  for (uint32_t i = 0; i < n; i++) {
    napi_value el;
    void *data = NULL;
    size_t len = 0;
    if (napi_get_element(env, argv[0], i, &el) != napi_ok || get_bytes(env, el, &data, &len) < 0 || len > 65535) {
      throw_type(env, "packets must hold Uint8Arrays of at most 65535 bytes");
      goto out;
    }
    pkts[i] = data;
    lens[i] = (uint32_t)len;
  }
  uint32_t k = gro_plan(pkts, lens, n, chain, units);
  napi_create_array_with_length(env, k, &result);
  for (uint32_t u = 0; u < k; u++) {
    size_t at = lens[units[u].head];
    memcpy(joined, pkts[units[u].head], at);
    for (uint32_t i = chain[units[u].head]; i != UINT32_MAX; i = chain[i]) {
      size_t part = lens[i] - units[u].hdr_len;
      memcpy(joined + at, pkts[i] + units[u].hdr_len, part);
      at += part;
    }
    napi_value pair;
    napi_create_array_with_length(env, 2, &pair);
    napi_set_element(env, pair, 0, make_buffer(env, &units[u].h, VNET_HDR_LEN));
    napi_set_element(env, pair, 1, make_buffer(env, joined, at));
    napi_set_element(env, result, u, pair);
  }
out:
  free(pkts);
  free(lens);
  free(chain);
  free(units);
  free(joined);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openFd", NULL, js_open_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setMtu", NULL, js_set_mtu, NULL, NULL, NULL, napi_enumerable, NULL},
      {"startReading", NULL, js_start_reading, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setRef", NULL, js_set_ref, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, js_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeBatch", NULL, js_write_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_enumerable, NULL},
      {"offloadRead", NULL, js_offload_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"offloadCoalesce", NULL, js_offload_coalesce, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
