/**
 * The config fuzzer: seeded mutations of valid configs (structure, values,
 * types, sizes, nesting depth, duplicate keys, key-like strings in every
 * position, broken JSON text) and special files (FIFO, directory, devices,
 * socket, symlink loop, huge sparse files, odd key files), each checked by
 * running the compiled `tunvpn check` as a child process with a time limit
 * and a heap cap. Every case must:
 *
 * - exit 0, 78 or 2 (never 1, never a signal or a timeout);
 * - on 78, give every problem a field path, a line and column, or (for the
 *   file as a whole) the config file's name;
 * - print no window of 16 characters of any key the fuzzer made (base64,
 *   hex or base64url), and no control character other than newline;
 * - stay within the wall-time and peak-RSS bounds.
 *
 * Case N of seed S is the same on every run (`--seed S --case N` replays it).
 * Used by bench/fuzz-config.ts (`npm run fuzz:config`) and, briefly, by
 * test/config/fuzz.test.ts in CI.
 */
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync, ftruncateSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { publicKeyOf } from '../../src/testbed/keys.js';
import { runCli, type CliRun } from './cli-run.js';

// ---------------------------------------------------------------- randomness

/** mulberry32: small, fast, good enough to pick mutations; seeded per case. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

function caseSeed(seed: number, index: number): number {
  // Distinct, well-mixed seeds per case (splitmix-style constant).
  return (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
}

// ---------------------------------------------------------------- keys

export interface FuzzKey {
  b64: string;
  hex: string;
  b64url: string;
}

function keyForms(bytes: Buffer): FuzzKey {
  return { b64: bytes.toString('base64'), hex: bytes.toString('hex'), b64url: bytes.toString('base64url') };
}

interface KeySet {
  me: { priv: FuzzKey; pub: FuzzKey };
  peers: { priv: FuzzKey; pub: FuzzKey }[];
  psks: FuzzKey[];
  /** Every key above: none of them may appear in any output. */
  all: FuzzKey[];
}

function makeKeys(rng: Rng): KeySet {
  const pair = () => {
    const priv = rng.bytes(32);
    return { priv: keyForms(priv), pub: keyForms(publicKeyOf(priv)) };
  };
  const me = pair();
  const peers = [pair(), pair(), pair(), pair()];
  const psks = [keyForms(rng.bytes(32)), keyForms(rng.bytes(32))];
  return { me, peers, psks, all: [me.priv, me.pub, ...peers.flatMap((p) => [p.priv, p.pub]), ...psks] };
}

/** Every 16-character window of every form of every key. */
function keyWindows(keys: readonly FuzzKey[]): string[] {
  const out = new Set<string>();
  for (const k of keys) {
    for (const form of [k.b64, k.hex, k.b64url]) {
      for (let i = 0; i + 16 <= form.length; i++) out.add(form.slice(i, i + 16));
    }
  }
  return [...out];
}

// ---------------------------------------------------------------- a JSON tree that can hold duplicate keys and raw text

type JVal = null | boolean | number | string | JVal[] | JObj | JRaw;
interface JObj {
  t: 'o';
  e: [string, JVal][];
}
interface JRaw {
  t: 'r';
  s: string;
}

const obj = (entries: [string, JVal][]): JObj => ({ t: 'o', e: entries });
const raw = (s: string): JRaw => ({ t: 'r', s });

function isObj(v: JVal): v is JObj {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && v.t === 'o';
}

function serialize(v: JVal, indent: string, level = 0): string {
  if (v === null || typeof v === 'boolean' || typeof v === 'number') return JSON.stringify(v);
  if (typeof v === 'string') return JSON.stringify(v);
  const nl = indent ? `\n${indent.repeat(level + 1)}` : '';
  const end = indent ? `\n${indent.repeat(level)}` : '';
  if (Array.isArray(v)) return v.length ? `[${v.map((x) => nl + serialize(x, indent, level + 1)).join(',')}${end}]` : '[]';
  if (v.t === 'r') return v.s;
  return v.e.length ? `{${v.e.map(([k, x]) => `${nl}${JSON.stringify(k)}:${indent ? ' ' : ''}${serialize(x, indent, level + 1)}`).join(',')}${end}}` : '{}';
}

