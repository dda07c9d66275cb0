import { describe, expect, it } from 'vitest';
import { blake2s as nobleBlake2s } from '@noble/hashes/blake2.js';
import { HASH_LEN, MAC_LEN, blake2s, blake2sInto, blake2sKeyed, hmacBlake2s, kdf1, kdf2, kdf3, mac } from '../../src/crypto/hash.js';
import { hex, toHex } from './vectors.js';

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const KEY_00_1F = Uint8Array.from({ length: 32 }, (_, i) => i);

/** RFC 2104 HMAC over BLAKE2s (64-byte block), written out independently of noble's hmac. */
function referenceHmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  const block = new Uint8Array(64);
  block.set(key.length > 64 ? nobleBlake2s(key) : key);
  const ipad = block.map((x) => x ^ 0x36);
  const opad = block.map((x) => x ^ 0x5c);
  const inner = nobleBlake2s(Uint8Array.from([...ipad, ...data]));
  return nobleBlake2s(Uint8Array.from([...opad, ...inner]));
}

describe('BLAKE2s (RFC 7693)', () => {
  it('hashes "abc" to the appendix B digest', () => {
    expect(toHex(blake2s(ascii('abc')))).toBe('508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982');
  });

  it('hashes the empty input to the known digest', () => {
    expect(toHex(blake2s())).toBe('69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9');
  });

  it('hashes the concatenation of its parts', () => {
    expect(toHex(blake2s(ascii('a'), ascii(''), ascii('bc')))).toBe(toHex(blake2s(ascii('abc'))));
  });

  it("gives WireGuard's initial chaining key and hash", () => {
    const ck = blake2s(ascii('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s'));
    expect(toHex(ck)).toBe('60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36');
    const h = blake2s(ck, ascii('WireGuard v1 zx2c4 Jason@zx2c4.com'));
    expect(toHex(h)).toBe('2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3');
  });

  it('blake2sInto writes 32 bytes into a larger buffer and nothing beyond', () => {
    const out = new Uint8Array(40).fill(0xee);
    expect(blake2sInto(out.subarray(4), ascii('abc'))).toBeInstanceOf(Uint8Array);
    expect(toHex(out.subarray(4, 36))).toBe(toHex(blake2s(ascii('abc'))));
    expect(out.subarray(0, 4).every((x) => x === 0xee)).toBe(true);
    expect(out.subarray(36).every((x) => x === 0xee)).toBe(true);
    expect(() => blake2sInto(new Uint8Array(31))).toThrow(RangeError);
  });
});

describe('keyed BLAKE2s and MAC', () => {
  it('matches the BLAKE2 reference keyed KAT (key 00..1f)', () => {
    expect(toHex(blake2sKeyed(KEY_00_1F, 32))).toBe('48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49');
    expect(toHex(blake2sKeyed(KEY_00_1F, 32, hex('00')))).toBe('40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1');
    expect(toHex(blake2sKeyed(KEY_00_1F, 32, hex('0001')))).toBe('6bb71300644cd3991b26ccd4d274acd1adeab8b1d7914546c1198bbe9fc9d803');
  });

  it('mac is a 16-byte keyed BLAKE2s, not a truncated 32-byte one', () => {
    const m = mac(KEY_00_1F, ascii('hello'));
    expect(m.length).toBe(MAC_LEN);
    // The digest length is a BLAKE2 parameter, so the 16-byte MAC differs from a prefix of the 32-byte one.
    expect(toHex(m)).not.toBe(toHex(blake2sKeyed(KEY_00_1F, 32, ascii('hello')).subarray(0, 16)));
    expect(toHex(m)).toBe(toHex(nobleBlake2s(ascii('hello'), { key: KEY_00_1F, dkLen: 16 })));
  });

  it('mac accepts the 16-byte cookie as its key (mac2), over split parts', () => {
    const cookie = KEY_00_1F.subarray(0, 16);
    expect(toHex(mac(cookie, ascii('ab'), ascii('c')))).toBe(toHex(mac(cookie, ascii('abc'))));
    expect(mac(cookie, ascii('abc')).length).toBe(16);
  });
});

describe('HMAC-BLAKE2s and the HKDF', () => {
  it('HMAC matches an independent RFC 2104 construction, for short and long keys', () => {
    for (const key of [new Uint8Array(0), KEY_00_1F, new Uint8Array(100).fill(0xaa)]) {
      for (const data of [new Uint8Array(0), ascii('abc'), new Uint8Array(1000).fill(7)]) {
        expect(toHex(hmacBlake2s(key, data))).toBe(toHex(referenceHmac(key, data)));
      }
    }
  });

  it('HMAC over parts equals HMAC over their concatenation', () => {
    expect(toHex(hmacBlake2s(KEY_00_1F, ascii('ab'), ascii('c')))).toBe(toHex(hmacBlake2s(KEY_00_1F, ascii('abc'))));
  });

  it('kdf1/2/3 follow T0 = HMAC(key, in), Ti = HMAC(T0, T(i-1) || i)', () => {
    const key = KEY_00_1F;
    const input = ascii('some input keying material');
    const t0 = referenceHmac(key, input);
    const t1 = referenceHmac(t0, hex('01'));
    const t2 = referenceHmac(t0, Uint8Array.from([...t1, 2]));
    const t3 = referenceHmac(t0, Uint8Array.from([...t2, 3]));
    const [a1] = kdf1(key, input);
    const [b1, b2] = kdf2(key, input);
    const [c1, c2, c3] = kdf3(key, input);
    expect(toHex(a1)).toBe(toHex(t1));
    expect([toHex(b1), toHex(b2)]).toEqual([toHex(t1), toHex(t2)]);
    expect([toHex(c1), toHex(c2), toHex(c3)]).toEqual([toHex(t1), toHex(t2), toHex(t3)]);
    for (const t of [a1, b1, b2, c1, c2, c3]) expect(t.length).toBe(HASH_LEN);
  });

  it('kdf2 with empty input (the transport key split) is well defined and distinct', () => {
    const [send, recv] = kdf2(KEY_00_1F, new Uint8Array(0));
    expect(toHex(send)).not.toBe(toHex(recv));
    expect(toHex(send)).toBe(toHex(referenceHmac(referenceHmac(KEY_00_1F, new Uint8Array(0)), hex('01'))));
  });

  it('returns fresh arrays that do not alias the inputs', () => {
    const key = KEY_00_1F.slice();
    const [t1, t2] = kdf2(key, key);
    t1.fill(0);
    expect(toHex(key)).toBe(toHex(KEY_00_1F));
    expect(t2.some((x) => x !== 0)).toBe(true);
  });
});
