/*
 * N-API helpers shared by the project's native addons (the TUN device in
 * src/tun/native/, the batched UDP sockets in src/transport/native/):
 * errno-named JS errors, and the small pieces of handle lifetime both need.
 * Header-only (static functions): each addon is one translation unit.
 */
#ifndef TUNVPN_NAPI_COMMON_H
#define TUNVPN_NAPI_COMMON_H

#include <errno.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* The errno's symbolic name: the `code` of the JS error. */
static const char *errno_name(int err) {
  switch (err) {
    case EACCES: return "EACCES";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EAGAIN: return "EAGAIN";
    case EALREADY: return "EALREADY";
    case EBADF: return "EBADF";
    case EBADFD: return "EBADFD";
    case EBUSY: return "EBUSY";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EEXIST: return "EEXIST";
    case EFAULT: return "EFAULT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case EMFILE: return "EMFILE";
    case EMSGSIZE: return "EMSGSIZE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENETDOWN: return "ENETDOWN";
    case ENETUNREACH: return "ENETUNREACH";
    case ENFILE: return "ENFILE";
    case ENOBUFS: return "ENOBUFS";
    case ENODEV: return "ENODEV";
    case ENOENT: return "ENOENT";
    case ENOMEM: return "ENOMEM";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case ENOTTY: return "ENOTTY";
    case ENXIO: return "ENXIO";
    case EPERM: return "EPERM";
    case EPIPE: return "EPIPE";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    default: break;
  }
  /* libuv knows the rest (UV_E* == -errno on Unix). */
  return uv_err_name(-err);
}

/* An Error whose code is the errno name, with errno and syscall properties. */
static napi_value make_errno_error(napi_env env, int err, const char *syscall, const char *what) {
  char msg[256];
  napi_value code, message, error, errno_val, syscall_val;
  snprintf(msg, sizeof msg, "%s%s%s failed: %s (%s)", what ? what : "", what ? ": " : "", syscall, strerror(err), errno_name(err));
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &errno_val);
  napi_set_named_property(env, error, "errno", errno_val);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_val);
  napi_set_named_property(env, error, "syscall", syscall_val);
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *what) {
  napi_throw(env, make_errno_error(env, err, syscall, what));
  return NULL;
}

/* An Error with a given code and no errno (bad input the syscall would
 * refuse, such as a name or address that does not parse: "EINVAL"). */
static napi_value throw_code(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static int get_bool(napi_env env, napi_value v) {
  bool b = false;
  if (napi_get_value_bool(env, v, &b) != napi_ok) return 0;
  return b;
}

/* uv_close callback for a malloc'ed uv_poll_t. */
static void on_poll_closed(uv_handle_t *h) { free(h); }

static void delete_ref(napi_env env, napi_ref *ref) {
  if (*ref) {
    napi_delete_reference(env, *ref);
    *ref = NULL;
  }
}

/*
 * What both addons' handles share: a non-blocking fd watched by uv_poll,
 * JS callbacks made through an async context, and the guards that keep a
 * finalizer from freeing a handle while one of its callbacks is on the C
 * stack. Each handle struct embeds one as `pl`.
 */
typedef struct tv_poller {
  napi_env env;
  /* Whether an active watcher keeps the event loop alive. */
  int reffed;
  /* Callbacks of ours on the C stack (finalizers may run during their GC). */
  int in_callback;
  /* The finalizer ran during a callback: free on the way out. */
  int free_pending;
  uv_poll_t *poll;
  napi_ref self_ref;
  napi_ref on_batch;
  napi_ref on_error;
  napi_async_context async_ctx;
} tv_poller;

/* Starts watching `fd` for readability; the callback finds `data` in
 * h->data. Returns 0 or a negative errno; on failure nothing is left. */
static int poller_start(tv_poller *pl, int fd, uv_poll_cb cb, void *data) {
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(pl->env, &loop) != napi_ok || !loop) return -EINVAL;
  uv_poll_t *p = malloc(sizeof *p);
  if (!p) return -ENOMEM;
  int rc = uv_poll_init(loop, p, fd);
  if (rc < 0) {
    free(p);
    return rc;
  }
  p->data = data;
  rc = uv_poll_start(p, UV_READABLE, cb);
  if (rc < 0) {
    uv_close((uv_handle_t *)p, on_poll_closed);
    return rc;
  }
  if (!pl->reffed) uv_unref((uv_handle_t *)p);
  pl->poll = p;
  return 0;
}

/* While reading, the JS object and its callbacks stay alive; callbacks run
 * in one async context named `resource`. */
static void poller_keep(tv_poller *pl, napi_value self, napi_value on_batch, napi_value on_error, const char *resource) {
  napi_create_reference(pl->env, on_batch, 1, &pl->on_batch);
  napi_create_reference(pl->env, on_error, 1, &pl->on_error);
  napi_create_reference(pl->env, self, 1, &pl->self_ref);
  if (!pl->async_ctx) {
    napi_value name;
    napi_create_string_utf8(pl->env, resource, NAPI_AUTO_LENGTH, &name);
    napi_async_init(pl->env, NULL, name, &pl->async_ctx);
  }
}

/* Stops the watcher and lets go of the callbacks; an idle handle may then
 * be collected (its finalizer closes it). */
static void poller_stop(tv_poller *pl) {
  if (pl->poll) {
    uv_poll_stop(pl->poll);
    uv_close((uv_handle_t *)pl->poll, on_poll_closed);
    pl->poll = NULL;
  }
  delete_ref(pl->env, &pl->on_batch);
  delete_ref(pl->env, &pl->on_error);
  delete_ref(pl->env, &pl->self_ref);
}

/* The async context is still in use while one of our callbacks runs (JS may
 * close the handle from inside it); it is then destroyed on the way out. */
static void poller_destroy_async(tv_poller *pl) {
  if (pl->async_ctx && !pl->in_callback) {
    napi_async_destroy(pl->env, pl->async_ctx);
    pl->async_ctx = NULL;
  }
}

static void poller_set_ref(tv_poller *pl, int ref) {
  pl->reffed = ref;
  if (pl->poll) {
    if (ref) uv_ref((uv_handle_t *)pl->poll);
    else uv_unref((uv_handle_t *)pl->poll);
  }
}

/* Calls into JS; an exception it throws becomes an uncaught exception. */
static void poller_call_js(tv_poller *pl, napi_value fn, size_t argc, napi_value *argv) {
  napi_env env = pl->env;
  napi_value recv;
  napi_get_global(env, &recv);
  pl->in_callback++;
  napi_status st = napi_make_callback(env, pl->async_ctx, recv, fn, argc, argv, NULL);
  pl->in_callback--;
  if (st == napi_pending_exception) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
}

#endif