/** A place a value sits: an object entry or an array element. */
interface Slot {
  get(): JVal;
  set(v: JVal): void;
  /** Object entries only: the property name. */
  rename?: (name: string) => void;
  remove(): void;
}

function slots(root: JVal): Slot[] {
  const out: Slot[] = [];
  const walk = (v: JVal): void => {
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        out.push({ get: () => v[i], set: (n) => (v[i] = n), remove: () => v.splice(i, 1) });
        walk(x);
      });
    } else if (isObj(v)) {
      v.e.forEach((entry, i) => {
        out.push({
          get: () => entry[1],
          set: (n) => (entry[1] = n),
          rename: (name) => (entry[0] = name),
          remove: () => v.e.splice(i, 1),
        });
        walk(entry[1]);
      });
    }
  };
  walk(root);
  return out;
}

function objects(root: JVal): JObj[] {
  const out: JObj[] = [];
  const walk = (v: JVal): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (isObj(v)) {
      out.push(v);
      v.e.forEach(([, x]) => {
        walk(x);
      });
    }
  };
  walk(root);
  return out;
}

// ---------------------------------------------------------------- the files a case can point at

interface Env {
  dir: string;
  keys: KeySet;
  files: {
    privateKey: string;
    psk: string;
    openKey: string;
    hugeKey: string;
    emptyKey: string;
    fifo: string;
    directory: string;
    loop: string;
    linkToFifo: string;
    socket: string;
    hugeConfig: string;
    limitConfig: string;
    missing: string;
  };
}

const CONFIG_LIMIT = 16 * 1024 * 1024;

function sparse(path: string, size: number): void {
  const fd = openSync(path, 'w', 0o600);
  ftruncateSync(fd, size);
  closeSync(fd);
}

async function makeEnv(rng: Rng): Promise<{ env: Env; server: Server }> {
  const dir = mkdtempSync(join(tmpdir(), 'tunvpn-fuzz-'));
  const keys = makeKeys(rng);
  const f = (name: string) => join(dir, name);
  const write = (name: string, content: string, mode: number) => {
    writeFileSync(f(name), content, { mode });
    chmodSync(f(name), mode);
    return f(name);
  };
  const files: Env['files'] = {
    privateKey: write('private.key', `${keys.me.priv.b64}\n`, 0o600),
    psk: write('peer.psk', `${keys.psks[0].b64}\n`, 0o600),
    openKey: write('open.key', `${keys.me.priv.b64}\n`, 0o644),
    emptyKey: write('empty.key', '', 0o600),
    hugeKey: f('huge.key'),
    fifo: f('fifo'),
    directory: f('a-directory'),
    loop: f('loop'),
    linkToFifo: f('link-to-fifo'),
    socket: f('socket'),
    hugeConfig: f('huge.json'),
    limitConfig: f('limit.json'),
    missing: f('missing.json'),
  };
  sparse(files.hugeKey, 1 << 30);
  execFileSync('mkfifo', ['-m', '0600', files.fifo]);
  mkdirSync(files.directory);
  symlinkSync(files.loop, files.loop);
  symlinkSync(files.fifo, files.linkToFifo);
  // A 16 MiB + 1 sparse file, and one of exactly the limit (all NUL bytes).
  sparse(files.hugeConfig, CONFIG_LIMIT + 1);
  sparse(files.limitConfig, CONFIG_LIMIT);
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(files.socket, () => resolve());
  });
  return { env: { dir, keys, files }, server };
}

// ---------------------------------------------------------------- values

