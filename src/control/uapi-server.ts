/**
 * The control socket: DIR/IFNAME.sock (DIR = /var/run/wireguard), a unix
 * stream socket speaking the cross-platform userspace API, so that the `wg`
 * tool works against tunvpn as against wireguard-go.
 *
 * Access control is the file mode: the socket is 0600 and owned by the
 * daemon's user (root). Node has no SO_PEERCRED, so peer credentials are not
 * checked a second time.
 *
 * The socket is bound inside a fresh 0700 directory, chmod'ed, then
 * hard-linked into place: nobody can connect while the mode is still wide,
 * and link() fails instead of replacing the socket of another live daemon.
 *
 * A connection carries requests one after the other; each is read whole
 * (bounded in line length and line count) before it is acted on, and the
 * socket is paused until its reply is written, so a client that pipelines
 * or never reads costs at most one chunk of buffer. Requests from all
 * connections run one at a time, in arrival order.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmdirSync, statSync, unlinkSync, watch, type FSWatcher } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { interfaceNameProblem } from '../config/ifname.js';
import { TunvpnError } from '../errors.js';
import type { Logger } from '../log.js';
import { serializeErrno, serializeGet, SetRequestParser } from './uapi-protocol.js';
import {
  DEFAULT_UAPI_DIR,
  UAPI_EBUSY,
  UAPI_EINVAL,
  UAPI_EIO,
  UAPI_EMSGSIZE,
  UAPI_ENOANO,
  UAPI_EPROTO,
  UapiError,
  type UapiDevice,
  type UapiSetRequest,
} from './uapi-types.js';

export { DEFAULT_UAPI_DIR } from './uapi-types.js';

export interface UapiServerOptions {
  /** Socket directory; default /var/run/wireguard (where `wg` looks). */
  dir?: string;
  logger?: Logger;
  /** Concurrent connections; more are answered errno=-16 (EBUSY) and closed. Default 256. */
  maxConnections?: number;
  /** A connection silent this long is closed. Default 10 s. */
  idleTimeoutMs?: number;
  /** Longest accepted line in bytes (real ones are under 200). Default 4096. */
  maxLineBytes?: number;
  /** Most lines in one set request. Default 262144. */
  maxRequestLines?: number;
  /** Most bytes in one set request. Default 16 MiB. */
  maxRequestBytes?: number;
  /**
   * Called once if our socket file is deleted or replaced. The xplatform
   * spec says a userspace implementation should then shut down gracefully;
   * the daemon decides.
   */
  onSocketRemoved?: () => void;
}

/** Another process answers on the socket we were asked to create. */
export class UapiSocketInUseError extends TunvpnError {
  constructor(path: string) {
    super('UAPI_SOCKET_IN_USE', `control socket ${path} is in use by another running process (is a daemon for this interface already running?)`);
  }
}

export class UapiSocketError extends TunvpnError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('UAPI_SOCKET_ERROR', message, options);
  }
}

/** The one interface-name rule (src/config/ifname.ts); the name becomes a file name here. */
function checkIfname(ifname: string): void {
  const problem = interfaceNameProblem(ifname);
  if (problem !== undefined) throw new UapiSocketError(`invalid interface name for a control socket: ${problem}`);
}

function errCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Whether something accepts connections on `path` (bounded by a timeout, which counts as alive). */
function probe(path: string, timeoutMs: number): Promise<'alive' | 'refused' | 'gone'> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('alive');
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve('alive');
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      const code = errCode(err);
      if (code === 'ECONNREFUSED') resolve('refused');
      else if (code === 'ENOENT') resolve('gone');
      else reject(new UapiSocketError(`cannot probe existing control socket ${path}: ${err.message}`, { cause: err }));
    });
  });
}

/** Removes `path` if it is a socket nobody answers on; throws if someone does. */
async function removeIfStale(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new UapiSocketError(`${path} exists and is not a socket; refusing to replace it`);
  const state = await probe(path, 1000);
  if (state === 'alive') throw new UapiSocketInUseError(path);
  if (state === 'refused') {
    try {
      unlinkSync(path);
    } catch (err) {
      if (errCode(err) !== 'ENOENT') throw err;
    }
  }
}

