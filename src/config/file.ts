/**
 * Reading a config or key file so that no file can hang, flood or trick the
 * loader: opened with O_NONBLOCK (a FIFO opens at once instead of waiting
 * for a writer, and no read ever blocks), then fstat on that same
 * descriptor (no window between checking and reading), refused unless it is
 * a regular file, and read only up to a size limit (which also covers
 * /proc-like files that report size 0 but have content).
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Why a file could not be read; `reason` is short and never contains the file's content. */
export class FileReadError extends Error {
  readonly reason: string;
  /** The errno code when the OS refused, e.g. "ENOENT". */
  readonly errno: string | undefined;

  constructor(reason: string, errno?: string) {
    super(reason);
    this.reason = reason;
    this.errno = errno;
  }
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file (ENOENT)',
  EACCES: 'permission denied (EACCES)',
  EPERM: 'operation not permitted (EPERM)',
  EISDIR: 'is a directory (EISDIR)',
  ENOTDIR: 'a parent is not a directory (ENOTDIR)',
  ELOOP: 'too many levels of symbolic links (ELOOP)',
  ENAMETOOLONG: 'the path is too long (ENAMETOOLONG)',
  // open() of a unix socket, or of a device node without a driver.
  ENXIO: 'not a regular file: a socket or a device without a driver (ENXIO)',
  ENODEV: 'not a regular file: a device (ENODEV)',
  EIO: 'input/output error (EIO)',
  EMFILE: 'too many open files (EMFILE)',
  EEXIST: 'already exists (EEXIST)',
};

/**
 * A short description of an fs error. Only the errno code is used, never
 * the error's message: node puts the path in it, and a path may hold a key.
 */
export function errnoText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string') return 'unknown error';
  return ERRNO_TEXT[code] ?? code;
}

export interface FileStats {
  mode: number;
  size: number;
}

function fileType(st: {
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  isSymbolicLink(): boolean;
}): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/**
 * The content of the regular file `abs`, at most `maxBytes` long. `check`,
 * when given, sees the file's mode and size after fstat and before any byte
 * is read, and may throw to refuse it (key files: mode 0600). Throws
 * FileReadError on any problem.
 */
export async function readRegularFile(abs: string, maxBytes: number, check?: (st: FileStats) => void): Promise<{ data: Buffer; stats: FileStats }> {
  let fh: FileHandle;
  try {
    // O_NOCTTY: a terminal device must not become our controlling tty.
    fh = await open(abs, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    throw new FileReadError(errnoText(err), (err as NodeJS.ErrnoException).code);
  }
  try {
    let st;
    try {
      st = await fh.stat();
    } catch (err) {
      throw new FileReadError(errnoText(err), (err as NodeJS.ErrnoException).code);
    }
    if (!st.isFile()) throw new FileReadError(`is ${fileType(st)}, not a regular file`);
    const stats = { mode: st.mode, size: st.size };
    if (st.size > maxBytes) throw new FileReadError(`is ${st.size} bytes, larger than the limit of ${describeBytes(maxBytes)}`);
    check?.(stats);
    return { data: await readUpTo(fh, st.size, maxBytes), stats };
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * Reads to the end, refusing more than `maxBytes`. The buffer starts at the
 * size fstat gave and grows only if the file grew, or reported 0 (/proc);
 * one byte over the limit tells "too large" from "just fits".
 */
async function readUpTo(fh: FileHandle, size: number, maxBytes: number): Promise<Buffer> {
  const cap = maxBytes + 1;
  let buf = Buffer.alloc(Math.min(cap, Math.max(size + 1, 4096)));
  let used = 0;
  for (;;) {
    if (used === buf.length) {
      if (buf.length === cap) throw new FileReadError(`is larger than the limit of ${describeBytes(maxBytes)}`);
      const wider = Buffer.alloc(Math.min(cap, buf.length * 2));
      buf.copy(wider, 0, 0, used);
      buf = wider;
    }
    let n: number;
    try {
      ({ bytesRead: n } = await fh.read(buf, used, buf.length - used, null));
    } catch (err) {
      throw new FileReadError(errnoText(err), (err as NodeJS.ErrnoException).code);
    }
    if (n === 0) return buf.subarray(0, used);
    used += n;
  }
}

/** "16 MiB", "4096 bytes". */
export function describeBytes(n: number): string {
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB (${n} bytes)`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB (${n} bytes)`;
  return `${n} bytes`;
}