const GOOD_NAMES = ['tunvpn0', 'wg0', 'a', 'tun_1', 'x=y+z.0', 'abcdefghijklmno'];
const BAD_NAMES = [
  '',
  '.',
  '..',
  'fz#0',
  'fz\u00e90',
  'a,b',
  '-tun',
  'a\u001bb',
  'a\u0000b',
  'a b',
  'a/b',
  'a:b',
  'a@b',
  'abcdefghijklmnop',
  '\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9',
  'tun\t0',
  'x\u202e0',
  '\u001b[2J',
];
const ENDPOINTS = [
  '203.0.113.7:51820',
  '[2001:db8::7]:51820',
  'vpn.example.org:51820',
  '127.0.0.1:0',
  '1.2.3.4',
  '[fe80::1%eth0]:51820',
  'fd00::1:51820',
  '[::1]:65536',
  ':51820',
  'a..b:1',
  '256.1.1.1:1',
  `${'a'.repeat(64)}.org:1`,
];
const WEIRD_STRINGS = [
  '',
  ' ',
  '\u0000',
  '\u001b]0;owned\u0007',
  '\u001b[31mred\u001b[0m',
  '\r\nInjected: line',
  '\u202eevil',
  '\ud800',
  '\u00e9',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  '../../etc/passwd',
  '%s%s%n',
  // biome-ignore lint/suspicious/noTemplateCurlyInString: fed to the daemon as is, never expanded
  '${HOME}',
  '"quoted"',
  '\\',
];
const WEIRD_NUMBERS = ['1e400', '-0', '-1', '1.5', '99999999999999999999999', '1e-400', '0.0000001', '65535', '65536', '4294967296', '-9007199254740993'];

function v4(rng: Rng): string {
  return `${rng.int(256)}.${rng.int(256)}.${rng.int(256)}.${rng.int(256)}`;
}

function v6(rng: Rng): string {
  return `fd${rng.int(256).toString(16).padStart(2, '0')}:${rng.int(65536).toString(16)}::${rng.int(65536).toString(16)}`;
}

function prefix(rng: Rng): string {
  return rng.chance(0.7) ? `${v4(rng)}/${rng.pick([8, 16, 24, 32, 0])}` : `${v6(rng)}/${rng.pick([48, 64, 128, 0])}`;
}

/** A key in one of its forms, sometimes wrapped in other text: "key material" to be hidden wherever it lands. */
function keyLike(rng: Rng, keys: KeySet): string {
  const k = rng.pick(keys.all);
  const form = rng.pick([k.b64, k.b64, k.hex, k.b64url]);
  return rng.pick([form, form, `/etc/tunvpn/${form}`, `${form}.key`, `${form}\n`, ` ${form} `, `${form}:51820`, `[${form}]:1`, `x${form}`, `${form}${form}`]);
}

function randomString(rng: Rng, keys: KeySet): string {
  switch (rng.int(6)) {
    case 0:
      return keyLike(rng, keys);
    case 1:
      return rng.pick(WEIRD_STRINGS);
    case 2:
      return rng.pick(BAD_NAMES);
    case 3:
      return rng.pick(ENDPOINTS);
    case 4:
      return prefix(rng);
    default: {
      const n = rng.pick([1, 5, 20, 100, 1000]);
      let s = '';
      for (let i = 0; i < n; i++) s += String.fromCharCode(rng.chance(0.9) ? 0x20 + rng.int(95) : rng.int(0x3000));
      return s;
    }
  }
}

function randomValue(rng: Rng, keys: KeySet, depth = 0): JVal {
  switch (rng.int(depth > 2 ? 6 : 8)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, 1, -1, 1420, 51820, 65536, 1.5, 1e21]);
    case 3:
      return raw(rng.pick(WEIRD_NUMBERS));
    case 4:
    case 5:
      return randomString(rng, keys);
    case 6:
      return Array.from({ length: rng.int(4) }, () => randomValue(rng, keys, depth + 1));
    default:
      return obj(Array.from({ length: rng.int(3) }, () => [randomString(rng, keys), randomValue(rng, keys, depth + 1)] as [string, JVal]));
  }
}

// ---------------------------------------------------------------- a valid config

