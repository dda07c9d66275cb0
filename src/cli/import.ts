/**
 * `tunvpn import FILE`: a wg-quick config in, a tunvpn JSON config out.
 * The output holds the private key inline unless --private-key-file is
 * given; either way stderr says where the secrets went.
 */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { errnoText, FileReadError, readRegularFile } from '../config/file.js';
import { keyLikeRuns, redactFragments, redactKeyMaterial } from '../config/redact.js';
import { convertWgQuick, interfaceNameFromPath } from '../config/wgquick-convert.js';
import { WgQuickError } from '../config/wgquick-parse.js';
import { EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, toUsageError, UsageError, type CliCommand } from './command.js';
import { readAll, type CliIo } from './io.js';

export const IMPORT_HELP = `Usage: tunvpn import FILE [--name IFACE] [--private-key-file PATH]

Converts a wg-quick config (e.g. /etc/wireguard/wg0.conf) into a tunvpn JSON
config, printed on stdout. Carried over: PrivateKey, ListenPort, Address, MTU;
per [Peer]: PublicKey, PresharedKey, Endpoint, AllowedIPs, PersistentKeepalive.
PreUp/PostUp/PreDown/PostDown become interface.hooks, each line run as
["/bin/sh", "-c", LINE] (wg-quick uses bash; %i is kept); stderr says so.
Keys tunvpn has no equivalent for (DNS, Table, SaveConfig, FwMark) are
listed on stderr with their line numbers and left out.
A config without ListenPort gets listenPort 0 (a random port, as with wg-quick).

The interface name is the file name without ".conf" (wg0.conf gives "wg0").
By default the private key is written inline ("privateKey"), so the output is
a secret: umask 077; tunvpn import wg0.conf > /etc/tunvpn/tunvpn.json
Preshared keys, if any, are always inline.

Options:
  --name IFACE              interface name (required when FILE is "-", stdin)
  --private-key-file PATH   write the private key to PATH (mode 0600; PATH must
                            not exist) and reference it as "privateKeyFile"
  -h, --help                show this help

Exit status: 0 converted, 78 malformed input (the message names the line),
FILE not a regular file or larger than 1 MiB, 1 the file could not be read
or the key file written.
`;

const MAX_INPUT = 1 << 20;

async function readInput(file: string, io: CliIo): Promise<string> {
  if (file === '-') {
    const { data, truncated } = await readAll(io.stdin, MAX_INPUT);
    if (truncated) throw new WgQuickError(0, `input larger than ${MAX_INPUT} bytes`);
    return data.toString('utf8');
  }
  // Like the config loader: a FIFO, device or directory is refused before
  // reading (readFile on a FIFO blocked forever), and so is a file over the limit.
  const { data } = await readRegularFile(file, MAX_INPUT);
  return data.toString('utf8');
}

export async function runImport(args: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { name: { type: 'string' }, 'private-key-file': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    throw toUsageError(err, 'import') ?? err;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(IMPORT_HELP);
    return EXIT_OK;
  }
  const file = positionals[0];
  if (file === undefined) throw new UsageError('missing FILE (a wg-quick config)', 'import');
  if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`, 'import');
  if (file === '-' && values.name === undefined) throw new UsageError('--name is required when reading stdin', 'import');
  const name = values.name ?? interfaceNameFromPath(file);
  const label = file === '-' ? '<stdin>' : file;

  let text: string;
  try {
    text = await readInput(file, io);
  } catch (err) {
    if (err instanceof WgQuickError) {
      io.stderr.write(`tunvpn import: ${label}: ${redactKeyMaterial(err.message)}\n`);
      return EXIT_CONFIG;
    }
    if (err instanceof FileReadError) {
      // Not a regular file, or too large: the input is wrong, not the system.
      if (err.errno === undefined) {
        io.stderr.write(`tunvpn import: ${label} ${err.reason}\n`);
        return EXIT_CONFIG;
      }
      io.stderr.write(`tunvpn import: cannot read ${label}: ${err.reason}\n`);
      return EXIT_FAILURE;
    }
    throw err;
  }

  // Messages may quote (part of) a line of the input, which may hold a key:
  // hide whole key-like tokens and any piece of one the input holds.
  const secrets = keyLikeRuns(text);
  const safe = (message: string): string => redactFragments(redactKeyMaterial(message), secrets);
  let conversion;
  try {
    conversion = convertWgQuick(text, name);
  } catch (err) {
    if (err instanceof WgQuickError) {
      io.stderr.write(`tunvpn import: ${label}: ${safe(err.message)}\n`);
      return EXIT_CONFIG;
    }
    throw err;
  }
  const { config, privateKey, notes } = conversion;

  const iface: Record<string, unknown> = { name: config.interface.name };
  const keyFile = values['private-key-file'];
  if (keyFile !== undefined) {
    const abs = resolve(keyFile);
    try {
      // 'wx': never overwrite a key file someone already has.
      await writeFile(abs, `${privateKey}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      io.stderr.write(`tunvpn import: cannot write the private key to ${abs}: ${errnoText(err)}\n`);
      return EXIT_FAILURE;
    }
    iface.privateKeyFile = abs;
  } else {
    iface.privateKey = privateKey;
  }
  iface.listenPort = config.interface.listenPort;
  iface.addresses = config.interface.addresses;
  if (config.interface.mtu !== undefined) iface.mtu = config.interface.mtu;
  if (config.interface.hooks !== undefined) iface.hooks = config.interface.hooks;

  for (const note of notes) io.stderr.write(`${label}: ${safe(note)}\n`);
  if (keyFile === undefined) {
    io.stderr.write('warning: the output contains the private key; keep it secret (umask 077, chmod 600), or use --private-key-file\n');
  } else if (config.peers.some((p) => p.presharedKey !== undefined)) {
    io.stderr.write('warning: the output contains preshared keys; keep it secret (umask 077, chmod 600)\n');
  }
  io.stdout.write(`${JSON.stringify({ interface: iface, peers: config.peers }, null, 2)}\n`);
  return EXIT_OK;
}

export const importCommand: CliCommand = {
  name: 'import',
  summary: 'convert a wg-quick config (wg0.conf) into a tunvpn config on stdout',
  run: runImport,
};