function listenOn(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new UapiSocketError(`cannot listen on ${path}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen(path, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

interface Limits {
  maxLineBytes: number;
  maxRequestLines: number;
  maxRequestBytes: number;
  idleTimeoutMs: number;
}

/** Unread input beyond this, while a request is being answered, means a client is misbehaving. */
const MAX_BUFFERED_INPUT = 1 << 20;
/** Replies a client does not read pile up here; past this, it is cut off. */
const MAX_BUFFERED_OUTPUT = 16 << 20;
/** After a fatal protocol error, how long the client gets to read the errno before the socket goes. */
const LINGER_MS = 2000;

export type UapiOp = { kind: 'get' } | { kind: 'set'; parsed: UapiSetRequest | UapiError };

class Connection {
  private input = '';
  private pos = 0;
  private phase: 'op' | 'get' | 'set' = 'op';
  private setParser = new SetRequestParser();
  private setLines = 0;
  private setBytes = 0;
  private busy = false;
  private finished = false;

  constructor(
    private readonly socket: Socket,
    private readonly server: UapiServer,
    private readonly limits: Limits,
  ) {
    socket.setTimeout(limits.idleTimeoutMs, () => socket.destroy());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {
      /* a client that vanished; 'close' follows */
    });
  }

  destroy(): void {
    this.finished = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.finished) return;
    // The protocol is ASCII; latin1 maps bytes 1:1 so chunk boundaries never split a character.
    this.input = this.pos === this.input.length ? chunk.toString('latin1') : this.input.slice(this.pos) + chunk.toString('latin1');
    this.pos = 0;
    if (this.busy && this.input.length > MAX_BUFFERED_INPUT) {
      this.destroy();
      return;
    }
    this.pump();
  }

  private pump(): void {
    while (!this.busy && !this.finished) {
      const nl = this.input.indexOf('\n', this.pos);
      if (nl < 0) {
        if (this.input.length - this.pos > this.limits.maxLineBytes) this.fail(UAPI_EMSGSIZE, 'line too long');
        return;
      }
      if (nl - this.pos > this.limits.maxLineBytes) {
        this.fail(UAPI_EMSGSIZE, 'line too long');
        return;
      }
      const line = this.input.slice(this.pos, nl);
      this.pos = nl + 1;
      this.onLine(line);
    }
  }

  private onLine(line: string): void {
    switch (this.phase) {
      case 'op':
        if (line === 'get=1') this.phase = 'get';
        else if (line === 'set=1') {
          this.phase = 'set';
          this.setParser = new SetRequestParser();
          this.setLines = 0;
          this.setBytes = 0;
        } else this.fail(UAPI_EPROTO, 'unknown operation');
        return;
      case 'get':
        if (line !== '') {
          this.fail(UAPI_EINVAL, 'trailing data after get=1');
          return;
        }
        this.phase = 'op';
        this.run({ kind: 'get' });
        return;
      case 'set':
        if (line === '') {
          this.phase = 'op';
          this.run({ kind: 'set', parsed: this.setParser.finish() });
          return;
        }
        this.setLines++;
        this.setBytes += line.length + 1;
        if (this.setLines > this.limits.maxRequestLines || this.setBytes > this.limits.maxRequestBytes) {
          this.fail(UAPI_EMSGSIZE, 'set request too large');
          return;
        }
        // Parsed as it arrives: a large request costs a little per chunk, not one long block at the end.
        this.setParser.feed(line);
        return;
    }
  }

  private run(op: UapiOp): void {
    this.busy = true;
    this.socket.pause();
    this.server.enqueue(op).then(
      (reply) => {
        if (this.finished || this.socket.destroyed) return;
        // Earlier replies still unread (a client pipelining without reading): cut it off.
        if (this.socket.writableLength > MAX_BUFFERED_OUTPUT) {
          this.destroy();
          return;
        }
        this.socket.write(reply);
        this.busy = false;
        this.pump();
        if (!this.busy && !this.finished) this.socket.resume();
      },
      () => this.destroy(),
    );
  }

  /** A request we cannot parse leaves the stream out of step: answer, then hang up. */
  private fail(errno: number, why: string): void {
    this.finished = true;
    this.server.logDebug(`control socket: closing connection: ${why}`);
    this.input = '';
    this.pos = 0;
    this.socket.end(serializeErrno(errno));
    // Drain whatever the client still sends so it can read the errno; cut it off after a while.
    this.socket.resume();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }
}

export class UapiServer {
  readonly path: string;
  private readonly connections = new Set<Connection>();
  private queue: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private watcher: FSWatcher | undefined;

  private constructor(
    private readonly server: Server,
    path: string,
    private readonly ino: number,
    private readonly device: UapiDevice,
    private readonly logger: Logger | undefined,
  ) {
    this.path = path;
  }

  /**
   * Creates DIR (0755) and listens on DIR/IFNAME.sock (0600). A leftover
   * socket nobody answers on is replaced; one a live process answers on
   * makes this fail with UapiSocketInUseError.
   */
  static async listen(ifname: string, device: UapiDevice, opts: UapiServerOptions = {}): Promise<UapiServer> {
    checkIfname(ifname);
    const dir = opts.dir ?? DEFAULT_UAPI_DIR;
    const path = join(dir, `${ifname}.sock`);
    if (Buffer.byteLength(path) >= 108) throw new UapiSocketError(`control socket path too long: ${path}`);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    await removeIfStale(path);

    const limits: Limits = {
      maxLineBytes: opts.maxLineBytes ?? 4096,
      maxRequestLines: opts.maxRequestLines ?? 262144,
      maxRequestBytes: opts.maxRequestBytes ?? 16 << 20,
      idleTimeoutMs: opts.idleTimeoutMs ?? 10_000,
    };
    const maxConnections = opts.maxConnections ?? 256;
    const server = createServer({ allowHalfOpen: false, pauseOnConnect: false });
    const holder: { uapi?: UapiServer } = {};
    server.on('connection', (socket: Socket) => {
      const uapi = holder.uapi;
      if (uapi === undefined || uapi.closing !== undefined || uapi.connections.size >= maxConnections) {
        socket.on('error', () => undefined);
        socket.end(serializeErrno(UAPI_EBUSY));
        // Read (and drop) so the client's close reaches us and frees the slot at once.
        socket.resume();
        setTimeout(() => socket.destroy(), LINGER_MS).unref();
        return;
      }
      const conn = new Connection(socket, uapi, limits);
      uapi.connections.add(conn);
      socket.once('close', () => uapi.connections.delete(conn));
    });

    const tmpDir = mkdtempSync(join(dir, `.${ifname}-`));
    const tmpPath = join(tmpDir, randomBytes(4).toString('hex'));
    let ino: number;
    try {
      await listenOn(server, tmpPath);
      chmodSync(tmpPath, 0o600);
      for (let attempt = 0; ; attempt++) {
        try {
          linkSync(tmpPath, path);
          break;
        } catch (err) {
          if (errCode(err) !== 'EEXIST' || attempt >= 2) throw err;
          await removeIfStale(path);
        }
      }
      ino = statSync(path).ino;
    } catch (err) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      throw err instanceof TunvpnError ? err : new UapiSocketError(`cannot create control socket ${path}: ${(err as Error).message}`, { cause: err });
    } finally {
      try {
        unlinkSync(tmpPath);
      } catch {
        /* never bound, or already gone */
      }
      try {
        rmdirSync(tmpDir);
      } catch {
        /* best effort */
      }
    }
    server.on('error', (err) => opts.logger?.warn({ err: err.message }, 'control socket error'));
    const uapi = new UapiServer(server, path, ino, device, opts.logger);
    holder.uapi = uapi;
    if (opts.onSocketRemoved) uapi.watchRemoval(dir, `${ifname}.sock`, opts.onSocketRemoved);
    opts.logger?.info({ path }, 'control socket listening');
    return uapi;
  }

  private watchRemoval(dir: string, name: string, onRemoved: () => void): void {
    let fired = false;
    const check = () => {
      if (fired || this.closing) return;
      let ours: boolean;
      try {
        ours = statSync(this.path).ino === this.ino;
      } catch {
        ours = false;
      }
      if (!ours) {
        fired = true;
        this.logger?.warn({ path: this.path }, 'control socket file removed');
        onRemoved();
      }
    };
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === name) check();
      });
      this.watcher.on('error', () => undefined);
    } catch (err) {
      this.logger?.warn({ err: (err as Error).message }, 'cannot watch the control socket directory');
    }
  }

  /** Number of open client connections (for tests and status). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** @internal Runs one request after every earlier one and returns the reply text. */
  enqueue(op: UapiOp): Promise<string> {
    const result = this.queue.then(() => this.execute(op));
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** @internal */
  logDebug(message: string): void {
    this.logger?.debug(message);
  }

  private async execute(op: UapiOp): Promise<string> {
    if (op.kind === 'get') {
      try {
        return serializeGet(this.device.snapshot());
      } catch (err) {
        this.logger?.warn({ err: (err as Error).message }, 'control socket: snapshot failed');
        return serializeErrno(UAPI_EIO);
      }
    }
    const req = op.parsed;
    if (req instanceof UapiError) {
      this.logger?.info({ errno: req.errno, reason: req.message }, 'control socket: invalid set request');
      return serializeErrno(req.errno);
    }
    try {
      await this.device.apply(req);
      return serializeErrno(0);
    } catch (err) {
      if (err instanceof UapiError) {
        this.logger?.info({ errno: err.errno, reason: err.message }, 'control socket: set request refused');
        return serializeErrno(err.errno);
      }
      this.logger?.error({ err: (err as Error).message }, 'control socket: set request failed');
      return serializeErrno(UAPI_ENOANO);
    }
  }

  /** Stops listening, drops every connection and removes the socket file (if it is still ours). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      this.watcher?.close();
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const conn of this.connections) conn.destroy();
      await closed;
      try {
        if (statSync(this.path).ino === this.ino) unlinkSync(this.path);
      } catch {
        /* already gone */
      }
      this.logger?.info({ path: this.path }, 'control socket closed');
    })();
    return this.closing;
  }
}
