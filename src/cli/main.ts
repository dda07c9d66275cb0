#!/usr/bin/env node
/**
 * The `tunvpn` command: a table of subcommands and a dispatcher. New
 * commands (show, import...) are one CliCommand each, added to COMMANDS.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { checkCommand } from './check.js';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, toUsageError, type CliCommand } from './command.js';
import { redactKeyMaterial } from '../config/redact.js';
import { safeIo, type CliIo } from './io.js';
import { genkeyCommand, genpskCommand, pubkeyCommand } from './keys.js';
import { importCommand } from './import.js';
import { showCommand } from './show.js';

// Loaded on use: it pulls in the daemon, TUN binding and all; key tools and
// `check` must work without them.
const runCommand: CliCommand = {
  name: 'run',
  summary: "run the daemon in the foreground (systemd's ExecStart)",
  async run(args, io) {
    const mod = await import('./run.js');
    return mod.runCommand(args, io);
  },
};

export const COMMANDS: readonly CliCommand[] = [runCommand, checkCommand, showCommand, importCommand, genkeyCommand, pubkeyCommand, genpskCommand];

/**
 * Commands whose streams are passed through untouched: they print only
 * base64 and fixed text, and they check whether stdout is the process's
 * own (to warn about a world-readable key file), which a wrapper would hide.
 * Every other command, and the dispatcher's own messages, print through
 * SafeOutput: no control character from any input reaches the terminal.
 */
const RAW_OUTPUT = new Set(['genkey', 'pubkey', 'genpsk']);

/** Commands that colour their own stdout on a terminal (SGR sequences pass). */
const COLOUR_OUTPUT = new Set(['show']);

function findCommand(name: string): CliCommand | undefined {
  return COMMANDS.find((c) => c.name === name);
}

export function version(): string {
  // src/cli/main.ts (tests) and dist/src/cli/main.js (bin) sit at different depths.
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'tunvpn' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      /* not here */
    }
    dir = dirname(dir);
  }
  return 'unknown';
}

export function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const lines = COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    'Usage: tunvpn <command> [options]',
    '',
    'A userspace WireGuard-compatible VPN daemon.',
    '',
    'Commands:',
    ...lines,
    '',
    'Options:',
    '  -h, --help     show this help (or `tunvpn <command> --help`)',
    '  -V, --version  print the version',
    '',
  ].join('\n');
}

/**
 * Runs `tunvpn` with `argv` (the arguments after the program name) and
 * returns the exit status: 0 ok, 1 failure, 2 usage error, 78 bad config.
 */
export async function main(argv: string[], rawIo: CliIo): Promise<number> {
  const io = safeIo(rawIo);
  const [first, ...rest] = argv;
  if (first === undefined) {
    io.stderr.write(topHelp());
    return EXIT_USAGE;
  }
  if (first === '-h' || first === '--help' || first === 'help') {
    const target = first === 'help' && rest[0] !== undefined ? findCommand(rest[0]) : undefined;
    if (target) return main([target.name, '--help'], rawIo);
    if (first === 'help' && rest[0] !== undefined) return usage(io, `unknown command '${rest[0]}'`);
    io.stdout.write(topHelp());
    return EXIT_OK;
  }
  if (first === '-V' || first === '--version') {
    io.stdout.write(`tunvpn ${version()}\n`);
    return EXIT_OK;
  }
  if (first.startsWith('-')) return usage(io, `unknown option '${first}'`);
  const command = findCommand(first);
  if (!command) return usage(io, `unknown command '${first}'`);
  const commandIo = RAW_OUTPUT.has(command.name) ? rawIo : safeIo(rawIo, { allowSgr: COLOUR_OUTPUT.has(command.name) });
  try {
    return await command.run(rest, commandIo);
  } catch (err) {
    const usageError = toUsageError(err, command.name);
    if (usageError) return usage(io, usageError.message, command.name);
    const e = err as { message?: unknown; code?: unknown };
    const code = typeof e.code === 'string' ? ` (${e.code})` : '';
    // An unexpected error's message may quote anything it was given: no key-like text.
    io.stderr.write(`tunvpn ${command.name}: ${redactKeyMaterial(String(e.message ?? err))}${code}\n`);
    return EXIT_FAILURE;
  }
}

function usage(io: CliIo, message: string, command?: string): number {
  const who = command ? `tunvpn ${command}` : 'tunvpn';
  // The message quotes the offending argument: a key given by mistake stays hidden.
  io.stderr.write(`${who}: ${redactKeyMaterial(message)}\nTry '${who} --help' for more information.\n`);
  return EXIT_USAGE;
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return pathToFileURL(realpathSync(script)).href === import.meta.url;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const code = await main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
  // Let buffered output reach a pipe before exiting.
  await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
  process.exit(code);
}
