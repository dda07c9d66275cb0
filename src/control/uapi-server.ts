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
 * (bounded in line length, line count and bytes, and in time from its first
 * byte) before it is acted on, and the socket is paused until its reply is
 * written, so a client that pipelines or never reads costs at most one
 * chunk of buffer. Requests from all connections run one at a time, in
 * arrival order. No timer runs while a request waits or is applied: the
 * client always gets its errno line.
 *
 * Nobody holding connections can lock the operator out: a full table makes
 * room for a newcomer by closing the least recently active connection that
 * has no request in progress, and a connection trickling a request a byte
 * at a time loses it at the request deadline.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmdirSync, statSync, unlinkSync, watch, type FSWatcher } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { interfaceNameProblem } from '../config/ifname.js';
import { TunvpnError } from '../errors.js';
import type { Logger } from '../log.js';
import { serializeErrno, serializeGet, SetRequestParser, wipeSetRequest } from './uapi-protocol.js';
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
  /**
   * Concurrent connections. A new one past this closes the least recently
   * active connection that has no request in progress (that one is told
   * errno=-16, EBUSY); only if all have one is the new one refused. Default 256.
   */
  maxConnections?: number;
  /** A connection with no request in progress, silent this long, is closed. Default 10 s. */
  idleTimeoutMs?: number;
  /**
   * A request must arrive whole within this long from its first byte, or it
   * is answered errno=-110 (ETIMEDOUT) and the connection closed. Applying
   * it does not count. Default 30 s.
   */
  requestTimeoutMs?: number;
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
  /**
   * A socket already bound to DIR/IFNAME.sock and listening, inherited from
   * systemd (src/control/socket-activation.ts has checked its path). Nothing
   * is created in DIR, and close() leaves the file to whoever made it (the
   * socket unit removes it on stop).
   */
  listenFd?: number;
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