function validConfig(rng: Rng, env: Env): JObj {
  const { keys, files } = env;
  const iface: [string, JVal][] = [['name', rng.pick(GOOD_NAMES)]];
  if (rng.chance(0.5)) iface.push(['privateKeyFile', rng.chance(0.5) ? 'private.key' : files.privateKey]);
  else iface.push(['privateKey', keys.me.priv.b64]);
  if (rng.chance(0.7)) iface.push(['listenPort', rng.pick([0, 51820, 12345])]);
  if (rng.chance(0.7))
    iface.push([
      'addresses',
      Array.from({ length: rng.int(3) }, () => (rng.chance(0.7) ? `10.${rng.int(256)}.0.1/24` : `fd62::${rng.int(65536).toString(16)}/64`)),
    ]);
  if (rng.chance(0.5)) iface.push(['mtu', rng.pick([1280, 1420, 1500])]);
  const peers: JVal[] = [];
  const n = rng.pick([0, 1, 1, 2, 3, 4]);
  for (let i = 0; i < n; i++) {
    const p: [string, JVal][] = [['publicKey', keys.peers[i].pub.b64]];
    if (rng.chance(0.5)) p.push(['name', `peer-${i}`]);
    if (rng.chance(0.3)) p.push(rng.chance(0.5) ? ['presharedKey', keys.psks[i % 2].b64] : ['presharedKeyFile', 'peer.psk']);
    if (rng.chance(0.6)) p.push(['endpoint', rng.pick(ENDPOINTS.slice(0, 3))]);
    p.push(['allowedIPs', Array.from({ length: rng.int(4) }, () => `10.${100 + i}.${rng.int(256)}.0/24`)]);
    if (rng.chance(0.3)) p.push(['persistentKeepalive', 25]);
    peers.push(obj(p));
  }
  const root: [string, JVal][] = [
    ['interface', obj(iface)],
    ['peers', peers],
  ];
  if (rng.chance(0.4)) root.push(['log', obj([['level', rng.pick(['info', 'debug', 'warn'])]])]);
  if (rng.chance(0.3)) root.push(['metrics', obj([['listen', '127.0.0.1:9586']])]);
  if (rng.chance(0.3)) root.push(['crypto', obj([['backend', 'auto']])]);
  return obj(root);
}

// ---------------------------------------------------------------- mutations

type Mutation = (rng: Rng, root: JObj, env: Env) => string;

