/**
 * Transport AEAD cost per 1420-byte packet: seal and open into preallocated
 * buffers for both backends, with node:crypto's chacha20-poly1305 (a new
 * cipher per packet, since the nonce changes) as the reference measured in
 * the same run. Also the cost of a failed open (what a flood of forged
 * packets costs), and the allocating libsodium-wrappers API and the throwing
 * sodium-native wrapper that the backends avoid. Then where libsodium's
 * AEAD time goes (its ChaCha20 and its Poly1305 alone), and, when the
 * `openssl` tool is installed, OpenSSL's own loop over the same cipher
 * (`openssl speed -evp chacha20-poly1305`, no JavaScript or N-API in it):
 * the fastest ChaCha20-Poly1305 on this CPU, the yardstick for the AEAD
 * ceiling in docs/performance.md ("The AEAD sets the ceiling").
 *
 * Run: npx tsc -p tsconfig.json && node dist/bench/crypto-aead.js [packets]
 */
import { execFileSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import sodium from 'libsodium-wrappers';
import { loadCrypto } from '../src/crypto/index.js';
import type { CryptoBackend } from '../src/crypto/types.js';

const PACKET = 1420;
const N = Number(process.argv[2] ?? 100_000);
const ROUNDS = 5;

const key = randomBytes(32);
const nonce = new Uint8Array(12);
const nonceView = new DataView(nonce.buffer);
const plaintext = randomBytes(PACKET);
const box = new Uint8Array(PACKET + 16);
const back = new Uint8Array(PACKET);
const forged = randomBytes(PACKET + 16);

function setCounter(i: number): void {
  nonceView.setUint32(4, i >>> 0, true);
}

/** Median of ROUNDS timings of `n` calls of `fn`, in µs per call. */
function measure(fn: (i: number) => void, n = N): number {
  for (let i = 0; i < Math.min(n, 5000); i++) fn(i);
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    times.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(ROUNDS / 2)] ?? Number.NaN;
}

interface Row {
  name: string;
  us: number;
}

function backendRows(c: CryptoBackend): Row[] {
  const seal = measure((i) => {
    setCounter(i);
    c.aeadSeal(box, plaintext, null, nonce, key);
  });
  setCounter(42);
  c.aeadSeal(box, plaintext, null, nonce, key);
  const open = measure(() => {
    if (c.aeadOpen(back, box, null, nonce, key) !== PACKET) throw new Error('open failed');
  });
  const bad = measure(() => {
    if (c.aeadOpen(back, forged, null, nonce, key) !== -1) throw new Error('forgery opened');
  });
  return [
    { name: `${c.name} seal`, us: seal },
    { name: `${c.name} open`, us: open },
    { name: `${c.name} open, forged (-1)`, us: bad },
  ];
}

function nodeRows(): Row[] {
  const k = Buffer.from(key);
  const n = Buffer.from(nonce.buffer);
  const pt = Buffer.from(plaintext);
  const seal = measure((i) => {
    setCounter(i);
    const c = createCipheriv('chacha20-poly1305', k, n, { authTagLength: 16 });
    c.update(pt);
    c.final();
    c.getAuthTag();
  });
  setCounter(42);
  const c = createCipheriv('chacha20-poly1305', k, n, { authTagLength: 16 });
  const ct = Buffer.concat([c.update(pt), c.final()]);
  const tag = c.getAuthTag();
  const open = measure(() => {
    const d = createDecipheriv('chacha20-poly1305', k, n, { authTagLength: 16 });
    d.setAuthTag(tag);
    d.update(ct);
    d.final();
  });
  return [
    { name: 'node:crypto seal (new cipher per packet)', us: seal },
    { name: 'node:crypto open (new decipher per packet)', us: open },
  ];
}

