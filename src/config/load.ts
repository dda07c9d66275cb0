import { readFile, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ConfigError } from './errors.js';
import { JsonSyntaxError, parseJson } from './json.js';
import { parseConfig } from './parse.js';
import { errnoText, formatMode } from './secrets.js';
import type { TunvpnConfig } from './types.js';
import { isPlainObject } from './validate.js';

export const DEFAULT_CONFIG_PATH = '/etc/tunvpn/tunvpn.json';
export const CONFIG_ENV = 'TUNVPN_CONFIG';

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
 * problem, including an unreadable file or a JSON syntax error (with line
 * and column).
 */
export async function loadConfig(path: string): Promise<TunvpnConfig> {
  const abs = resolve(path);
  let text: string;
  let mode: number;
  try {
    text = await readFile(abs, 'utf8');
    mode = (await stat(abs)).mode;
  } catch (err) {
    throw new ConfigError([{ path: '', message: `cannot read config file ${abs}: ${errnoText(err)}` }], abs);
  }
  let raw: unknown;
  try {
    raw = parseJson(text);
  } catch (err) {
    if (err instanceof JsonSyntaxError) throw new ConfigError([{ path: '', message: err.message }], abs);
    throw err;
  }
  const cfg = await parseConfig(raw, { baseDir: dirname(abs), path: abs });
  // Legal (wg-quick files often hold keys inline) but worth saying once.
  if ((mode & 0o077) !== 0 && hasInlineSecret(raw)) {
    cfg.warnings.push(
      `${abs} holds a key inline and has mode ${formatMode(mode)} (group or others can access it); chmod 600 it or use privateKeyFile/presharedKeyFile`,
    );
  }
  return cfg;
}
