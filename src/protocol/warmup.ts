/**
 * Start-up warm-up of the transport path (seal, open, replay window,
 * session lookup), so that V8 has compiled it before the first real packet
 * instead of interpreting it for the first few thousand. A daemon that had
 * carried no traffic answered idle pings at 0.9 ms against 0.5 ms once warm
 * (docs/performance.md, "Idle latency").
 *
 * It runs a throwaway pair of devices with fresh keys through one
 * handshake and `iterations` data packets each way, entirely in memory:
 * nothing is sent, no state of the real device is touched, and the objects
 * are the same classes with the same kinds of buffers as on the real path,
 * so what V8 learns applies there.
 */
import type { CryptoBackend } from '../crypto/types.js';
import { WireGuardDevice } from './device.js';

export interface WarmupResult {
  packets: number;
  ms: number;
}

export function warmTransportPath(crypto: CryptoBackend, now: () => number, wallClock: () => number, iterations = 2000): WarmupResult {
  const start = performance.now();
  const a = new WireGuardDevice({ crypto, privateKey: crypto.generatePrivateKey(), now, wallClock });
  const b = new WireGuardDevice({ crypto, privateKey: crypto.generatePrivateKey(), now, wallClock });
  try {
    const toB = a.addPeer({ publicKey: b.publicKey });
    const toA = b.addPeer({ publicKey: a.publicKey });
    // The same shape as the pipeline's placeholder source for transport messages.
    const source = { address: '', port: 0 };
    const wire = Buffer.allocUnsafeSlow(2048);
    const plain = Buffer.allocUnsafeSlow(2048);
    const init = toB.initiateHandshake();
    if (init === undefined) return { packets: 0, ms: performance.now() - start };
    const resp = b.decapsulate(init, source, plain);
    if (resp.kind !== 'handshake' || resp.reply === undefined) return { packets: 0, ms: performance.now() - start };
    a.decapsulate(resp.reply, source, plain);
    // The initiator confirms the session with its first data (a keepalive).
    for (const d of toB.takeOutbound()) b.decapsulate(d, source, plain);

    // An IPv4 packet of typical size; contents do not matter to the protocol.
    const packet = Buffer.alloc(1400);
    packet[0] = 0x45;
    packet.writeUInt16BE(1400, 2);
    let packets = 0;
    for (let i = 0; i < iterations; i++) {
      for (const [from, to] of [
        [toB, b],
        [toA, a],
      ] as const) {
        const len = i & 1 ? 84 : 1400;
        const n = from.encapsulate(packet.subarray(0, len), wire);
        if (n <= 0) continue;
        const r = to.decapsulate(wire.subarray(0, n), source, plain);
        if (r.kind === 'data') packets++;
      }
    }
    return { packets, ms: performance.now() - start };
  } finally {
    a.removePeer(b.publicKey);
    b.removePeer(a.publicKey);
  }
}