function listenOn(server: Server, path: string, fd?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new UapiSocketError(`cannot listen on ${path}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen(fd === undefined ? path : { fd }, () => {
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
  requestTimeoutMs: number;
}

/** Unread input beyond this, while a request is being answered, means a client is misbehaving. */
const MAX_BUFFERED_INPUT = 1 << 20;
/** Replies a client does not read pile up here; past this, it is cut off. */
const MAX_BUFFERED_OUTPUT = 16 << 20;
/** After a fatal protocol error, how long the client gets to read the errno before the socket goes. */
const LINGER_MS = 2000;
/** Linux ETIMEDOUT, as wireguard-go would put it on the wire: `wg` prints "Connection timed out". */
const UAPI_ETIMEDOUT = -110;
/** Parsing a large request gives the event loop a turn after this many milliseconds (as the apply does, src/cooperative.ts). */
const PARSE_SLICE_MS = 5;

export type UapiOp = { kind: 'get' } | { kind: 'set'; parsed: UapiSetRequest | UapiError };

/**
 * One client connection. Its states: waiting for a request (the idle
 * timeout runs), reading one (the request deadline runs too, from its first
 * byte, so a client trickling a byte at a time cannot hold the connection),
 * and busy (its request is queued or being applied: no timer runs, so the
 * client always gets its errno line, however long the apply takes).
 */
class Connection {
  private input = '';
  private pos = 0;
  private phase: 'op' | 'get' | 'set' = 'op';
  private setParser: SetRequestParser | undefined;
  private setLines = 0;
  private setBytes = 0;
  private deadline: NodeJS.Timeout | undefined;
  /** Parsing gave the event loop a turn (see pump); parsing goes on in a setImmediate. */
  private yielding = false;
  /** Queued or being applied; a busy connection is never shed. */
  busy = false;
  private finished = false;
  /** The client shut down its side: answer what is complete, then close. */
  private clientEnded = false;

  constructor(
    private readonly socket: Socket,
    private readonly server: UapiServer,
    private readonly limits: Limits,
  ) {
    socket.setTimeout(limits.idleTimeoutMs, () => this.destroy());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('error', () => {
      /* a client that vanished; 'close' follows */
    });
    socket.once('close', () => this.teardown());
  }

  destroy(): void {
    this.finished = true;
    this.socket.destroy();
  }

  /** Shed to make room for a new client: told why, then cut off. */
  shed(): void {
    this.server.logDebug('control socket: connection table full, closing the least recently active idle connection');
    this.finished = true;
    this.stopDeadline();
    this.socket.end(serializeErrno(UAPI_EBUSY));
    this.socket.destroySoon();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }

  private teardown(): void {
    this.finished = true;
    this.stopDeadline();
    // A request cut short is never applied: its keys go now.
    this.setParser?.discard();
    this.setParser = undefined;
    this.server.forget(this);
  }

  private onData(chunk: Buffer): void {
    if (this.finished) return;
    this.server.touch(this);
    // The protocol is ASCII; latin1 maps bytes 1:1 so chunk boundaries never split a character.
    this.input = this.pos === this.input.length ? chunk.toString('latin1') : this.input.slice(this.pos) + chunk.toString('latin1');
    this.pos = 0;
    if (this.busy && this.input.length > MAX_BUFFERED_INPUT) {
      this.destroy();
      return;
    }
    this.pump();
  }

  private onEnd(): void {
    if (this.finished) return;
    this.clientEnded = true;
    if (!this.busy) this.pump();
  }

  private startDeadline(): void {
    if (this.deadline !== undefined) return;
    this.deadline = setTimeout(() => {
      this.deadline = undefined;
      this.fail(UAPI_ETIMEDOUT, `request not complete within ${this.limits.requestTimeoutMs} ms`);
    }, this.limits.requestTimeoutMs);
    this.deadline.unref();
  }

  private stopDeadline(): void {
    if (this.deadline !== undefined) clearTimeout(this.deadline);
    this.deadline = undefined;
  }

  private pump(): void {
    if (this.yielding) return;
    // libuv reads up to 32 chunks of 64 KB in one go: a 2 MB request would be
    // parsed in one turn of the event loop (about 100 ms), so parse in slices.
    const sliceEnd = performance.now() + PARSE_SLICE_MS;
    let lines = 0;
    while (!this.busy && !this.finished) {
      if ((++lines & 63) === 0 && performance.now() > sliceEnd) {
        this.yieldParse();
        return;
      }
      // A request starts with its first byte: from then on it has requestTimeoutMs to arrive whole.
      if (this.pos < this.input.length || this.phase !== 'op') this.startDeadline();
      const nl = this.input.indexOf('\n', this.pos);
      if (nl < 0) {
        if (this.input.length - this.pos > this.limits.maxLineBytes) this.fail(UAPI_EMSGSIZE, 'line too long');
        else if (this.clientEnded) this.endAfterInput();
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

  /** Gives the event loop a turn, then parses on (the socket is paused meanwhile, so input does not pile up). */
  private yieldParse(): void {
    this.yielding = true;
    this.socket.pause();
    setImmediate(() => {
      this.yielding = false;
      if (this.finished) return;
      this.pump();
      if (!this.busy && !this.finished && !this.yielding) this.socket.resume();
    });
  }

  /**
   * The client sent all it will send. A request it did not finish is not
   * applied (a truncated `set` could drop allowed IPs it meant to replace);
   * wireguard-go would apply it up to the cut.
   */
  private endAfterInput(): void {
    if (this.phase !== 'op' || this.pos < this.input.length) {
      this.server.logDebug('control socket: client closed in the middle of a request; nothing applied');
      this.destroy();
      return;
    }
    this.finished = true;
    this.stopDeadline();
    this.socket.end();
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
      case 'set': {
        const parser = this.setParser;
        if (parser === undefined) return;
        // wireguard-go reads a set body with Go's line scanner, which drops one \r before each \n
        // (so "\r\n" also ends the request); the operation lines it reads raw.
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          this.phase = 'op';
          this.setParser = undefined;
          this.run({ kind: 'set', parsed: parser.finish() });
          return;
        }
        this.setLines++;
        this.setBytes += line.length + 1;
        if (this.setLines > this.limits.maxRequestLines || this.setBytes > this.limits.maxRequestBytes) {
          this.fail(UAPI_EMSGSIZE, 'set request too large');
          return;
        }
        // Parsed as it arrives: a large request costs a little per chunk, not one long block at the end.
        parser.feed(line);
        return;
      }
    }
  }

  private run(op: UapiOp): void {
    this.busy = true;
    this.stopDeadline();
    // No timer while the request waits and runs: the client gets its answer however long that takes.
    this.socket.setTimeout(0);
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
        this.server.touch(this);
        this.socket.setTimeout(this.limits.idleTimeoutMs);
        this.pump();
        if (!this.busy && !this.finished && !this.yielding) this.socket.resume();
      },
      () => this.destroy(),
    );
  }

  /** A request we cannot parse leaves the stream out of step: answer, then hang up. */
  private fail(errno: number, why: string): void {
    this.finished = true;
    this.stopDeadline();
    this.setParser?.discard();
    this.setParser = undefined;
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
  private ino = -1;
  /** Open connections, least recently active first (a Map keeps insertion order; touch() moves one to the end). */
  private readonly connections = new Map<Connection, true>();
  private queue: Promise<unknown> = Promise.resolve();
  private closing: Promise<void> | undefined;
  private watcher: FSWatcher | undefined;
  private readonly limits: Limits;
  private readonly maxConnections: number;
  private readonly logger: Logger | undefined;

  private constructor(
    private readonly server: Server,
    path: string,
    private readonly device: UapiDevice,
    opts: UapiServerOptions,
    /** False for a socket systemd made (socket activation): close() leaves its file to systemd. */
    private readonly ownsFile: boolean,
  ) {
    this.path = path;
    this.logger = opts.logger;
    this.limits = {
      maxLineBytes: opts.maxLineBytes ?? 4096,
      maxRequestLines: opts.maxRequestLines ?? 262144,
      maxRequestBytes: opts.maxRequestBytes ?? 16 << 20,
      idleTimeoutMs: opts.idleTimeoutMs ?? 10_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 30_000,
    };
    this.maxConnections = opts.maxConnections ?? 256;
    server.on('connection', (socket: Socket) => this.accept(socket));
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
    const inherited = opts.listenFd;
    if (inherited === undefined) {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      await removeIfStale(path);
    }

    // Half-open allowed: a client that shuts down its side after a request still gets the answer.
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false });
    const uapi = new UapiServer(server, path, device, opts, inherited === undefined);
    if (inherited !== undefined) return uapi.adopt(inherited, ifname, dir, opts);

    const tmpDir = mkdtempSync(join(dir, `.${ifname}-`));
    const tmpPath = join(tmpDir, randomBytes(4).toString('hex'));
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
      uapi.ino = statSync(path).ino;
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
    if (opts.onSocketRemoved) uapi.watchRemoval(dir, `${ifname}.sock`, opts.onSocketRemoved);
    opts.logger?.info({ path }, 'control socket listening');
    return uapi;
  }

  /** listen() with an inherited socket: serve it, watch its file, never touch DIR. */
  private async adopt(fd: number, ifname: string, dir: string, opts: UapiServerOptions): Promise<UapiServer> {
    try {
      await listenOn(this.server, this.path, fd);
      // The file's inode (not the socket's): the removal watch compares it.
      this.ino = statSync(this.path).ino;
    } catch (err) {
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      throw err instanceof TunvpnError
        ? err
        : new UapiSocketError(`cannot use the inherited control socket ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    this.server.on('error', (err) => opts.logger?.warn({ err: err.message }, 'control socket error'));
    if (opts.onSocketRemoved) this.watchRemoval(dir, `${ifname}.sock`, opts.onSocketRemoved);
    opts.logger?.info({ path: this.path, inherited: true }, 'control socket listening');
    return this;
  }

  /**
   * A new client. A full table does not lock it out: the least recently
   * active connection that is not waiting for its answer makes room (an
   * idle or trickling client cannot keep root's `wg` away). Only when every
   * slot holds a request in progress is the newcomer refused with EBUSY.
   */
  private accept(socket: Socket): void {
    if (this.closing === undefined && this.connections.size >= this.maxConnections) {
      for (const conn of this.connections.keys()) {
        if (conn.busy) continue;
        this.connections.delete(conn);
        conn.shed();
        break;
      }
    }
    if (this.closing !== undefined || this.connections.size >= this.maxConnections) {
      socket.on('error', () => undefined);
      socket.end(serializeErrno(UAPI_EBUSY));
      // Read (and drop) so the client's close reaches us and frees its resources at once.
      socket.resume();
      setTimeout(() => socket.destroy(), LINGER_MS).unref();
      return;
    }
    const conn = new Connection(socket, this, this.limits);
    this.connections.set(conn, true);
  }

  /** @internal The connection did something: it becomes the most recently active. */
  touch(conn: Connection): void {
    if (!this.connections.delete(conn)) return;
    this.connections.set(conn, true);
  }

  /** @internal The connection is closed. */
  forget(conn: Connection): void {
    this.connections.delete(conn);
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
    } finally {
      // The device copied what it keeps; the request's key buffers are wiped, applied or refused.
      wipeSetRequest(req);
    }
  }

  /** Stops listening, drops every connection and removes the socket file (if it is still ours). */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      this.watcher?.close();
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const conn of [...this.connections.keys()]) conn.destroy();
      await closed;
      try {
        if (this.ownsFile && statSync(this.path).ino === this.ino) unlinkSync(this.path);
      } catch {
        /* already gone */
      }
      this.logger?.info({ path: this.path }, 'control socket closed');
    })();
    return this.closing;
  }
}
