import { randomBytes as nodeRandomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadCrypto } from '../../src/crypto/index.js';
import type { CryptoBackend, CryptoBackendName } from '../../src/crypto/types.js';
import { AEAD_VECTOR, LOW_ORDER_POINTS, X25519_DH, X25519_ITERATED, X25519_VECTORS, XAEAD_VECTOR, hex, toHex } from './vectors.js';

const NAMES: CryptoBackendName[] = ['sodium-native', 'libsodium-wrappers'];

describe.each(NAMES)('%s backend', (name) => {
  let c: CryptoBackend;
  beforeAll(async () => {
    c = await loadCrypto(name);
  });

  it('reports its name', () => {
    expect(c.name).toBe(name);
  });

  describe('X25519 (RFC 7748)', () => {
    it.each(X25519_VECTORS.map((v, i) => [i + 1, v] as const))('section 5.2 vector %i', (_i, v) => {
      const out = new Uint8Array(32);
      expect(c.x25519(out, hex(v.scalar), hex(v.u))).toBe(true);
      expect(toHex(out)).toBe(v.out);
    });

    it('section 5.2 iterated vector (1 and 1000 iterations)', () => {
      let k = hex('09'.padEnd(64, '0'));
      let u = hex('09'.padEnd(64, '0'));
      for (let i = 1; i <= 1000; i++) {
        const r = new Uint8Array(32);
        expect(c.x25519(r, k, u)).toBe(true);
        u = k;
        k = r;
        if (i === 1) expect(toHex(k)).toBe(X25519_ITERATED.after1);
      }
      expect(toHex(k)).toBe(X25519_ITERATED.after1000);
    });

    it('section 6.1 Diffie-Hellman example', () => {
      const a = hex(X25519_DH.alicePrivate);
      const b = hex(X25519_DH.bobPrivate);
      expect(toHex(c.publicKey(a))).toBe(X25519_DH.alicePublic);
      expect(toHex(c.publicKey(b))).toBe(X25519_DH.bobPublic);
      const s1 = new Uint8Array(32);
      const s2 = new Uint8Array(32);
      expect(c.x25519(s1, a, hex(X25519_DH.bobPublic))).toBe(true);
      expect(c.x25519(s2, b, hex(X25519_DH.alicePublic))).toBe(true);
      expect(toHex(s1)).toBe(X25519_DH.shared);
      expect(toHex(s2)).toBe(X25519_DH.shared);
    });

    it.each(LOW_ORDER_POINTS.map((p) => [p]))('refuses the all-zero secret from low-order point %s', (p) => {
      const out = new Uint8Array(32).fill(0xaa);
      expect(c.x25519(out, c.generatePrivateKey(), hex(p))).toBe(false);
      expect(out.every((x) => x === 0)).toBe(true);
    });

    it('generates clamped private keys like wg genkey, and they agree', () => {
      const seen = new Set<string>();
      for (let i = 0; i < 32; i++) {
        const k = c.generatePrivateKey();
        expect(k.length).toBe(32);
        expect((k[0] ?? 0xff) & 7).toBe(0);
        expect((k[31] ?? 0) & 0x80).toBe(0);
        expect((k[31] ?? 0) & 0x40).toBe(0x40);
        seen.add(toHex(k));
      }
      expect(seen.size).toBe(32);
      const a = c.generatePrivateKey();
      const b = c.generatePrivateKey();
      const s1 = new Uint8Array(32);
      const s2 = new Uint8Array(32);
      expect(c.x25519(s1, a, c.publicKey(b))).toBe(true);
      expect(c.x25519(s2, b, c.publicKey(a))).toBe(true);
      expect(toHex(s1)).toBe(toHex(s2));
    });

    it('rejects wrongly sized arguments instead of reading out of bounds', () => {
      const k = c.generatePrivateKey();
      expect(() => c.x25519(new Uint8Array(31), k, k)).toThrow(RangeError);
      expect(() => c.x25519(new Uint8Array(32), k.subarray(1), k)).toThrow(RangeError);
      expect(() => c.publicKey(new Uint8Array(33))).toThrow(RangeError);
    });
  });

  describe('ChaCha20-Poly1305 IETF (RFC 8439 section 2.8.2)', () => {
    const v = AEAD_VECTOR;

    it('seals to the published ciphertext and tag', () => {
      const pt = hex(v.plaintext);
      const out = new Uint8Array(pt.length + 16);
      expect(c.aeadSeal(out, pt, hex(v.ad), hex(v.nonce), hex(v.key))).toBe(pt.length + 16);
      expect(toHex(out)).toBe(v.ciphertext + v.tag);
    });

    it('opens the published box', () => {
      const box = hex(v.ciphertext + v.tag);
      const out = new Uint8Array(box.length - 16);
      expect(c.aeadOpen(out, box, hex(v.ad), hex(v.nonce), hex(v.key))).toBe(box.length - 16);
      expect(toHex(out)).toBe(v.plaintext);
    });

    it('returns -1 on any tampering: ciphertext, tag, ad, nonce, key, truncation', () => {
      const good = hex(v.ciphertext + v.tag);
      const out = new Uint8Array(good.length);
      const flip = (b: Uint8Array, i: number): Uint8Array => {
        const x = b.slice();
        x[i] = (x[i] ?? 0) ^ 1;
        return x;
      };
      expect(c.aeadOpen(out, flip(good, 0), hex(v.ad), hex(v.nonce), hex(v.key))).toBe(-1);
      expect(c.aeadOpen(out, flip(good, good.length - 1), hex(v.ad), hex(v.nonce), hex(v.key))).toBe(-1);
      expect(c.aeadOpen(out, good, flip(hex(v.ad), 3), hex(v.nonce), hex(v.key))).toBe(-1);
      expect(c.aeadOpen(out, good, null, hex(v.nonce), hex(v.key))).toBe(-1);
      expect(c.aeadOpen(out, good, hex(v.ad), flip(hex(v.nonce), 11), hex(v.key))).toBe(-1);
      expect(c.aeadOpen(out, good, hex(v.ad), hex(v.nonce), flip(hex(v.key), 31))).toBe(-1);
      expect(c.aeadOpen(out, good.subarray(0, good.length - 1), hex(v.ad), hex(v.nonce), hex(v.key))).toBe(-1);
      expect(c.aeadOpen(out, good.subarray(0, 15), hex(v.ad), hex(v.nonce), hex(v.key))).toBe(-1);
      expect(c.aeadOpen(out, new Uint8Array(0), null, hex(v.nonce), hex(v.key))).toBe(-1);
    });

    it('does not throw on a failed open (hostile packets hit this path)', () => {
      const junk = nodeRandomBytes(1436);
      const out = new Uint8Array(1420);
      const key = new Uint8Array(32);
      const nonce = new Uint8Array(12);
      for (let i = 0; i < 100; i++) expect(c.aeadOpen(out, junk, null, nonce, key)).toBe(-1);
    });
  });

  describe('XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha A.3.1)', () => {
    const v = XAEAD_VECTOR;

    it('seals to the published ciphertext and tag', () => {
      const pt = hex(v.plaintext);
      const out = new Uint8Array(pt.length + 16);
      expect(c.xaeadSeal(out, pt, hex(v.ad), hex(v.nonce), hex(v.key))).toBe(pt.length + 16);
      expect(toHex(out)).toBe(v.ciphertext + v.tag);
    });

    it('opens the published box, and refuses a tampered one', () => {
      const box = hex(v.ciphertext + v.tag);
      const out = new Uint8Array(box.length - 16);
      expect(c.xaeadOpen(out, box, hex(v.ad), hex(v.nonce), hex(v.key))).toBe(box.length - 16);
      expect(toHex(out)).toBe(v.plaintext);
      box[40] = (box[40] ?? 0) ^ 0x80;
      expect(c.xaeadOpen(out, box, hex(v.ad), hex(v.nonce), hex(v.key))).toBe(-1);
    });
  });

  describe('buffer handling', () => {
    it('accepts subarray views at odd offsets and a larger out buffer', () => {
      const backing = nodeRandomBytes(4000);
      const pt = backing.subarray(7, 7 + 1420);
      const key = backing.subarray(1501, 1533);
      const nonce = backing.subarray(1601, 1613);
      const ad = backing.subarray(1701, 1733);
      const box = new Uint8Array(2000).fill(0xee);
      const n = c.aeadSeal(box.subarray(3), pt, ad, nonce, key);
      expect(n).toBe(1436);
      expect(box[3 + n]).toBe(0xee); // nothing written past the box
      const back = new Uint8Array(1600);
      expect(c.aeadOpen(back, box.subarray(3, 3 + n), ad, nonce, key)).toBe(1420);
      expect(toHex(back.subarray(0, 1420))).toBe(toHex(pt));
    });

    it('seals and opens an empty plaintext (a keepalive) with null and empty ad alike', () => {
      const key = nodeRandomBytes(32);
      const nonce = new Uint8Array(12);
      const box = new Uint8Array(16);
      expect(c.aeadSeal(box, new Uint8Array(0), null, nonce, key)).toBe(16);
      expect(c.aeadOpen(new Uint8Array(0), box, new Uint8Array(0), nonce, key)).toBe(0);
    });

    it('handles messages larger than any preallocated scratch space', () => {
      const key = nodeRandomBytes(32);
      const nonce = nodeRandomBytes(12);
      const ad = nodeRandomBytes(300);
      for (const len of [2047, 2048, 9000, 65535]) {
        const pt = nodeRandomBytes(len);
        const box = new Uint8Array(len + 16);
        expect(c.aeadSeal(box, pt, ad, nonce, key)).toBe(len + 16);
        const back = new Uint8Array(len);
        expect(c.aeadOpen(back, box, ad, nonce, key)).toBe(len);
        expect(Buffer.compare(Buffer.from(back), pt)).toBe(0);
      }
    });

    it('throws RangeError for an out buffer too small, or a bad key or nonce size', () => {
      const key = new Uint8Array(32);
      const nonce = new Uint8Array(12);
      const pt = new Uint8Array(10);
      expect(() => c.aeadSeal(new Uint8Array(25), pt, null, nonce, key)).toThrow(RangeError);
      expect(() => c.aeadSeal(new Uint8Array(26), pt, null, new Uint8Array(24), key)).toThrow(RangeError);
      expect(() => c.xaeadSeal(new Uint8Array(26), pt, null, nonce, key)).toThrow(RangeError);
      expect(() => c.aeadSeal(new Uint8Array(26), pt, null, nonce, new Uint8Array(16))).toThrow(RangeError);
      expect(() => c.aeadOpen(new Uint8Array(9), new Uint8Array(26), null, nonce, key)).toThrow(RangeError);
    });

    it('randomBytes fills the whole buffer, including large ones', () => {
      const big = new Uint8Array(200_000);
      c.randomBytes(big);
      const zeros = big.reduce((n, x) => n + (x === 0 ? 1 : 0), 0);
      expect(zeros).toBeLessThan(2000); // ~781 expected
      expect(big.subarray(199_900).some((x) => x !== 0)).toBe(true);
      c.randomBytes(new Uint8Array(0));
    });

    it('memzero wipes a view and only that view', () => {
      const b = new Uint8Array(64).fill(9);
      c.memzero(b.subarray(16, 48));
      expect(b.subarray(16, 48).every((x) => x === 0)).toBe(true);
      expect(b[15]).toBe(9);
      expect(b[48]).toBe(9);
    });
  });
});

