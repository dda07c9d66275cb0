/** Socket helpers shared by the native UDP tests. */
import dgram, { type Socket } from 'node:dgram';
import { afterEach } from 'vitest';

/** Registers an afterEach that closes whatever the returned `track` was given during the test; `track` returns its argument. */
export function closeAfterEach(): <T extends { close(): void }>(s: T) => T {
  const open: { close(): void }[] = [];
  afterEach(() => {
    for (const s of open.splice(0)) s.close();
  });
  return (s) => {
    open.push(s);
    return s;
  };
}

/** A node:dgram socket bound to an ephemeral port on `address` (IPv6 only for udp6). */
export function dgramSocket(type: 'udp4' | 'udp6', address: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, ipv6Only: type === 'udp6' });
    s.once('error', reject);
    s.bind(0, address, () => resolve(s));
  });
}

/** A dgram socket as something `track` can close. */
export function closeDgram(s: Socket): { close(): void } {
  return { close: () => s.close() };
}
