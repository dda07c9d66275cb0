/** The validated, ready-to-use configuration the daemon is built from. */
import type { CryptoBackendChoice } from '../crypto/types.js';

export type { CryptoBackendChoice };

/** wg-quick's four hook phases, in the order a start and a stop run them. */
export type HookPhase = 'preUp' | 'postUp' | 'preDown' | 'postDown';

/** Each phase: a list of argument vectors, argv[0] the program (src/hooks.ts runs them). */
export type HooksConfig = Record<HookPhase, string[][]>;

/** A peer's configured endpoint; `host` is an IP literal (IPv6 without brackets) or a hostname. */
export interface EndpointConfig {
  host: string;
  port: number;
}

/**
 * Not changed once loaded, but for the wipe of its preshared key: an
 * incremental reload hands the same object to the next config when the
 * peer's text did not change and it has no preshared key (memo.ts), so
 * anything that needs another value builds a new PeerConfig (as the
 * control socket's merge does).
 */
export interface PeerConfig {
  name?: string;
  /** Canonical base64. */
  publicKey: string;
  publicKeyBytes: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: EndpointConfig;
  /** Canonical CIDR text (host bits cleared, IPv6 in RFC 5952 form). */
  allowedIPs: string[];
  /** Seconds; 0 = off. */
  persistentKeepalive: number;
}

export interface InterfaceConfig {
  name: string;
  privateKey: Uint8Array;
  listenPort: number;
  /** Canonical "address/prefix" text; the host part is kept. */
  addresses: string[];
  mtu: number;
  /** wg-quick's PreUp/PostUp/PreDown/PostDown (src/hooks.ts); absent: none (the loader always fills it in). */
  hooks?: HooksConfig;
  /** SO_MARK for the UDP sockets; 0 = none. */
  fwmark: number;
  /** Where allowed-IP routes go: see the schema's doc. */
  table: RouteTable;
}

export type RouteTable = 'auto' | 'off' | number;

export interface TunvpnConfig {
  /** The file it came from, when it came from a file. */
  path?: string;
  interface: InterfaceConfig;
  peers: PeerConfig[];
  log: { level: string };
  /** Prometheus endpoint; undefined = off. */
  metrics: { listen?: EndpointConfig };
  crypto: { backend: CryptoBackendChoice };
  /**
   * Re-resolution of endpoint host names (src/peers/reresolve.ts):
   * seconds, 0 = off. Optional so configs built in code need not name it;
   * the loader always fills it (default 30).
   */
  dns?: { resolveInterval: number };
  /** Legal but suspicious things, "path: message", e.g. an allowed IP claimed by two peers. */
  warnings: string[];
}