describe('both backends agree', () => {
  let a: CryptoBackend;
  let b: CryptoBackend;
  beforeAll(async () => {
    a = await loadCrypto('sodium-native');
    b = await loadCrypto('libsodium-wrappers');
  });

  it('on random AEAD and XAEAD inputs, and each opens the other', () => {
    for (let i = 0; i < 200; i++) {
      const len = i % 7 === 0 ? 0 : nodeRandomBytes(2).readUInt16LE(0) % 1600;
      const pt = nodeRandomBytes(len);
      const ad = i % 3 === 0 ? null : nodeRandomBytes(i % 50);
      const key = nodeRandomBytes(32);
      const x = i % 2 === 0;
      const nonce = nodeRandomBytes(x ? 24 : 12);
      const boxA = new Uint8Array(len + 16);
      const boxB = new Uint8Array(len + 16);
      if (x) {
        a.xaeadSeal(boxA, pt, ad, nonce, key);
        b.xaeadSeal(boxB, pt, ad, nonce, key);
      } else {
        a.aeadSeal(boxA, pt, ad, nonce, key);
        b.aeadSeal(boxB, pt, ad, nonce, key);
      }
      expect(toHex(boxA)).toBe(toHex(boxB));
      const back = new Uint8Array(len);
      const opened = x ? b.xaeadOpen(back, boxA, ad, nonce, key) : b.aeadOpen(back, boxA, ad, nonce, key);
      expect(opened).toBe(len);
      expect(toHex(back)).toBe(toHex(pt));
    }
  });

  it('on random X25519 inputs (including unclamped scalars)', () => {
    for (let i = 0; i < 100; i++) {
      const sk = nodeRandomBytes(32);
      const pk = nodeRandomBytes(32);
      const oa = new Uint8Array(32);
      const ob = new Uint8Array(32);
      expect(a.x25519(oa, sk, pk)).toBe(b.x25519(ob, sk, pk));
      expect(toHex(oa)).toBe(toHex(ob));
      expect(toHex(a.publicKey(sk))).toBe(toHex(b.publicKey(sk)));
    }
  });
});
