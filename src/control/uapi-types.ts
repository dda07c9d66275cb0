/**
 * The contract between the control socket (uapi-server.ts) and the daemon.
 * The socket speaks the cross-platform userspace API text protocol; the
 * daemon only ever sees these values: a snapshot to report, a parsed request
 * to apply.
 */
import { TunvpnError } from '../errors.js';

/** Where `wg` looks for userspace implementations' sockets. */
export const DEFAULT_UAPI_DIR = '/var/run/wireguard';

export interface UapiPeerState {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: { address: string; port: number; family: 4 | 6 };
  persistentKeepalive: number;
  /** Wall-clock time of the latest completed handshake, ms since the epoch; 0 = never. */
  lastHandshakeWallMs: number;
  rxBytes: number;
  txBytes: number;
  /** Canonical CIDR text. */
  allowedIPs: string[];
}

export interface UapiInterfaceState {
  privateKey?: Uint8Array;
  listenPort: number;
  fwmark: number;
  peers: UapiPeerState[];
}

/** An endpoint as typed: an IP literal (IPv6 without brackets, maybe with a `%zone`) and a port. */
export interface UapiEndpoint {
  host: string;
  port: number;
}

/**
 * One line of a peer section, in request order: wireguard-go applies a set
 * line by line, and the order inside a section matters (an `allowed_ip`
 * before `replace_allowed_ips`, `remove` or `update_only` still takes the
 * prefix from its previous owner, then loses it). See docs/apply.md.
 */
export type UapiPeerOp =
  | { kind: 'remove' }
  | { kind: 'update-only' }
  /** null = clear (an all-zero key on the wire). */
  | { kind: 'preshared-key'; key: Uint8Array | null }
  | { kind: 'endpoint'; endpoint: UapiEndpoint }
  | { kind: 'persistent-keepalive'; seconds: number }
  | { kind: 'replace-allowed-ips' }
  /** Canonical CIDR text (host bits cleared). */
  | { kind: 'allowed-ip'; cidr: string };

/** One `public_key=` section and its lines. The same key may have several sections; apply them in order. */
export interface UapiPeerSection {
  publicKey: Uint8Array;
  ops: UapiPeerOp[];
}

/** The interface lines before the first `public_key=`, in request order. */
export type UapiDeviceOp =
  /** null = clear (all-zero key); otherwise already clamped. */
  { kind: 'private-key'; key: Uint8Array | null } | { kind: 'listen-port'; port: number } | { kind: 'fwmark'; mark: number } | { kind: 'replace-peers' };

export interface UapiSetRequest {
  device: UapiDeviceOp[];
  peers: UapiPeerSection[];
}

export interface UapiDevice {
  snapshot(): UapiInterfaceState;
  /** Throws UapiError with an errno number on failure; other errors become errno -55. */
  apply(req: UapiSetRequest): Promise<void>;
}

/**
 * errno values as wireguard-go puts them on the wire: negative Linux errno
 * numbers. `wg` negates them back and prints strerror ("Invalid argument").
 */
export const UAPI_ENOENT = -2;
export const UAPI_ESRCH = -3;
export const UAPI_EIO = -5;
export const UAPI_E2BIG = -7;
export const UAPI_EBUSY = -16;
export const UAPI_EEXIST = -17;
export const UAPI_ENODEV = -19;
export const UAPI_EINVAL = -22;
export const UAPI_ENOANO = -55;
export const UAPI_EPROTO = -71;
export const UAPI_EMSGSIZE = -90;
export const UAPI_EADDRINUSE = -98;

export class UapiError extends TunvpnError {
  readonly errno: number;

  constructor(errno: number, message: string, options?: { cause?: unknown }) {
    super('UAPI_ERROR', message, options);
    this.errno = errno;
  }
}
