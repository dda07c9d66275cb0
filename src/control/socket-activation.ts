/**
 * The control socket handed over by systemd (socket activation,
 * sd_listen_fds(3)): tunvpn.socket / tunvpn@.socket make
 * /run/wireguard/IFNAME.sock as root, mode 0600, and the service inherits
 * the listening descriptor as fd 3 with LISTEN_PID and LISTEN_FDS set. The
 * daemon then never writes to /run/wireguard, which it shares with other
 * WireGuard daemons (see docs/decisions.md).
 *
 * Run by hand there is no LISTEN_PID and the daemon makes its own socket as
 * before. A descriptor that is not one listening unix stream socket bound
 * to the path `wg` will look for is refused: serving `wg show IFACE` on
 * some other interface's path would misdirect every `wg` command.
 */
import { readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { TunvpnError } from '../errors.js';

/** The first passed descriptor (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/**
 * The inherited descriptor cannot serve as this interface's control
 * socket. A property of the units and the config, so the daemon exits 78
 * (EX_CONFIG) and systemd does not restart it.
 */
export class ControlSocketActivationError extends TunvpnError {
  constructor(message: string) {
    super('CONTROL_SOCKET_ACTIVATION', message);
  }
}

export interface InheritedControlSocket {
  /** The descriptor to listen on (server.listen({ fd })). */
  fd: number;
  /** The path the socket is bound to, as the kernel reports it. */
  path: string;
  /** The socket unit's FileDescriptorName= (by default the unit's name), when systemd passed one. */
  unit: string | undefined;
}

export interface InheritOptions {
  /** Default process.env; the LISTEN_* variables are removed from it (as sd_listen_fds(1) does). */
  env?: NodeJS.ProcessEnv;
  /** Default process.pid. */
  pid?: number;
  /** Where the socket must be: DIR/IFNAME.sock. Default /var/run/wireguard. */
  dir?: string;
  /** /proc, for tests. */
  procRoot?: string;
}

/**
 * The control socket systemd passed for interface `ifname`, or undefined
 * when none was passed to this process. Throws ControlSocketActivationError
 * when sockets were passed but are not exactly one listening unix stream
 * socket at DIR/IFNAME.sock.
 */
export function inheritedControlSocket(ifname: string, opts: InheritOptions = {}): InheritedControlSocket | undefined {
  const env = opts.env ?? process.env;
  const pid = opts.pid ?? process.pid;
  const proc = opts.procRoot ?? '/proc';
  const listenPid = env.LISTEN_PID;
  const listenFds = env.LISTEN_FDS;
  const names = env.LISTEN_FDNAMES;
  // Not for children: `ip` and anything else the daemon runs must not take them for theirs.
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  // sd_listen_fds(3): without LISTEN_PID, or with another process's, nothing was passed to us.
  if (listenPid === undefined || listenPid === '') return undefined;
  if (!/^[1-9]\d*$/.test(listenPid) || Number(listenPid) !== pid) return undefined;

  const unit = names?.split(':')[0] || undefined;
  const from = unit ? ` (from ${unit})` : '';
  const count = listenFds !== undefined && /^\d+$/.test(listenFds) ? Number(listenFds) : Number.NaN;
  if (count !== 1) {
    throw new ControlSocketActivationError(
      `systemd passed ${Number.isNaN(count) ? `LISTEN_FDS=${JSON.stringify(listenFds ?? '')}` : `${count} sockets`}${from}; tunvpn takes exactly one, its control socket: give the socket unit one ListenStream= line`,
    );
  }
  const fd = LISTEN_FDS_START;
  const path = boundPath(proc, fd, from);

  // /var/run/wireguard is /run/wireguard: say it the way the unit does.
  const expected = join(canonicalDir(join(opts.dir ?? '/var/run/wireguard', 'x')), `${ifname}.sock`);
  if (!samePath(path, expected)) {
    throw new ControlSocketActivationError(
      `interface.name is ${JSON.stringify(ifname)}, so its control socket must be ${expected}, but systemd passed ${path}${from}: ` +
        `name the interface ${JSON.stringify(basename(path).replace(/\.sock$/, ''))} in the config, or point ListenStream= of the socket unit at ${expected}`,
    );
  }
  // Deleted while no daemon ran (during a Restart=, say): the WireGuard way
  // to ask for a stop, and `wg` could not reach us anyway. Starting would
  // only fail again at every restart.
  let isSocket: boolean;
  try {
    isSocket = statSync(path).isSocket();
  } catch {
    isSocket = false;
  }
  if (!isSocket) {
    throw new ControlSocketActivationError(
      `the inherited control socket ${path}${from} is no longer there (deleted, which asks a WireGuard daemon to stop): not starting`,
    );
  }
  return { fd, path, unit };
}

/** The filesystem path a listening unix stream socket descriptor is bound to (from /proc/net/unix). */
function boundPath(proc: string, fd: number, from: string): string {
  let target: string;
  try {
    target = readlinkSync(join(proc, 'self', 'fd', String(fd)));
  } catch (err) {
    throw new ControlSocketActivationError(`systemd said it passed fd ${fd}${from}, but it is not open: ${(err as Error).message}`);
  }
  const ino = /^socket:\[(\d+)\]$/.exec(target)?.[1];
  if (ino === undefined)
    throw new ControlSocketActivationError(`fd ${fd}${from} is not a socket (${target}): the socket unit must have ListenStream=/run/wireguard/IFNAME.sock`);
  let table: string;
  try {
    table = readFileSync(join(proc, 'net', 'unix'), 'utf8');
  } catch (err) {
    throw new ControlSocketActivationError(`cannot read ${join(proc, 'net', 'unix')} to check fd ${fd}${from}: ${(err as Error).message}`);
  }
  // Num RefCount Protocol Flags Type St Inode Path
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[6] !== ino) continue;
    const flags = Number.parseInt(f[3] ?? '', 16);
    const type = Number.parseInt(f[4] ?? '', 16);
    const path = f.slice(7).join(' ');
    // 1 = SOCK_STREAM; 0x10000 = __SO_ACCEPTCON, set once listen() was called.
    if (type !== 1 || (flags & 0x10000) === 0) {
      throw new ControlSocketActivationError(`fd ${fd}${from} is not a listening stream socket: the socket unit must have ListenStream= (and Accept=no)`);
    }
    if (!path.startsWith('/')) {
      throw new ControlSocketActivationError(
        `fd ${fd}${from} is not bound to a path (${path || 'unnamed'}): the socket unit must have ListenStream=/run/wireguard/IFNAME.sock`,
      );
    }
    return path;
  }
  throw new ControlSocketActivationError(`fd ${fd}${from} is not a unix socket: the socket unit must have ListenStream=/run/wireguard/IFNAME.sock`);
}

/** The directory of `p` with symlinks resolved, when it exists. */
function canonicalDir(p: string): string {
  try {
    return realpathSync(dirname(p));
  } catch {
    return dirname(p);
  }
}

/** Same file name in the same directory, /var/run and /run being one. */
function samePath(a: string, b: string): boolean {
  return basename(a) === basename(b) && canonicalDir(a) === canonicalDir(b);
}
