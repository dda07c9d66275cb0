import { describe, expect, it } from 'vitest';
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
