import { createRequire } from 'node:module';
import pino, { type Logger, type LevelWithSilent } from 'pino';
import type { PrettyOptions, PrettyStream } from 'pino-pretty';

// pino-pretty (and its dependencies) only load for a TTY: a service logging
// JSON to journald never needs them.
const require = createRequire(import.meta.url);
function loadPretty(): (opts: PrettyOptions) => PrettyStream {
  return (require('pino-pretty') as { default: (opts: PrettyOptions) => PrettyStream }).default;
}

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
    const stream = loadPretty()({
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
