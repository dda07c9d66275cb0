/**
 * A wg-quick config, parsed, turned into a tunvpn config object (the JSON
 * that src/config/schema.ts describes). Every value is checked here, so that a mistake is reported
 * with its line number rather than as a JSON path of the output. What tunvpn
 * cannot carry over (DNS, SaveConfig...) is returned as notes, never
 * silently dropped. PreUp/PostUp/PreDown/PostDown become interface.hooks,
 * each line one ["/bin/sh", "-c", line] (with a note); Table and FwMark are
 * carried over with a note saying what the daemon will do with them.
 */
import type { HookPhase, HooksConfig } from './types.js';
import { canonicalAddress, canonicalPrefix, interfaceName, MTU_MAX, MTU_MIN, parseEndpoint } from './formats.js';
import { keyTextProblem } from './keys.js';
import { parseWgQuick, WgQuickError, type WgQuickEntry, type WgQuickSection } from './wgquick-parse.js';

export interface ImportedPeer {
  publicKey: string;
  presharedKey?: string;
  endpoint?: string;
  allowedIPs: string[];
  persistentKeepalive?: number;
}

export interface ImportedConfig {
  interface: {
    name: string;
    privateKey?: string;
    privateKeyFile?: string;
    listenPort: number;
    addresses: string[];
    mtu?: number;
    /** Present when the file has hook lines. */
    hooks?: HooksConfig;
    fwmark?: number;
    /** Absent: "auto" (the default). */
    table?: 'off' | number;
  };
  peers: ImportedPeer[];
}

export interface Conversion {
  config: ImportedConfig;
  /** The interface private key (base64), for the caller to place inline or in a file. */
  privateKey: string;
  /** "line N: Key ..." for every entry not carried over, and other remarks. */
  notes: string[];
}

/** Interface keys wg-quick or wg understand that tunvpn has no equivalent for. */
const UNSUPPORTED_INTERFACE = new Map<string, string>([
  ['dns', 'set DNS servers with your resolver configuration'],
  ['saveconfig', 'tunvpn never writes its config back'],
]);

/** wg-quick's hook keys and the interface.hooks list each goes to. */
const HOOK_KEYS = new Map<string, HookPhase>([
  ['preup', 'preUp'],
  ['postup', 'postUp'],
  ['predown', 'preDown'],
  ['postdown', 'postDown'],
]);

/**
 * wg-quick runs each hook line with bash (`eval`); tunvpn runs argument
 * vectors without a shell, so a line becomes ["/bin/sh", "-c", line]. "%i"
 * stays: tunvpn replaces it with the interface name when it runs the hook,
 * as wg-quick does.
 */
function convertHook(e: WgQuickEntry, phase: HookPhase, hooks: HooksConfig, notes: string[]): void {
  if (e.value === '') {
    notes.push(`line ${e.line}: ${e.key} is empty; nothing to run, left out`);
    return;
  }
  const index = hooks[phase].length;
  hooks[phase].push(['/bin/sh', '-c', e.value]);
  notes.push(
    `line ${e.line}: ${e.key} imported as interface.hooks.${phase}[${index}] = ["/bin/sh", "-c", <the line>] ` +
      '(wg-quick runs it with bash: if it uses bash syntax, make argv[0] "/bin/bash"; %i is kept and replaced by the interface name)',
  );
}

function keyValue(e: WgQuickEntry, what: string): string {
  const problem = keyTextProblem(e.value);
  // The value is never echoed: it may be a secret.
  if (problem !== undefined) throw new WgQuickError(e.line, `${e.key}: ${what} ${problem}`);
  return e.value;
}

function integer(e: WgQuickEntry, min: number, max: number): number {
  if (!/^[0-9]{1,10}$/.test(e.value)) throw new WgQuickError(e.line, `${e.key}: "${e.value}" is not a number from ${min} to ${max}`);
  const n = Number(e.value);
  if (n < min || n > max) throw new WgQuickError(e.line, `${e.key}: ${n} is out of range (${min} to ${max})`);
  return n;
}

/** wg's FwMark: "off", decimal or 0x hex, 32 bits. */
function fwmarkValue(e: WgQuickEntry): number {
  const v = e.value.trim().toLowerCase();
  if (v === 'off') return 0;
  const n = /^0x[0-9a-f]{1,8}$/.test(v) ? Number.parseInt(v.slice(2), 16) : /^[0-9]{1,10}$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n > 0xffffffff)
    throw new WgQuickError(e.line, `${e.key}: "${e.value}" is not "off" or a number from 0 to 4294967295 (decimal or 0x hex)`);
  return n;
}

