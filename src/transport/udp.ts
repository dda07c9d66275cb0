import dgram, { type RemoteInfo, type Socket } from 'node:dgram';
import { TunvpnError } from '../errors.js';
import type { Endpoint } from './endpoint.js';

export class TransportError extends TunvpnError {}

export type DatagramHandler = (msg: Buffer, rinfo: RemoteInfo) => void;

export interface UdpTransportOptions {
  port: number;
  /** Kernel socket buffer sizes; bursts of tunnel traffic overflow the defaults. */
  recvBufferSize?: number;
  sendBufferSize?: number;
}

/**
 * The underlay: one UDP socket per address family on the listen port, as
 * WireGuard does (an IPv6-only socket beside the IPv4 one, so both families
 * share the port number).
 */
export class UdpTransport {
  private v4: Socket | undefined;
  private v6: Socket | undefined;
  private handler: DatagramHandler = () => undefined;
  private errorHandler: (err: Error) => void = () => undefined;
  private boundPort = 0;
  /** Sends that failed synchronously or asynchronously (no route, ...). */
  sendErrors = 0;
  lastSendError: Error | undefined;

  private readonly onSendDone = (err: Error | null): void => {
    if (err) {
      this.sendErrors++;
      this.lastSendError = err;
    }
  };

  get port(): number {
    return this.boundPort;
  }

  static async open(opts: UdpTransportOptions): Promise<UdpTransport> {
    const t = new UdpTransport();
    await t.bind(opts);
    return t;
  }

  private async bind(opts: UdpTransportOptions): Promise<void> {
    const v4 = await this.bindOne('udp4', opts.port, opts);
    this.v4 = v4;
    this.boundPort = v4.address().port;
    // Also IPv6, skipped quietly when the host has none.
    try {
      this.v6 = await this.bindOne('udp6', this.boundPort, opts);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // No IPv6 on this host: run IPv4 only. Anything else is fatal.
      if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') {
        v4.close();
        throw err;
      }
    }
  }

  private bindOne(type: 'udp4' | 'udp6', port: number, opts: UdpTransportOptions): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket({ type, ipv6Only: type === 'udp6' });
      const onError = (err: NodeJS.ErrnoException): void => {
        sock.close();
        const what = err.code === 'EADDRINUSE' ? `UDP port ${port} is already in use` : `cannot bind UDP port ${port} (${type}): ${err.message}`;
        reject(new TransportError(err.code === 'EADDRINUSE' ? 'PORT_IN_USE' : 'BIND_FAILED', what, { cause: err }));
      };
      sock.once('error', onError);
      sock.bind({ port, address: type === 'udp4' ? '0.0.0.0' : '::', exclusive: true }, () => {
        sock.off('error', onError);
        try {
          if (opts.recvBufferSize) sock.setRecvBufferSize(opts.recvBufferSize);
          if (opts.sendBufferSize) sock.setSendBufferSize(opts.sendBufferSize);
        } catch {
          /* capped by net.core.rmem_max; the defaults still work */
        }
        sock.on('message', (msg, rinfo) => this.handler(msg, rinfo));
        sock.on('error', (err) => this.errorHandler(err));
        resolve(sock);
      });
    });
  }

  onDatagram(handler: DatagramHandler): void {
    this.handler = handler;
  }

  onError(handler: (err: Error) => void): void {
    this.errorHandler = handler;
  }

  /**
   * Sends `length` bytes of `buf` to `to`. The buffer must not be reused
   * until the send completes: callers pass freshly allocated buffers.
   * Failures are counted, not thrown: the daemon reports them periodically.
   */
  send(buf: Uint8Array, length: number, to: Endpoint): void {
    const sock = to.family === 6 ? this.v6 : this.v4;
    if (!sock) {
      this.sendErrors++;
      return;
    }
    try {
      sock.send(buf, 0, length, to.port, to.address, this.onSendDone);
    } catch (err) {
      this.onSendDone(err as Error);
    }
  }

  async close(): Promise<void> {
    const close = (s: Socket | undefined): Promise<void> =>
      new Promise((resolve) => {
        if (!s) return resolve();
        try {
          s.close(() => resolve());
        } catch {
          resolve();
        }
      });
    await Promise.all([close(this.v4), close(this.v6)]);
    this.v4 = undefined;
    this.v6 = undefined;
  }
}