function nested(rng: Rng, depth: number): JRaw {
  if (rng.chance(0.5)) return raw(`${'['.repeat(depth)}${']'.repeat(depth)}`);
  return raw(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`);
}

function findObj(root: JObj, name: string): JObj | undefined {
  const e = root.e.find(([k, v]) => k === name && isObj(v));
  return e && isObj(e[1]) ? e[1] : undefined;
}

function peersOf(root: JObj): JObj[] {
  const e = root.e.find(([k]) => k === 'peers');
  return e && Array.isArray(e[1]) ? e[1].filter(isObj) : [];
}

/** The section `name` of the root, created empty when absent or not an object. */
function ensureObj(root: JObj, name: string): JObj {
  const found = findObj(root, name);
  if (found) return found;
  const made = obj([]);
  root.e.push([name, made]);
  return made;
}

function setField(o: JObj, name: string, v: JVal): void {
  const e = o.e.find(([k]) => k === name);
  if (e) e[1] = v;
  else o.e.push([name, v]);
}

const MUTATIONS: Record<string, Mutation> = {
  replaceValue(rng, root, env) {
    const s = slots(root);
    if (s.length) rng.pick(s).set(randomValue(rng, env.keys));
    return 'replace a value';
  },
  deleteEntry(rng, root) {
    const s = slots(root);
    if (s.length) rng.pick(s).remove();
    return 'delete an entry';
  },
  unknownProperty(rng, root, env) {
    rng.pick(objects(root)).e.push([randomString(rng, env.keys), randomValue(rng, env.keys)]);
    return 'add an unknown property';
  },
  duplicateKey(rng, root, env) {
    const o = rng.pick(objects(root));
    const e = o.e.length ? rng.pick(o.e) : (['x', 1] as [string, JVal]);
    const name = rng.chance(0.3) ? keyLike(rng, env.keys) : e[0];
    o.e.push([name, rng.chance(0.5) ? e[1] : randomValue(rng, env.keys)]);
    if (name !== e[0]) o.e.push([name, 1]);
    return 'duplicate a key';
  },
  keyLikeName(rng, root, env) {
    const named = slots(root).filter((s) => s.rename);
    if (named.length) rng.pick(named).rename?.(keyLike(rng, env.keys));
    return 'key-like property name';
  },
  keyLikeValue(rng, root, env) {
    const s = slots(root);
    if (s.length) rng.pick(s).set(keyLike(rng, env.keys));
    return 'key-like value';
  },
  keyLikeField(rng, root, env) {
    // The fields where a pasted key is most likely, and most dangerous to echo.
    const iface = findObj(root, 'interface');
    const peer = peersOf(root)[0];
    const target = rng.int(6);
    if (target === 0 && iface) setField(iface, 'privateKeyFile', keyLike(rng, env.keys));
    else if (target === 1 && peer) setField(peer, 'presharedKeyFile', keyLike(rng, env.keys));
    else if (target === 2) setField(ensureObj(root, 'metrics'), 'listen', keyLike(rng, env.keys));
    else if (target === 3 && peer)
      setField(peer, rng.pick(['endpoint', 'name', 'allowedIPs']), rng.chance(0.5) ? keyLike(rng, env.keys) : [keyLike(rng, env.keys)]);
    else if (target === 4 && iface)
      setField(iface, rng.pick(['name', 'addresses', 'privateKey']), rng.chance(0.5) ? keyLike(rng, env.keys) : [keyLike(rng, env.keys)]);
    else setField(ensureObj(root, 'log'), 'level', keyLike(rng, env.keys));
    return 'key-like text in a key-bearing or echoed field';
  },
  deepNesting(rng, root) {
    const depth = rng.pick([10, 63, 64, 65, 100, 3000, 20000]);
    const s = slots(root);
    if (s.length && rng.chance(0.8)) rng.pick(s).set(nested(rng, depth));
    else root.e.push(['deep', nested(rng, depth)]);
    return `nesting ${depth} deep`;
  },
  bigList(rng, root, env) {
    const n = rng.pick([1000, 5000, 20000]);
    const kind = rng.int(5);
    const item = (i: number): JVal => {
      if (kind === 0) return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`;
      if (kind === 1) return `10.0.0.${i % 7}/32`; // duplicates
      if (kind === 2) return i % 2 ? `10.0.0.0/${8 + (i % 24)}` : `fd00::${(i % 65536).toString(16)}/128`; // overlapping
      if (kind === 3) return randomValue(rng, env.keys, 3);
      return `not-an-ip-${i}`;
    };
    const list = Array.from({ length: n }, (_, i) => item(i));
    const iface = findObj(root, 'interface');
    const peer = peersOf(root)[0];
    if (rng.chance(0.4) && iface) setField(iface, 'addresses', list);
    else if (peer) setField(peer, 'allowedIPs', list);
    else setField(root, 'peers', list);
    return `a list of ${n} (kind ${kind})`;
  },
  manyPeers(rng, root, env) {
    const n = rng.pick([100, 1000, 3000]);
    const peers: JVal[] = Array.from({ length: n }, (_, i) =>
      obj([
        ['publicKey', rng.chance(0.9) ? Buffer.from(rng.bytes(32)).toString('base64') : env.keys.peers[i % 4].pub.b64],
        ['allowedIPs', [`10.${(i >> 8) & 255}.${i & 255}.0/24`]],
        ...(rng.chance(0.5) ? [['name', `p${i % (n / 2)}`] as [string, JVal]] : []),
      ]),
    );
    setField(root, 'peers', peers);
    return `${n} peers`;
  },
  bigString(rng, root, env) {
    const n = rng.pick([100, 10_000, 1_000_000]);
    const unit = rng.pick(['x', 'A', '\u00e9', '\u001b', ' ', env.keys.me.priv.b64, '/']);
    const s = unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
    const sl = slots(root);
    if (sl.length) rng.pick(sl).set(s);
    return `a string of ${n} (${JSON.stringify(unit.slice(0, 4))}...)`;
  },
  weirdNumber(rng, root) {
    const sl = slots(root).filter((s) => typeof s.get() === 'number');
    const target = sl.length ? rng.pick(sl) : rng.pick(slots(root));
    target?.set(raw(rng.pick(WEIRD_NUMBERS)));
    return 'a weird number';
  },
  interfaceName(rng, root) {
    const iface = findObj(root, 'interface');
    if (iface) setField(iface, 'name', rng.pick(BAD_NAMES));
    return 'a bad interface name';
  },
  keyFile(rng, root, env) {
    const f = env.files;
    const path = rng.pick([
      f.fifo,
      f.directory,
      '/dev/zero',
      '/dev/null',
      f.loop,
      f.linkToFifo,
      f.socket,
      f.missing,
      f.openKey,
      f.hugeKey,
      f.emptyKey,
      f.privateKey,
      f.psk,
      keyLike(rng, env.keys),
    ]);
    const iface = findObj(root, 'interface');
    const peer = peersOf(root)[0];
    if (peer && rng.chance(0.4)) {
      peer.e = peer.e.filter(([k]) => k !== 'presharedKey');
      setField(peer, 'presharedKeyFile', path);
    } else if (iface) {
      iface.e = iface.e.filter(([k]) => k !== 'privateKey');
      setField(iface, 'privateKeyFile', path);
    }
    return 'an odd key file';
  },
  sectionType(rng, root, env) {
    const e = rng.pick(root.e);
    e[1] = rng.pick<JVal>([null, [], 'x', 1, obj([]), [obj([])], randomValue(rng, env.keys)]);
    return `section ${JSON.stringify(e[0])} of another type`;
  },
  weirdEndpoint(rng, root) {
    const peer = peersOf(root)[0];
    if (peer) setField(peer, 'endpoint', rng.pick(ENDPOINTS));
    return 'an odd endpoint';
  },
};

