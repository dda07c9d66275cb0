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

/**
 * One `public_key=` section of a set request. Changes for the same key may
 * appear more than once; apply them in order.
 */
export interface UapiPeerChange {
  publicKey: Uint8Array;
  /** Remove the peer; every other field of this change is then meaningless. */
  remove: boolean;
  /** Change the peer only if it exists; never create it. */
  updateOnly: boolean;
  /** undefined = unchanged; null = clear (an all-zero key on the wire). */
  presharedKey?: Uint8Array | null;
  /** An IP literal (IPv6 without brackets) and a port. */
  endpoint?: { host: string; port: number };
  persistentKeepalive?: number;
  /** Drop the peer's allowed IPs before adding `allowedIPs`. */
  replaceAllowedIPs: boolean;
  /** Canonical CIDR text (host bits cleared), to add. */
  allowedIPs: string[];
}

export interface UapiSetRequest {
  /** undefined = unchanged; null = clear (all-zero key); otherwise already clamped. */
  privateKey?: Uint8Array | null;
  listenPort?: number;
  fwmark?: number;
  /** Remove every peer before applying `peers`. */
  replacePeers: boolean;
  peers: UapiPeerChange[];
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
export const UAPI_EIO = -5;
export const UAPI_E2BIG = -7;
export const UAPI_EBUSY = -16;
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
