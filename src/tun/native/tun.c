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

#define MAX_BATCH 4096
#define OVERFLOW_SIZE 65536

typedef struct tun_dev {
  napi_poller pl;
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
}

static void cleanup_hook(void *arg);

static void close_dev(tun_dev *d) {
  if (d->closed) return;
  d->closed = 1;
  stop_reading(d);
  poller_destroy_async(&d->pl);
  if (d->fd >= 0) {
    close(d->fd);
    d->fd = -1;
  }
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
 * Returns the fd or -errno; `out_name` receives the actual name. */
static int open_tun(const char *name, int multi_queue, int blocking, char out_name[IFNAMSIZ], const char **failed_call) {
  int flags = O_RDWR | O_CLOEXEC | (blocking ? 0 : O_NONBLOCK);
  int fd = open("/dev/net/tun", flags);
  if (fd < 0) {
    *failed_call = "open /dev/net/tun";
    return -errno;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi_queue ? IFF_MULTI_QUEUE : 0);
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

static int parse_open_args(napi_env env, napi_callback_info info, char name[IFNAMSIZ], int *mq) {
  size_t argc = 2;
  napi_value argv[2];
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
    napi_value code, message, error;
    napi_create_string_utf8(env, "EINVAL", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &error);
    napi_throw(env, error);
    return -1;
  }
  *mq = argc > 1 ? get_bool(env, argv[1]) : 0;
  return 0;
}

/* open(name?: string, multiQueue?: boolean) -> [handle, actualName] */
static napi_value js_open(napi_env env, napi_callback_info info) {
  char name[IFNAMSIZ];
  char actual[IFNAMSIZ];
  int mq = 0;
  if (parse_open_args(env, info, name, &mq) < 0) return NULL;
  const char *failed = "";
  int fd = open_tun(name, mq, 0, actual, &failed);
  if (fd < 0) return throw_errno(env, -fd, failed, name[0] ? name : NULL);

  tun_dev *d = calloc(1, sizeof *d);
  if (!d) {
    close(fd);
    return throw_errno(env, ENOMEM, "calloc", NULL);
  }
  d->pl.env = env;
  d->fd = fd;
  d->pl.reffed = 1;
  memcpy(d->name, actual, IFNAMSIZ);

  napi_value handle, name_val, result;
  if (napi_create_external(env, d, finalize_dev, NULL, &handle) != napi_ok) {
    close(fd);
    free(d);
    return NULL;
  }
  if (napi_add_env_cleanup_hook(env, cleanup_hook, d) == napi_ok) d->cleanup_registered = 1;
  napi_create_string_utf8(env, actual, NAPI_AUTO_LENGTH, &name_val);
  napi_create_array_with_length(env, 2, &result);
  napi_set_element(env, result, 0, handle);
  napi_set_element(env, result, 1, name_val);
  return result;
}

/* openFd(name?: string, multiQueue?: boolean) -> [fd, actualName]. A plain
 * BLOCKING fd the caller owns; it exists for the fs-stream comparison in the
 * benchmark, not for production use. */
static napi_value js_open_fd(napi_env env, napi_callback_info info) {
  char name[IFNAMSIZ];
  char actual[IFNAMSIZ];
  int mq = 0;
  if (parse_open_args(env, info, name, &mq) < 0) return NULL;
  const char *failed = "";
  int fd = open_tun(name, mq, 1, actual, &failed);
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
  if (!err) {
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

  if (n > 0 && d->pl.on_batch && !d->closed) {
    napi_value fn, count;
    napi_get_reference_value(env, d->pl.on_batch, &fn);
    napi_create_uint32(env, n, &count);
    poller_call_js(&d->pl, fn, 1, &count);
  }
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
  if (!overflow) return throw_errno(env, ENOMEM, "malloc", d->name);
  int rc = poller_start(&d->pl, d->fd, on_poll, d);
  if (rc < 0) {
    free(overflow);
    return throw_errno(env, -rc, "uv_poll_start", d->name);
  }
  d->overflow = overflow;
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
static int write_one(tun_dev *d, const void *data, size_t len) {
  for (;;) {
    ssize_t r = write(d->fd, data, len);
    if (r >= 0) return 1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    return -errno;
  }
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

/* writeBatch(handle, packets: Uint8Array[], count) -> number written.
 * Stops at the first EAGAIN (returns what was written); any other error
 * throws, with `written` on the error. */
static napi_value js_write_batch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) return throw_type(env, "writeBatch(handle, packets, count)");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  if (d->closed) return throw_errno(env, EBADF, "write", d->name);
  bool is_array = false;
  napi_is_array(env, argv[1], &is_array);
  if (!is_array) return throw_type(env, "packets must be an array");
  uint32_t arr_len = 0, count = 0;
  napi_get_array_length(env, argv[1], &arr_len);
  if (napi_get_value_uint32(env, argv[2], &count) != napi_ok) return throw_type(env, "count must be a non-negative integer");
  if (count > arr_len) count = arr_len;
  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    void *data = NULL;
    size_t len = 0;
    if (napi_get_element(env, argv[1], i, &el) != napi_ok || get_bytes(env, el, &data, &len) < 0)
      return throw_type(env, "packets must hold Uint8Arrays");
    int r = write_one(d, data, len);
    if (r == 1) {
      written++;
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

static napi_value js_oversize_drops(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1) return throw_type(env, "oversizeDrops(handle)");
  tun_dev *d = get_dev(env, argv[0]);
  if (!d) return NULL;
  napi_value out;
  napi_create_double(env, d->oversize_drops, &out);
  return out;
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
      {"oversizeDrops", NULL, js_oversize_drops, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