/** wg-quick's Table: off, auto, main, or a number (other names from rt_tables are refused: give the number). */
function tableValue(e: WgQuickEntry): 'off' | 'auto' | number {
  const v = e.value.trim().toLowerCase();
  if (v === 'off' || v === 'auto') return v;
  if (v === 'main') return 254;
  if (!/^[0-9]{1,10}$/.test(v)) throw new WgQuickError(e.line, `${e.key}: "${e.value}" is not off, auto, main or a table number (give a named table's number)`);
  const n = Number(v);
  if (n < 1 || n > 0xffffffff || n === 253 || n === 255)
    throw new WgQuickError(e.line, `${e.key}: ${n} is not a table tunvpn can route to (1 to 4294967295, not 253 or 255)`);
  return n;
}

function list(e: WgQuickEntry, convert: (item: string) => string): string[] {
  const out: string[] = [];
  for (const item of e.value.split(',').map((s) => s.trim())) {
    if (item === '') continue;
    try {
      out.push(convert(item));
    } catch (err) {
      throw new WgQuickError(e.line, `${e.key}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return out;
}

/** Tracks single-valued keys, so a repeated one can be noted (the last one wins, as in wg). */
class Seen {
  private readonly lines = new Map<string, number>();
  constructor(private readonly notes: string[]) {}
  mark(e: WgQuickEntry): void {
    const before = this.lines.get(e.lkey);
    if (before !== undefined) this.notes.push(`line ${e.line}: ${e.key} repeats line ${before}; the last value wins`);
    this.lines.set(e.lkey, e.line);
  }
}

function convertInterface(section: WgQuickSection, name: string, notes: string[]): { iface: ImportedConfig['interface']; privateKey: string } {
  let privateKey: string | undefined;
  let listenPort: number | undefined;
  let mtu: number | undefined;
  let fwmark: number | undefined;
  let table: { value: 'off' | 'auto' | number; line: number } | undefined;
  const addresses: string[] = [];
  const hooks: HooksConfig = { preUp: [], postUp: [], preDown: [], postDown: [] };
  const seen = new Seen(notes);
  for (const e of section.entries) {
    const phase = HOOK_KEYS.get(e.lkey);
    if (phase !== undefined) {
      convertHook(e, phase, hooks, notes);
      continue;
    }
    switch (e.lkey) {
      case 'privatekey':
        seen.mark(e);
        privateKey = keyValue(e, 'the private key');
        break;
      case 'listenport':
        seen.mark(e);
        listenPort = integer(e, 0, 65535);
        break;
      case 'address':
        addresses.push(...list(e, canonicalAddress));
        break;
      case 'mtu':
        seen.mark(e);
        mtu = integer(e, MTU_MIN, MTU_MAX);
        break;
      case 'fwmark':
        seen.mark(e);
        fwmark = fwmarkValue(e);
        break;
      case 'table':
        seen.mark(e);
        table = { value: tableValue(e), line: e.line };
        break;
      default: {
        const why = UNSUPPORTED_INTERFACE.get(e.lkey);
        if (why === undefined) throw new WgQuickError(e.line, `unknown key ${e.key} in [Interface]`);
        notes.push(`line ${e.line}: ${e.key} is not supported by tunvpn and was left out (${why})`);
      }
    }
  }
  if (privateKey === undefined) throw new WgQuickError(section.line, '[Interface] has no PrivateKey');
  if (listenPort === undefined) {
    notes.push(`line ${section.line}: no ListenPort; using listenPort 0 (a random port, as wg-quick does)`);
    listenPort = 0;
  }
  const iface: ImportedConfig['interface'] = { name, listenPort, addresses };
  if (mtu !== undefined) iface.mtu = mtu;
  if (Object.values(hooks).some((list) => list.length > 0)) iface.hooks = hooks;
  if (fwmark !== undefined && fwmark !== 0) iface.fwmark = fwmark;
  if (table !== undefined && table.value !== 'auto') iface.table = table.value;
  if (table?.value === 'off') notes.push(`line ${table.line}: Table = off: imported as table "off": tunvpn adds no routes for AllowedIPs (you route)`);
  else if (typeof table?.value === 'number') {
    notes.push(
      `line ${table.line}: Table = ${table.value}: every AllowedIPs route goes to table ${table.value}, default routes too, with no policy rules (as wg-quick)`,
    );
  }
  return { iface, privateKey };
}

function convertPeer(section: WgQuickSection, notes: string[]): ImportedPeer {
  let publicKey: string | undefined;
  let presharedKey: string | undefined;
  let endpoint: string | undefined;
  let keepalive: number | undefined;
  const allowedIPs: string[] = [];
  const seen = new Seen(notes);
  for (const e of section.entries) {
    switch (e.lkey) {
      case 'publickey':
        seen.mark(e);
        publicKey = keyValue(e, 'the public key');
        break;
      case 'presharedkey':
        seen.mark(e);
        presharedKey = keyValue(e, 'the preshared key');
        break;
      case 'endpoint':
        seen.mark(e);
        try {
          parseEndpoint(e.value);
        } catch (err) {
          throw new WgQuickError(e.line, `${e.key}: ${err instanceof Error ? err.message : String(err)}`);
        }
        endpoint = e.value;
        break;
      case 'allowedips':
        allowedIPs.push(
          ...list(e, (item) => {
            const p = canonicalPrefix(item);
            if (p.hostBits) notes.push(`line ${e.line}: ${e.key}: ${item} has host bits set; imported as ${p.text}`);
            return p.text;
          }),
        );
        break;
      case 'persistentkeepalive':
        seen.mark(e);
        keepalive = e.value.toLowerCase() === 'off' ? 0 : integer(e, 0, 65535);
        break;
      default:
        throw new WgQuickError(e.line, `unknown key ${e.key} in [Peer]`);
    }
  }
  if (publicKey === undefined) throw new WgQuickError(section.line, '[Peer] has no PublicKey');
  const peer: ImportedPeer = { publicKey, allowedIPs: [...new Set(allowedIPs)] };
  if (presharedKey !== undefined) peer.presharedKey = presharedKey;
  if (endpoint !== undefined) peer.endpoint = endpoint;
  if (keepalive !== undefined && keepalive !== 0) peer.persistentKeepalive = keepalive;
  return peer;
}

/** The interface name wg-quick derives from a config path: "/etc/wireguard/wg0.conf" gives "wg0". */
export function interfaceNameFromPath(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.endsWith('.conf') ? base.slice(0, -'.conf'.length) : base;
}

/** Converts wg-quick text; throws WgQuickError (with a line number) on malformed input. */
export function convertWgQuick(text: string, name: string): Conversion {
  try {
    interfaceName(name);
  } catch (err) {
    throw new WgQuickError(0, `interface name: ${err instanceof Error ? err.message : String(err)} (use --name)`);
  }
  const sections = parseWgQuick(text);
  const notes: string[] = [];
  const ifaceSection = sections.find((s) => s.kind === 'interface');
  if (!ifaceSection) throw new WgQuickError(0, 'no [Interface] section');
  const { iface, privateKey } = convertInterface(ifaceSection, name, notes);
  const peers: ImportedPeer[] = [];
  const keys = new Map<string, number>();
  for (const s of sections) {
    if (s.kind !== 'peer') continue;
    const peer = convertPeer(s, notes);
    const dup = keys.get(peer.publicKey);
    if (dup !== undefined) throw new WgQuickError(s.line, `[Peer] has the same PublicKey as the [Peer] on line ${dup}`);
    keys.set(peer.publicKey, s.line);
    peers.push(peer);
  }
  if (iface.table === undefined) {
    const defaults = [...new Set(peers.flatMap((p) => p.allowedIPs.filter((a) => a === '0.0.0.0/0' || a === '::/0')))];
    if (defaults.length > 0) {
      const t = iface.fwmark ?? 51820;
      notes.push(
        `AllowedIPs ${defaults.join(', ')}: a full tunnel, as wg-quick makes it: the default route${defaults.length > 1 ? 's go' : ' goes'} to table ${t}, the UDP sockets get fwmark ${t}, ` +
          `and per family the rules "not fwmark ${t} table ${t}" and "table main suppress_prefixlength 0"; other AllowedIPs are routed in the main table`,
      );
    }
  }
  return { config: { interface: iface, peers }, privateKey, notes };
}
