import { describe, expect, it } from 'vitest';
import { isIPv4 } from 'node:net';
import { formatCidr, formatIp, parseCidr, parseIp } from '../../src/peers/cidr.js';

describe('cidr', () => {
  it('parses and canonicalises IPv4 prefixes', () => {
    expect(formatCidr(parseCidr('10.0.0.5/24'))).toBe('10.0.0.0/24');
    expect(formatCidr(parseCidr('10.1.2.3'))).toBe('10.1.2.3/32');
    expect(formatCidr(parseCidr('0.0.0.0/0'))).toBe('0.0.0.0/0');
    expect(parseCidr('192.168.1.1/17').bytes).toEqual(Uint8Array.from([192, 168, 0, 0]));
  });

  it('parses and canonicalises IPv6 prefixes', () => {
    expect(formatCidr(parseCidr('fd00:0:0:0:0:0:0:1/64'))).toBe('fd00::/64');
    expect(formatCidr(parseCidr('::/0'))).toBe('::/0');
    expect(formatCidr(parseCidr('::1'))).toBe('::1/128');
    expect(formatCidr(parseCidr('2001:db8::1:0:0:1/128'))).toBe('2001:db8::1:0:0:1/128');
    expect(formatIp(parseIp('::ffff:1.2.3.4'))).toBe('::ffff:102:304');
    expect(formatIp(parseIp('1:2:3:4:5:6:7:8'))).toBe('1:2:3:4:5:6:7:8');
    expect(formatIp(parseIp('1::'))).toBe('1::');
  });

  it('rejects malformed input with a reason', () => {
    for (const bad of ['10.0.0.0/33', '10.0.0/8', 'fd00::/129', 'zz::/8', '10.0.0.0/-1', '10.0.0.0/', '10.0.0.0/8/8', '']) {
      expect(() => parseCidr(bad), bad).toThrowError(/CIDR|address|prefix/i);
    }
  });

  it('round-trips random IPv6 addresses through text', () => {
    for (let n = 0; n < 2000; n++) {
      const bytes = new Uint8Array(16);
      for (let i = 0; i < 16; i++) bytes[i] = Math.random() < 0.4 ? 0 : (Math.random() * 256) | 0;
      expect(parseIp(formatIp(bytes))).toEqual(bytes);
    }
  });
});

describe('parseIp: the one-pass IPv4 path accepts exactly what isIPv4 does', () => {
  it('agrees with isIPv4 + split on edge cases and 100,000 random digit-and-dot strings', () => {
    const cases = [
      '1.2.3.4',
      '0.0.0.0',
      '255.255.255.255',
      '256.1.1.1',
      '01.2.3.4',
      '1.2.3',
      '1.2.3.4.5',
      '1..2.3',
      '1.2.3.4.',
      '.1.2.3',
      '1.2.3.04',
      '0.0.0.00',
      '1.2.3.a',
      ' 1.2.3.4',
      '100.200.250.255',
    ];
    let s = 17;
    const rand = (n: number): number => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return s % n;
    };
    for (let i = 0; i < 100_000; i++) {
      let t = '';
      const len = 1 + rand(15);
      for (let j = 0; j < len; j++) t += '0123456789..'[rand(12)];
      cases.push(t);
    }
    let mismatches = 0;
    for (const c of cases) {
      let got: string;
      try {
        got = Array.from(parseIp(c)).join('.');
      } catch {
        got = 'error';
      }
      const want = isIPv4(c) ? c.split('.').map(Number).join('.') : 'error';
      if (got !== want) mismatches++;
    }
    expect(mismatches).toBe(0);
  });
});
