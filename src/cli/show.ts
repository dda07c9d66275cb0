/**
 * `tunvpn show [IFACE] [--json]`: the state of running interfaces, read
 * through their control sockets, laid out like `wg show`.
 */
import { parseArgs } from 'node:util';
import { listInterfaces, uapiGet, UapiNoSuchInterfaceError } from '../control/uapi-client.js';
import { DEFAULT_UAPI_DIR, UapiError, type UapiInterfaceState } from '../control/uapi-types.js';
import { loadCrypto, type CryptoBackend } from '../crypto/index.js';
import { EXIT_FAILURE, EXIT_OK, toUsageError, UsageError, type CliCommand } from './command.js';
import type { CliIo } from './io.js';
import { renderInterface, toShowJson, type ShowJsonInterface } from './show-render.js';

export const SHOW_HELP = `Usage: tunvpn show [IFACE | all] [--json] [--socket-dir DIR]

Shows running interfaces as \`wg show\` does: public key, listening port, and
for each peer its endpoint, allowed IPs, latest handshake, transfer and
keepalive. Without IFACE (or with "all"), every interface that has a control
socket. Colour when stdout is a terminal (NO_COLOR turns it off).

Options:
  --json             print {"IFACE": {...}} instead; public keys in base64,
                     never a private or preshared key
  --socket-dir DIR   where the control sockets are (default ${DEFAULT_UAPI_DIR})
  -h, --help         show this help
`;

interface Shown {
  name: string;
  state: UapiInterfaceState;
  publicKey?: Uint8Array;
}

function useColour(io: CliIo): boolean {
  const env = io.env ?? process.env;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  return (io.stdout as { isTTY?: boolean }).isTTY === true;
}

async function derivePublicKey(state: UapiInterfaceState, crypto: () => Promise<CryptoBackend>): Promise<Uint8Array | undefined> {
  if (!state.privateKey) return undefined;
  const backend = await crypto();
  const pub = backend.publicKey(state.privateKey);
  backend.memzero(state.privateKey);
  return pub;
}

export async function runShow(args: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { json: { type: 'boolean' }, 'socket-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    throw toUsageError(err, 'show') ?? err;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(SHOW_HELP);
    return EXIT_OK;
  }
  if (positionals.length > 1) throw new UsageError(`unexpected argument '${positionals[1]}'`, 'show');
  const dir = values['socket-dir'] ?? DEFAULT_UAPI_DIR;
  const only = positionals[0] !== undefined && positionals[0] !== 'all' ? positionals[0] : undefined;

  let backend: Promise<CryptoBackend> | undefined;
  const crypto = () => (backend ??= loadCrypto('auto'));
  const shown: Shown[] = [];
  if (only !== undefined) {
    try {
      const state = await uapiGet(only, dir);
      shown.push({ name: only, state, publicKey: await derivePublicKey(state, crypto) });
    } catch (err) {
      if (err instanceof UapiNoSuchInterfaceError || err instanceof UapiError) {
        io.stderr.write(`tunvpn show: ${err.message}\n`);
        return EXIT_FAILURE;
      }
      throw err;
    }
  } else {
    let failed = false;
    for (const name of listInterfaces(dir)) {
      try {
        const state = await uapiGet(name, dir);
        shown.push({ name, state, publicKey: await derivePublicKey(state, crypto) });
      } catch (err) {
        // A socket left behind by a dead process is not an interface (wg skips it too).
        if (err instanceof UapiNoSuchInterfaceError) continue;
        if (err instanceof UapiError) {
          io.stderr.write(`tunvpn show: ${err.message}\n`);
          failed = true;
          continue;
        }
        throw err;
      }
    }
    if (failed && shown.length === 0) return EXIT_FAILURE;
  }

  const nowMs = Date.now();
  if (values.json) {
    const obj: Record<string, ShowJsonInterface> = {};
    for (const s of shown) obj[s.name] = toShowJson(s.state, s.publicKey, nowMs);
    io.stdout.write(`${JSON.stringify(obj, null, 2)}\n`);
  } else {
    const colour = useColour(io);
    io.stdout.write(shown.map((s) => renderInterface(s.name, s.state, { colour, nowMs, publicKey: s.publicKey })).join('\n'));
  }
  return EXIT_OK;
}

export const showCommand: CliCommand = {
  name: 'show',
  summary: 'show running interfaces and peers, like `wg show` (--json for scripts)',
  run: runShow,
};
