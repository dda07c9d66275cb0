import { dirname, resolve } from 'node:path';
import { ConfigError } from './errors.js';
import { FileReadError, readRegularFile } from './file.js';
import { JsonSyntaxError, parseJson } from './json.js';
import type { ConfigMemo } from './memo.js';
import { type MemoParse, parseConfig, parseConfigMemo } from './parse.js';
import { formatMode } from './secrets.js';
import type { TunvpnConfig } from './types.js';
import { isPlainObject } from './validate.js';

export const DEFAULT_CONFIG_PATH = '/etc/tunvpn/tunvpn.json';
export const CONFIG_ENV = 'TUNVPN_CONFIG';

/**
 * Largest config file accepted, checked (fstat) before reading. A peer
 * takes 200 to 300 bytes, so 16 MiB holds some 60,000 peers, or one peer
 * with 600,000 allowed IPs; parsing the largest accepted file stays within a
 * few hundred MB (docs/decisions.md has the figures). A 50 MB config used
 * 580 MB before the limit.
 */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** `--config`, else $TUNVPN_CONFIG (when not empty), else /etc/tunvpn/tunvpn.json; made absolute. */
export function resolveConfigPath(argv: { config?: string }, env: NodeJS.ProcessEnv): string {
  const fromEnv = env[CONFIG_ENV];
  const chosen = argv.config ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_CONFIG_PATH);
  return resolve(chosen);
}

function hasInlineSecret(raw: unknown): boolean {
  if (!isPlainObject(raw)) return false;
  const iface = raw.interface;
  if (isPlainObject(iface) && typeof iface.privateKey === 'string') return true;
  return Array.isArray(raw.peers) && raw.peers.some((p: unknown) => isPlainObject(p) && typeof p.presharedKey === 'string');
}

/**
 * Reads, parses and validates a config file. Key files are resolved relative
 * to its directory. Throws ConfigError (code CONFIG_INVALID) listing every
 * problem, including an unreadable file, one that is not a regular file
 * (refused before reading: a FIFO would block forever), one larger than
 * MAX_CONFIG_BYTES, or a JSON syntax error (with line and column).
 */
export async function loadConfig(path: string): Promise<TunvpnConfig> {
  return (await loadWith(path, false, undefined)).config;
}

export interface LoadOptions {
  /**
   * The memo an earlier loadConfigMemo of this file returned (the daemon
   * keeps the one of the config it runs): peers unchanged since are not
   * checked again (parse.ts, parseConfigMemo). Consumed by the load.
   */
  memo?: ConfigMemo;
}

/**
 * loadConfig, incremental when given the memo of an earlier load: the
 * same config, warnings and errors as loadConfig, plus the memo for the
 * next load (absent when this config cannot give one) and which way the
 * load went (`incremental`, the number of peers `reused` and `rewalked`).
 */
export async function loadConfigMemo(path: string, opts: LoadOptions = {}): Promise<MemoParse> {
  return loadWith(path, true, opts.memo);
}

async function loadWith(path: string, wantMemo: boolean, memo: ConfigMemo | undefined): Promise<MemoParse> {
  const abs = resolve(path);
  let text: string;
  let mode: number;
  try {
    const { data, stats } = await readRegularFile(abs, MAX_CONFIG_BYTES);
    text = data.toString('utf8');
    mode = stats.mode;
  } catch (err) {
    if (!(err instanceof FileReadError)) throw err;
    const message = err.errno === undefined ? `config file ${abs} ${err.reason}` : `cannot read config file ${abs}: ${err.reason}`;
    throw new ConfigError([{ path: '', message }], abs);
  }
  let raw: unknown;
  try {
    raw = parseJson(text, { expectObject: true });
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new ConfigError([{ path: '', message: err.message }], abs);
    throw err;
  }
  const opts = { baseDir: dirname(abs), path: abs };
  const result = wantMemo
    ? await parseConfigMemo(raw, opts, memo)
    : { config: await parseConfig(raw, opts), memo: undefined, incremental: false, reused: 0, rewalked: 0 };
  const cfg = result.config;
  // Legal (wg-quick files often hold keys inline) but worth saying once.
  if ((mode & 0o077) !== 0 && hasInlineSecret(raw)) {
    cfg.warnings.push(
      `${abs} holds a key inline and has mode ${formatMode(mode)} (group or others can access it); chmod 600 it or use privateKeyFile/presharedKeyFile`,
    );
  }
  return result;
}
