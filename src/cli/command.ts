import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CliIo } from './io.js';

/** Exit codes (sysexits.h where one fits). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_CONFIG = 78;

/** One `tunvpn <name>` subcommand; the dispatcher in main.ts holds a table of them. */
export interface CliCommand {
  name: string;
  /** One line for `tunvpn --help`. */
  summary: string;
  /** Receives the arguments after the command name; handles its own --help. */
  run(args: string[], io: CliIo): Promise<number>;
}

/** A command-line mistake: the dispatcher prints it with a hint to --help and exits 2. */
export class UsageError extends Error {
  readonly command: string | undefined;

  constructor(message: string, command?: string) {
    super(message);
    this.command = command;
  }
}

const PARSE_ARGS_CODES = new Set(['ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE']);

/** node:util parseArgs errors become a short UsageError naming the offending argument. */
export function toUsageError(err: unknown, command?: string): UsageError | undefined {
  if (err instanceof UsageError) return err;
  const code = (err as { code?: unknown } | undefined)?.code;
  if (!(err instanceof Error) || typeof code !== 'string' || !PARSE_ARGS_CODES.has(code)) return undefined;
  const quoted = /'([^']*)'/.exec(err.message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && quoted !== undefined) return new UsageError(`unknown option '${quoted}'`, command);
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' && quoted !== undefined) return new UsageError(`unexpected argument '${quoted}'`, command);
  return new UsageError(err.message.split('. ')[0], command);
}

/** parseArgs with strict: true; its errors become UsageErrors. */
export function parseCommandArgs<T extends NonNullable<ParseArgsConfig['options']>>(command: string, args: string[], options: T) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (err) {
    throw toUsageError(err, command) ?? err;
  }
}
