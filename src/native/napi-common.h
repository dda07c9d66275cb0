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

#endif