/** Byte-level damage to the serialized text. */
function damage(rng: Rng, text: Buffer): { data: Buffer; what: string } {
  const at = rng.int(text.length + 1);
  switch (rng.int(8)) {
    case 0:
      return { data: text.subarray(0, at), what: `truncated at ${at}` };
    case 1:
      return { data: Buffer.concat([text.subarray(0, at), text.subarray(at + 1)]), what: `byte ${at} deleted` };
    case 2:
      return {
        data: Buffer.concat([
          text.subarray(0, at),
          Buffer.from(rng.pick(['{', '}', '[', ']', ',', ':', '"', '\\', '\n', '\u0000', '/*', '//', "'"])),
          text.subarray(at),
        ]),
        what: `punctuation inserted at ${at}`,
      };
    case 3:
      return { data: Buffer.concat([text.subarray(0, at), rng.bytes(1 + rng.int(8)), text.subarray(at)]), what: `random bytes at ${at}` };
    case 4:
      return { data: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), text]), what: 'UTF-8 BOM' };
    case 5:
      return { data: Buffer.concat([text.subarray(0, at), Buffer.from([0xc3, 0x28, 0xff, 0xfe]), text.subarray(at)]), what: `invalid UTF-8 at ${at}` };
    case 6:
      return { data: Buffer.concat([text, Buffer.from(rng.pick([' x', '{}', '\n\n', '\u0000']))]), what: 'trailing junk' };
    default:
      return { data: Buffer.alloc(rng.pick([0, 1, 3])).fill(rng.pick([0x20, 0x00, 0x7b])), what: 'almost empty' };
  }
}

// ---------------------------------------------------------------- one case

export interface FuzzCase {
  index: number;
  /** What was done, for the report. */
  what: string[];
  configPath: string;
  args: string[];
}