interface SodiumNativePublic {
  crypto_aead_chacha20poly1305_ietf_decrypt(m: Uint8Array, nsec: null, c: Uint8Array, ad: null, npub: Uint8Array, k: Uint8Array): number;
  crypto_aead_chacha20poly1305_ietf_encrypt(c: Uint8Array, m: Uint8Array, ad: null, nsec: null, npub: Uint8Array, k: Uint8Array): number;
  crypto_stream_chacha20_ietf_xor(c: Uint8Array, m: Uint8Array, n: Uint8Array, k: Uint8Array): void;
  crypto_onetimeauth(out: Uint8Array, m: Uint8Array, k: Uint8Array): void;
}

/** libsodium's AEAD in its two parts, through the same binding (one N-API call each). */
function partRows(): Row[] {
  const sn = createRequire(import.meta.url)('sodium-native') as SodiumNativePublic;
  const stream = new Uint8Array(PACKET);
  const tag = new Uint8Array(16);
  const chacha = measure((i) => {
    setCounter(i);
    sn.crypto_stream_chacha20_ietf_xor(stream, plaintext, nonce, key);
  });
  const poly = measure(() => sn.crypto_onetimeauth(tag, plaintext, key));
  return [
    { name: 'libsodium ChaCha20 alone (sodium-native)', us: chacha },
    { name: 'libsodium Poly1305 alone (sodium-native)', us: poly },
  ];
}

/** OpenSSL's own benchmark loop, or nothing when the tool is missing. */
function opensslRows(): Row[] {
  let out: string;
  try {
    out = execFileSync('openssl', ['speed', '-evp', 'chacha20-poly1305', '-bytes', String(PACKET), '-seconds', '2'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  } catch {
    console.log('openssl not installed: no OpenSSL reference row');
    return [];
  }
  // The last line: "ChaCha20-Poly1305  1960129.66k" (thousands of bytes per second).
  const m = /ChaCha20-Poly1305\s+([\d.]+)k\s*$/m.exec(out);
  if (!m) return [];
  const bytesPerSecond = Number(m[1]) * 1000;
  return [{ name: 'OpenSSL seal, its own loop (openssl speed -evp)', us: (PACKET / bytesPerSecond) * 1e6 }];
}

function avoidedRows(): Row[] {
  const sn = createRequire(import.meta.url)('sodium-native') as SodiumNativePublic;
  const wrapperSeal = measure((i) => {
    setCounter(i);
    sn.crypto_aead_chacha20poly1305_ietf_encrypt(box, plaintext, null, null, nonce, key);
  });
  const wrapperForged = measure(
    () => {
      try {
        sn.crypto_aead_chacha20poly1305_ietf_decrypt(back, null, forged, null, nonce, key);
      } catch {
        return;
      }
      throw new Error('forgery opened');
    },
    Math.min(N, 20_000),
  );
  const allocSeal = measure((i) => {
    setCounter(i);
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, null, null, nonce, key);
  });
  return [
    { name: 'sodium-native public wrapper seal (asserts)', us: wrapperSeal },
    { name: 'sodium-native public wrapper open, forged (throws)', us: wrapperForged },
    { name: 'libsodium-wrappers allocating API seal', us: allocSeal },
  ];
}

async function main(): Promise<void> {
  await sodium.ready;
  const native = await loadCrypto('sodium-native');
  const wasm = await loadCrypto('libsodium-wrappers');
  const rows = [...nodeRows(), ...backendRows(native), ...backendRows(wasm), ...avoidedRows(), ...partRows(), ...opensslRows()];
  const ref = rows[0]?.us ?? Number.NaN;
  console.log(`AEAD per ${PACKET}-byte packet, ${N} packets x ${ROUNDS} rounds (median), node ${process.version}`);
  console.log(`${'case'.padEnd(52)} ${'µs/pkt'.padStart(8)} ${'vs node seal'.padStart(13)}`);
  for (const r of rows) {
    console.log(`${r.name.padEnd(52)} ${r.us.toFixed(3).padStart(8)} ${(r.us / ref).toFixed(2).padStart(12)}x`);
  }
}

await main();
