import { TunvpnError } from '../errors.js';

/**
 * A TUN device operation failed. `code` is the errno name the kernel gave
 * (EBUSY, EPERM, EINVAL, EBADFD, EIO, ...), so callers can switch on it the
 * way they would on a Node.js system error.
 */
export class TunError extends TunvpnError {
  readonly errno: number | undefined;
  readonly syscall: string | undefined;
  /** For a failed batch write: packets written before the failure. */
  readonly written: number | undefined;

  constructor(code: string, message: string, opts: { errno?: number; syscall?: string; written?: number; cause?: unknown } = {}) {
    super(code, message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.errno = opts.errno;
    this.syscall = opts.syscall;
    this.written = opts.written;
  }

  /** Wraps an error thrown or reported by the native binding. */
  static from(err: unknown): TunError {
    if (err instanceof TunError) return err;
    if (err instanceof Error) {
      const e = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown; written?: unknown };
      const code = typeof e.code === 'string' ? e.code : 'TUN_ERROR';
      return new TunError(code, e.message, {
        errno: typeof e.errno === 'number' ? e.errno : undefined,
        syscall: typeof e.syscall === 'string' ? e.syscall : undefined,
        written: typeof e.written === 'number' ? e.written : undefined,
        cause: err,
      });
    }
    return new TunError('TUN_ERROR', String(err), { cause: err });
  }
}
