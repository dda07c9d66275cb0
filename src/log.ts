import pino, { type Logger, type LevelWithSilent } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/**
 * Field names that may hold secrets. pino censors them wherever they appear
 * (top level or one level down), as a second line of defence: the code never
 * passes keys to the logger on purpose.
 */
const SECRET_FIELDS = ['privateKey', 'presharedKey', 'private_key', 'preshared_key', 'secret', 'key'];
const REDACT_PATHS = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]);

export interface LoggerOptions {
  level: string;
  /** Human-readable output; default: when stdout is a TTY. */
  pretty?: boolean;
  /** Destination stream (tests); default stdout. */
  destination?: NodeJS.WritableStream;
}

/**
 * JSON lines on stdout for journald; human-readable when stdout is a TTY.
 * Synchronous pretty-printing (no transport worker thread): log volume is
 * small and never per packet.
 */
export function createLogger(opts: LoggerOptions): Logger {
  const level = opts.level as LevelWithSilent;
  const usePretty = opts.pretty ?? Boolean(process.stdout.isTTY);
  const base = {
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  };
  if (usePretty) {
    const stream = pretty({
      colorize: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname',
      destination: opts.destination ?? 1,
      sync: true,
    });
    return pino(base, stream);
  }
  if (opts.destination) return pino(base, opts.destination);
  return pino(base, pino.destination({ dest: 1, sync: true }));
}
