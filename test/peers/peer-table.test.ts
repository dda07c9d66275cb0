import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { PeerTable } from '../../src/peers/peer-table.js';
import { parseIp } from '../../src/peers/cidr.js';

const key = (): string => randomBytes(32).toString('base64');

/** A minimal IPv4 header (20 bytes) plus `payload` bytes. */
function ipv4(src: string, dst: string, payload = 8): Uint8Array {
  const p = new Uint8Array(20 + payload);
  p[0] = 0x45;
  p[2] = (p.length >> 8) & 0xff;
  p[3] = p.length & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(parseIp(src), 12);
  p.set(parseIp(dst), 16);
  return p;
}

/** A minimal IPv6 header (40 bytes) plus `payload` bytes. */
function ipv6(src: string, dst: string, payload = 8): Uint8Array {
  const p = new Uint8Array(40 + payload);
  p[0] = 0x60;
  p[4] = (payload >> 8) & 0xff;
  p[5] = payload & 0xff;
  p[6] = 17;
  p[7] = 64;
  p.set(parseIp(src), 8);
  p.set(parseIp(dst), 24);
  return p;
}

interface Peer {
  name: string;
}

function table() {
  const t = new PeerTable<Peer>();
  const a = { name: 'a' };
  const b = { name: 'b' };
  const ka = key();
  const kb = key();
  t.add(ka, a, ['10.0.0.2/32', '10.61.1.0/24', 'fd00::2/128', 'fd00:1::/64']);
  t.add(kb, b, ['10.0.0.3/32', '0.0.0.0/0', 'fd00::3']);
  return { t, a, b, ka, kb };
}

