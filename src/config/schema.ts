/**
 * The configuration schema, in convict's notation: a node with a `default`
 * is a field, any other object is a section. Every field has a `doc`.
 * `default: null` marks an optional field without a default; `required`
 * (our addition, ignored by convict) marks one that must be given. A field
 * whose value is an array of objects names their schema in `items`.
 *
 * To add a section (metrics address, control socket...): add a node here,
 * then copy it into TunvpnConfig in parse.ts.
 */
import * as f from './formats.js';

export interface FieldSchema {
  doc: string;
  default: unknown;
  format: (value: unknown) => void;
  nullable?: boolean;
  /** convict masks it; our errors never print any value anyway. */
  sensitive?: boolean;
  required?: boolean;
  items?: SectionSchema;
}

export interface SectionSchema {
  [key: string]: FieldSchema | SectionSchema;
}

export function isField(node: FieldSchema | SectionSchema): node is FieldSchema {
  return Object.hasOwn(node, 'default');
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export const CRYPTO_BACKENDS = ['auto', 'sodium-native', 'libsodium-wrappers'] as const;

const HOOK_DOC =
  'Each hook is an argument vector (["/usr/sbin/nft", "add", "rule", ...]) run without a shell, in order; "%i" in any argument becomes the interface name. For a shell command: ["/bin/sh", "-c", "..."]. argv[0] is an absolute path or a name looked up in PATH. Each hook may run 30 s, then it is killed; its command and exit status are logged at info, its output at debug. A changed list applies at the next start or stop (a reload never runs hooks).';

/** wg-quick's PreUp, PostUp, PreDown, PostDown (src/hooks.ts). */
export const hooksSchema = {
  preUp: {
    doc: `Run before the interface is created; one failing stops the start (exit 1; nothing more runs). ${HOOK_DOC}`,
    default: [] as string[][],
    format: f.hookList,
  },
  postUp: {
    doc: `Run once the interface, its addresses and routes are up (e.g. NAT and firewall rules); one failing stops the start: the later hooks do not run and the interface is removed (exit 1). ${HOOK_DOC}`,
    default: [] as string[][],
    format: f.hookList,
  },
  preDown: {
    doc: `Run at stop while the interface still exists; a failure is logged and the stop continues. ${HOOK_DOC}`,
    default: [] as string[][],
    format: f.hookList,
  },
  postDown: {
    doc: `Run at stop after the interface is removed (e.g. delete what postUp added); a failure is logged and the stop continues. ${HOOK_DOC}`,
    default: [] as string[][],
    format: f.hookList,
  },
} satisfies SectionSchema;
/** A Linux firewall mark: 0 (none) to 2^32-1. */
function fwmarkFormat(v: unknown): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new Error(
      `must be an integer from 0 to 4294967295 (0 = no mark), got ${typeof v === 'number' ? String(v) : v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`}`,
    );
  }
}

/** Routing tables a user may not send our routes to: 0 (unspecified), 253 (default), 255 (local). */
export const RESERVED_TABLES: readonly number[] = [0, 253, 255];

function tableFormat(v: unknown): void {
  if (v === 'auto' || v === 'off') return;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 0xffffffff) {
    if (RESERVED_TABLES.includes(v)) throw new Error(`must not be table ${v} (reserved: ${v === 253 ? 'default' : 'local'})`);
    return;
  }
  const got =
    typeof v === 'string'
      ? `"${v.slice(0, 32).replace(/[^\x20-\x7e]/g, '?')}"`
      : v === null
        ? 'null'
        : Array.isArray(v)
          ? 'an array'
          : typeof v === 'number'
            ? String(v)
            : `a ${typeof v}`;
  throw new Error(`must be "auto", "off" or a routing table number from 1 to 4294967295, got ${got}`);
}

export const interfaceSchema = {
  name: {
    doc: 'Name of the TUN interface to create: 1 to 15 ASCII letters, digits and _ = + . - (the characters wg-quick accepts, within Linux\'s own rules), not "." or "..", not starting with "-". The same rule holds for `run`, its `ip` calls and the control socket\'s file name (src/config/ifname.ts).',
    default: 'tunvpn0',
    format: f.interfaceName,
  },
  privateKey: {
    doc: 'Our X25519 private key, base64 as printed by `tunvpn genkey`. Prefer privateKeyFile; give exactly one of the two.',
    default: null,
    nullable: true,
    sensitive: true,
    format: f.keyText,
  },
  privateKeyFile: {
    doc: "File holding our private key (base64, one line), relative to the config file's directory. Must not be readable or writable by group or others (chmod 600).",
    default: null,
    nullable: true,
    format: f.filePath,
  },
  listenPort: {
    doc: 'UDP port to listen on (0 to 65535; 0 picks a random free port).',
    default: 51820,
    format: f.listenPort,
  },
  addresses: {
    doc: 'Addresses assigned to the interface, CIDR with the host part, e.g. "10.62.0.1/24" or "fd62::1/64". May be empty.',
    default: [] as string[],
    format: f.addressList,
  },
  mtu: {
    doc: `MTU of the interface (${f.MTU_MIN} to ${f.MTU_MAX}; at least ${f.MTU_MIN_IPV6} when an address is IPv6). 1420 fits a 1500-byte underlay with IPv6 and WireGuard overhead.`,
    default: 1420,
    format: f.mtu,
  },
  hooks: hooksSchema,
  fwmark: {
    doc: 'Firewall mark (SO_MARK) on the daemon\'s UDP sockets, 0 to 4294967295; 0 = none (the default). Policy rules can match it to keep the tunnel\'s own datagrams off the tunnel. With table "auto" and a default route (0.0.0.0/0 or ::/0 in allowedIPs) a zero fwmark means 51820 (see table). Needs the native UDP binding (node:dgram cannot mark). Changed by reload and `wg set IF fwmark M` without a rebind.',
    default: 0,
    format: fwmarkFormat,
  },
  table: {
    doc: 'Where the routes for allowed IPs go. "auto" (the default): the main table, except default routes (0.0.0.0/0, ::/0), which go to a table of their own, number fwmark (51820 when fwmark is 0), with the rules `not fwmark M table T` and `table main suppress_prefixlength 0` per family (a full tunnel, as wg-quick does it). "off": no routes at all (you route). A number (1 to 4294967295, not 253 or 255): every route goes to that table, no rules. A reload moves the routes.',
    default: 'auto',
    format: tableFormat,
  },
} satisfies SectionSchema;

export const peerSchema = {
  name: {
    doc: 'Optional human-readable label, unique among peers; used in logs only.',
    default: null,
    nullable: true,
    format: f.peerName,
  },
  publicKey: {
    doc: "The peer's X25519 public key, base64 (as printed by `tunvpn pubkey`). Required and unique.",
    default: null,
    nullable: true,
    required: true,
    format: f.keyText,
  },
  presharedKey: {
    doc: 'Optional extra symmetric key for this peer (post-quantum hedge), base64 as printed by `tunvpn genpsk`. At most one of presharedKey and presharedKeyFile.',
    default: null,
    nullable: true,
    sensitive: true,
    format: f.keyText,
  },
  presharedKeyFile: {
    doc: "File holding the preshared key, relative to the config file's directory; mode must not give group or others any access.",
    default: null,
    nullable: true,
    format: f.filePath,
  },
  endpoint: {
    doc: 'Where to reach the peer: "203.0.113.7:51820", "[2001:db8::7]:51820", "[fe80::1%eth0]:51820" (an IPv6 link-local address needs its zone: an interface name or index; no other address may have one) or "vpn.example.org:51820". Optional: without it we wait for the peer to contact us. Updated at run time to the source of the peer\'s latest authenticated packet.',
    default: null,
    nullable: true,
    format: f.endpoint,
  },
  allowedIPs: {
    doc: 'Prefixes routed to this peer and accepted from it, IPv4 or IPv6 CIDR ("10.62.0.2/32", "fd62::/64", "0.0.0.0/0"). Host bits are cleared. A prefix listed by two peers is legal (a warning): the later peer gets it, as in WireGuard.',
    default: [] as string[],
    format: f.prefixList,
  },
  persistentKeepalive: {
    doc: 'Send a keepalive every this many seconds to keep NAT mappings open (1 to 65535); 0 turns it off.',
    default: 0,
    format: f.keepalive,
  },
} satisfies SectionSchema;

export const configSchema = {
  interface: interfaceSchema,
  peers: {
    doc: 'The peers we talk to; each is an object described by the peer schema.',
    default: [] as unknown[],
    format: f.arrayOfObjects,
    items: peerSchema,
  },
  log: {
    level: {
      doc: `Log level: ${LOG_LEVELS.join(', ')}.`,
      default: 'info',
      format: f.oneOf(LOG_LEVELS),
    },
  },
  metrics: {
    listen: {
      doc: 'Serve Prometheus metrics over HTTP at this "ip:port" (e.g. "127.0.0.1:9586"; path /metrics). Off when null (the default). Metrics carry peer names and public keys, never private keys: bind to loopback or a management network.',
      default: null,
      nullable: true,
      format: f.listenAddress,
    },
  },
  dns: {
    resolveInterval: {
      doc: "Seconds between lookups of a peer endpoint's host name while that peer has no handshake younger than 135 s (a dynamic-DNS peer that moved: the same rule as wireguard-tools' reresolve-dns script), plus up to a quarter of random jitter; at most 2 lookups run at once. An address change is logged and used at once; an endpoint learned from the peer's authenticated packets is never replaced while its session is alive. 1 to 3600; 0 turns it off (names are then resolved only at start and reload).",
      default: 30,
      format: f.resolveInterval,
    },
  },
  crypto: {
    backend: {
      doc: 'Crypto implementation: "sodium-native" (native libsodium, fastest), "libsodium-wrappers" (WebAssembly, portable) or "auto" (the first that loads, in that order).',
      default: 'auto',
      format: f.oneOf(CRYPTO_BACKENDS),
    },
  },
} satisfies SectionSchema;

export interface FieldDoc {
  path: string;
  doc: string;
  default: unknown;
}

/** Every field with its doc and default, for help text and tests. */
export function describeSchema(schema: SectionSchema = configSchema, prefix = ''): FieldDoc[] {
  const out: FieldDoc[] = [];
  for (const [key, node] of Object.entries(schema)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (isField(node)) {
      out.push({ path, doc: node.doc, default: node.default });
      if (node.items) out.push(...describeSchema(node.items, `${path}[]`));
    } else {
      out.push(...describeSchema(node, path));
    }
  }
  return out;
}