function makeCase(index: number, seed: number, env: Env): FuzzCase {
  const rng = new Rng(caseSeed(seed, index));
  const f = env.files;
  const configPath = join(env.dir, `case-${index}.json`);
  // Special files as the config itself.
  if (rng.chance(0.12)) {
    const path = rng.pick([
      f.fifo,
      f.directory,
      '/dev/zero',
      '/dev/null',
      '/dev/urandom',
      f.loop,
      f.linkToFifo,
      f.socket,
      f.hugeConfig,
      f.limitConfig,
      f.missing,
      '/proc/self/environ',
    ]);
    return { index, what: [`config is ${path}`], configPath: path, args: ['check', '--config', path] };
  }
  const root = validConfig(rng, env);
  const what: string[] = [];
  const names = Object.keys(MUTATIONS);
  const n = rng.pick([0, 1, 1, 2, 3, 4]);
  for (let i = 0; i < n; i++) what.push(MUTATIONS[rng.pick(names)](rng, root, env));
  let data: Buffer = Buffer.from(serialize(root, rng.pick(['', '  ', '\t'])));
  if (rng.chance(0.2)) {
    const d = damage(rng, data);
    data = d.data;
    what.push(d.what);
  }
  writeFileSync(configPath, data, { mode: 0o600 });
  if (what.length === 0) what.push('valid config, unchanged');
  // A few cases also get odd command lines: a usage error must be exit 2, and must not echo a key either.
  let args = ['check', '--config', configPath];
  if (rng.chance(0.04)) {
    args = rng.pick([
      ['check', '--config', configPath, keyLike(rng, env.keys)],
      ['check', `--${env.keys.me.priv.b64url}`],
      ['check', '-c'],
      [keyLike(rng, env.keys)],
    ]);
    what.push('odd command line');
  }
  return { index, what, configPath, args };
}

// ---------------------------------------------------------------- checking a result

export interface FuzzLimits {
  /** Wall time allowed per case (the child is killed past it). */
  timeoutMs: number;
  /** Peak RSS allowed per case, MiB. */
  maxRssMb: number;
  /** V8 heap cap given to the child, MiB. */
  heapMb: number;
}

export const DEFAULT_LIMITS: FuzzLimits = { timeoutMs: 10_000, maxRssMb: 300, heapMb: 256 };

// Control characters other than newline (tab never appears in our output either).
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

const IDENT = '[A-Za-z_$][A-Za-z0-9_$-]*';
const HIDDEN = '<hidden-key-like-name>';
const QUOTED = '\\["(?:[^"\\\\]|\\\\.)*"\\]';
/** A field path as ConfigError prints it: peers[0].allowedIPs[3], interface["odd name"], log.<hidden-key-like-name>. */
const FIELD_PATH = new RegExp(`^(?:${IDENT}|${HIDDEN}|${QUOTED})(?:\\.${IDENT}|\\.${HIDDEN}|\\[\\d+\\]|${QUOTED})*: `);

/** An issue line of `tunvpn check` (after the two-space indent) that says where the problem is. */
function locates(line: string, configPath: string): boolean {
  if (FIELD_PATH.test(line)) return true;
  if (/\bline \d+, column \d+\b/.test(line)) return true;
  if (line.startsWith(`config file ${configPath} `) || line.startsWith(`cannot read config file ${configPath}: `)) return true;
  return /^\.\.\. and \d+ more problems not shown/.test(line);
}