describe('PeerTable', () => {
  it('routes IPv4 and IPv6 packets by destination', () => {
    const { t, a, b } = table();
    const p4 = ipv4('10.0.0.1', '10.61.1.20');
    expect(t.lookupDestination(p4, p4.length)).toBe(a);
    expect(t.lookupDestination(ipv4('10.0.0.1', '10.0.0.2'), 28)).toBe(a);
    expect(t.lookupDestination(ipv4('10.0.0.1', '10.0.0.3'), 28)).toBe(b);
    expect(t.lookupDestination(ipv4('10.0.0.1', '8.8.8.8'), 28)).toBe(b); // default route
    expect(t.lookupDestination(ipv6('fd00::1', 'fd00::2'), 48)).toBe(a);
    expect(t.lookupDestination(ipv6('fd00::1', 'fd00:1::abcd'), 48)).toBe(a);
    expect(t.lookupDestination(ipv6('fd00::1', 'fd00::3'), 48)).toBe(b);
    expect(t.lookupDestination(ipv6('fd00::1', 'fd00::4'), 48)).toBeUndefined();
    // Source is not what is routed on.
    expect(t.lookupDestination(ipv6('fd00::2', 'fd00::4'), 48)).toBeUndefined();
  });

  it('looks at the packet inside a larger buffer up to `length`', () => {
    const { t, a } = table();
    const buf = new Uint8Array(2048).fill(0xff);
    buf.set(ipv4('10.0.0.1', '10.0.0.2'), 0);
    expect(t.lookupDestination(buf, 28)).toBe(a);
    expect(t.isSourceAllowed(a, buf, 28)).toBe(false);
  });

  it('returns undefined / false for malformed or short packets without throwing', () => {
    const { t, a, b } = table();
    const p4 = ipv4('10.0.0.2', '10.0.0.2');
    const p6 = ipv6('fd00::2', 'fd00::2');
    expect(t.lookupDestination(p4, 19)).toBeUndefined();
    expect(t.lookupDestination(p4, 0)).toBeUndefined();
    expect(t.lookupDestination(p4, -5)).toBeUndefined();
    expect(t.lookupDestination(new Uint8Array(0), 0)).toBeUndefined();
    expect(t.lookupDestination(p6, 39)).toBeUndefined();
    expect(t.lookupDestination(p4.subarray(0, 10), 28)).toBeUndefined(); // length beyond the buffer
    const bad = Uint8Array.from(p4);
    bad[0] = 0x55; // version 5
    expect(t.lookupDestination(bad, bad.length)).toBeUndefined();
    bad[0] = 0x05; // version 0
    expect(t.lookupDestination(bad, bad.length)).toBeUndefined();
    expect(t.isSourceAllowed(a, p4, 19)).toBe(false);
    expect(t.isSourceAllowed(a, p6, 39)).toBe(false);
    expect(t.isSourceAllowed(b, bad, bad.length)).toBe(false);
    expect(t.isSourceAllowed(a, p4, p4.length)).toBe(true);
    expect(t.isSourceAllowed(a, p6, p6.length)).toBe(true);
  });

  it('checks inbound sources against the sending peer', () => {
    const { t, a, b } = table();
    expect(t.isSourceAllowed(a, ipv4('10.61.1.99', '10.0.0.1'), 28)).toBe(true);
    expect(t.isSourceAllowed(b, ipv4('10.61.1.99', '10.0.0.1'), 28)).toBe(false);
    // b owns 0.0.0.0/0, but the longer match for 10.0.0.2 is a's.
    expect(t.isSourceAllowed(b, ipv4('10.0.0.2', '10.0.0.1'), 28)).toBe(false);
    expect(t.isSourceAllowed(b, ipv4('1.1.1.1', '10.0.0.1'), 28)).toBe(true);
    expect(t.isSourceAllowed(a, ipv4('1.1.1.1', '10.0.0.1'), 28)).toBe(false);
    expect(t.isSourceAllowed(a, ipv6('fd00:1::5', 'fd00::1'), 48)).toBe(true);
    expect(t.isSourceAllowed(b, ipv6('fd00:1::5', 'fd00::1'), 48)).toBe(false);
    expect(t.isSourceAllowed(b, ipv6('fd00::3', 'fd00::1'), 48)).toBe(true);
    expect(t.isSourceAllowed(a, ipv6('fd00::3', 'fd00::1'), 48)).toBe(false);
    expect(t.isSourceAllowed({ name: 'stranger' }, ipv4('1.1.1.1', '10.0.0.1'), 28)).toBe(false);
  });

  it('adds, gets, removes peers and their prefixes', () => {
    const { t, a, b, ka, kb } = table();
    expect(t.size).toBe(2);
    expect(t.get(ka)).toBe(a);
    expect(t.has(kb)).toBe(true);
    expect(t.values()).toEqual([a, b]);
    expect(t.keys()).toEqual([ka, kb]);
    expect(t.prefixCount).toBe(7);
    expect(t.allowedIPsOf(ka)).toEqual(['10.0.0.2/32', '10.61.1.0/24', 'fd00::2/128', 'fd00:1::/64']);
    expect(t.remove(ka)).toBe(true);
    expect(t.remove(ka)).toBe(false);
    expect(t.get(ka)).toBeUndefined();
    expect(t.prefixCount).toBe(3);
    expect(t.lookupDestination(ipv4('10.0.0.1', '10.61.1.20'), 28)).toBe(b); // falls back to b's /0
    expect(t.lookupDestination(ipv6('fd00::1', 'fd00::2'), 48)).toBeUndefined();
    expect(t.allowedIPsOf(ka)).toEqual([]);
  });

  it('moves a prefix to the peer added or assigned last', () => {
    const { t, a, b, ka, kb } = table();
    t.addAllowedIP(kb, '10.61.1.0/24');
    expect(t.lookupDestination(ipv4('10.0.0.1', '10.61.1.20'), 28)).toBe(b);
    expect(t.allowedIPsOf(ka)).not.toContain('10.61.1.0/24');
    expect(t.removeAllowedIP(ka, '10.61.1.0/24')).toBe(false); // a no longer owns it
    expect(t.removeAllowedIP(kb, '10.61.1.0/24')).toBe(true);
    const c = { name: 'c' };
    const kc = key();
    t.add(kc, c, ['10.0.0.2/32']);
    expect(t.lookupDestination(ipv4('10.0.0.1', '10.0.0.2'), 28)).toBe(c);
    expect(t.isSourceAllowed(a, ipv4('10.0.0.2', '10.0.0.1'), 28)).toBe(false);
    expect(t.allowedIPsOf(ka)).toEqual(['fd00::2/128', 'fd00:1::/64']);
  });

  it('replaces allowed IPs with setAllowedIPs', () => {
    const { t, a, ka } = table();
    t.setAllowedIPs(ka, ['192.168.5.0/24', '10.0.0.2']);
    expect(t.allowedIPsOf(ka)).toEqual(['10.0.0.2/32', '192.168.5.0/24']);
    expect(t.lookupDestination(ipv4('10.0.0.1', '192.168.5.9'), 28)).toBe(a);
    expect(t.lookupDestination(ipv6('fd00::1', 'fd00::2'), 48)).toBeUndefined();
    t.setAllowedIPs(ka, []);
    expect(t.allowedIPsOf(ka)).toEqual([]);
    expect(t.get(ka)).toBe(a);
  });

  it('rejects bad input with stable codes and leaves the table unchanged', () => {
    const { t, a, ka } = table();
    const before = t.allowedIPsOf(ka);
    expect(() => t.add(ka, a, [])).toThrow(expect.objectContaining({ code: 'PEER_EXISTS' }));
    expect(() => t.add('not-a-key', a, [])).toThrow(expect.objectContaining({ code: 'PEER_KEY_INVALID' }));
    expect(() => t.add(Buffer.alloc(31).toString('base64'), a, [])).toThrow(expect.objectContaining({ code: 'PEER_KEY_INVALID' }));
    const kx = key();
    expect(() => t.add(kx, { name: 'x' }, ['10.0.0.2/32', '10.0.0.0/33'])).toThrow(expect.objectContaining({ code: 'CIDR_INVALID' }));
    expect(t.has(kx)).toBe(false);
    expect(t.ownerOf('10.0.0.2')).toBe(ka); // the valid CIDR did not move
    expect(() => t.setAllowedIPs(ka, ['1.2.3.0/24', 'nonsense'])).toThrow(expect.objectContaining({ code: 'CIDR_INVALID' }));
    expect(t.allowedIPsOf(ka)).toEqual(before);
    expect(() => t.setAllowedIPs(kx, [])).toThrow(expect.objectContaining({ code: 'PEER_NOT_FOUND' }));
    expect(() => t.addAllowedIP(kx, '1.2.3.4')).toThrow(expect.objectContaining({ code: 'PEER_NOT_FOUND' }));
    expect(() => t.removeAllowedIP(kx, '1.2.3.4')).toThrow(expect.objectContaining({ code: 'PEER_NOT_FOUND' }));
  });

  it('keeps ownership per peer even when two peers share a value object', () => {
    const t = new PeerTable<string>();
    const k1 = key();
    const k2 = key();
    t.add(k1, 'same', ['10.1.0.0/16']);
    t.add(k2, 'same', ['10.2.0.0/16']);
    t.remove(k1);
    expect(t.lookupDestination(ipv4('10.0.0.1', '10.2.0.1'), 28)).toBe('same');
    expect(t.lookupDestination(ipv4('10.0.0.1', '10.1.0.1'), 28)).toBeUndefined();
  });
});