export function checkResult(c: FuzzCase, r: CliRun, windows: readonly string[], limits: FuzzLimits): string[] {
  const problems: string[] = [];
  const output = r.stdout + r.stderr;
  if (r.timedOut) problems.push(`timed out after ${limits.timeoutMs} ms`);
  else if (r.code === null) problems.push(`ended by signal ${r.signal ?? '?'}`);
  else if (![0, 2, 78].includes(r.code)) problems.push(`exit status ${r.code}`);
  if (r.maxRssMb > limits.maxRssMb) problems.push(`peak RSS ${r.maxRssMb.toFixed(0)} MiB > ${limits.maxRssMb} MiB`);
  if (r.outputCapped) problems.push('output larger than 4 MiB');
  for (const w of windows) {
    if (output.includes(w)) {
      problems.push(`key material in the output (${w.slice(0, 4)}...)`);
      break;
    }
  }
  const ctl = CONTROL.exec(output);
  if (ctl) problems.push(`control character U+${ctl[0].charCodeAt(0).toString(16).padStart(4, '0')} in the output`);
  if (/Maximum call stack|\n\s+at .+:\d+:\d+\)?\n/.test(output)) problems.push('a stack overflow or a stack trace in the output');
  if (r.code === 0 && !r.stdout.startsWith(`${c.configPath}: OK\n`)) problems.push('exit 0 without the OK line');
  if (r.code === 78 && c.args[0] === 'check' && c.args.length === 3) {
    const lines = r.stderr.split('\n');
    if (!/^tunvpn: invalid configuration in .* \(\d+ problems?\):$/.test(lines[0] ?? '')) problems.push('exit 78 without the "invalid configuration" header');
    for (const line of lines.slice(1)) {
      if (line === '') continue;
      if (!line.startsWith('  ') || !locates(line.slice(2), c.configPath)) {
        problems.push(`an error without field path or line/column: ${JSON.stringify(line.slice(0, 200))}`);
        break;
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------- a run

export interface FuzzOptions {
  cases: number;
  seed: number;
  /** Run only this case (replay). */
  only?: number;
  concurrency?: number;
  limits?: Partial<FuzzLimits>;
  /** Keep the temporary directory (to inspect failing cases). */
  keep?: boolean;
  log?: (line: string) => void;
}

export interface FuzzFailure {
  index: number;
  what: string[];
  problems: string[];
  code: number | null;
  stderr: string;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  failures: FuzzFailure[];
  exitCodes: Record<string, number>;
  maxWallMs: number;
  maxRssMb: number;
  durationMs: number;
  dir: string;
}

export async function fuzzConfig(opts: FuzzOptions): Promise<FuzzReport> {
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const { env, server } = await makeEnv(new Rng(caseSeed(opts.seed, -1)));
  const windows = keyWindows(env.keys.all);
  const indices = opts.only !== undefined ? [opts.only] : Array.from({ length: opts.cases }, (_, i) => i);
  const report: FuzzReport = { seed: opts.seed, cases: 0, failures: [], exitCodes: {}, maxWallMs: 0, maxRssMb: 0, durationMs: 0, dir: env.dir };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < indices.length) {
      const c = makeCase(indices[next++], opts.seed, env);
      const r = await runCli(c.args, { timeoutMs: limits.timeoutMs, heapMb: limits.heapMb, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
      report.cases++;
      const key = r.code === null ? `signal ${r.signal ?? 'kill'}` : String(r.code);
      report.exitCodes[key] = (report.exitCodes[key] ?? 0) + 1;
      report.maxWallMs = Math.max(report.maxWallMs, r.wallMs);
      if (Number.isFinite(r.maxRssMb)) report.maxRssMb = Math.max(report.maxRssMb, r.maxRssMb);
      const problems = checkResult(c, r, windows, limits);
      if (problems.length) {
        report.failures.push({ index: c.index, what: c.what, problems, code: r.code, stderr: r.stderr.slice(0, 2000) });
        log(`case ${c.index} FAILED (${c.what.join('; ')}): ${problems.join('; ')}`);
      } else if (!opts.keep && c.configPath.endsWith(`case-${c.index}.json`)) {
        rmSync(c.configPath, { force: true });
      }
      if (report.cases % 100 === 0) log(`${report.cases}/${indices.length} cases, ${report.failures.length} failures`);
    }
  };
  try {
    const n = Math.max(1, Math.min(opts.concurrency ?? Math.min(2, availableParallelism()), indices.length));
    await Promise.all(Array.from({ length: n }, () => worker()));
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (!opts.keep && report.failures.length === 0) rmSync(env.dir, { recursive: true, force: true });
  }
  report.failures.sort((a, b) => a.index - b.index);
  report.durationMs = Date.now() - started;
  return report;
}
