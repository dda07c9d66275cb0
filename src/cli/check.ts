import { ConfigError, escapeAll, escapeControl, loadConfig, resolveConfigPath, sanitize, summarizeConfig } from '../config/index.js';
import { endpointLoopWarnings } from '../routing.js';
import { EXIT_CONFIG, EXIT_OK, parseCommandArgs, type CliCommand } from './command.js';

export const CHECK_HELP = `Usage: tunvpn check [--config FILE]

Validates a configuration file without touching the system: schema, keys,
key files and their modes, addresses, endpoints, an allowed prefix that
covers a peer's own endpoint (a routing loop without a full tunnel). Prints a one-line summary
and any warnings, and exits 0; or prints every problem found and exits 78.

Options:
  -c, --config FILE  config file (default: $TUNVPN_CONFIG, else /etc/tunvpn/tunvpn.json)
  -h, --help         show this help
`;

export const checkCommand: CliCommand = {
  name: 'check',
  summary: 'validate a config file and print a summary (exit 78 if invalid)',
  async run(args, io) {
    const { values } = parseCommandArgs('check', args, {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      io.stdout.write(CHECK_HELP);
      return EXIT_OK;
    }
    const path = resolveConfigPath({ config: values.config }, io.env ?? process.env);
    try {
      const cfg = await loadConfig(path);
      // The dispatcher's SafeOutput escapes control characters too; doing it
      // here (idempotent) keeps check safe when called with raw streams.
      // Warnings are redacted when made, sanitize() again covers any added later.
      io.stdout.write(`${escapeAll(path)}: OK\n${escapeAll(summarizeConfig(cfg))}\n`);
      for (const w of [...cfg.warnings, ...endpointLoopWarnings(cfg)]) io.stderr.write(`warning: ${sanitize(w)}\n`);
      cfg.interface.privateKey.fill(0);
      for (const p of cfg.peers) p.presharedKey?.fill(0);
      return EXIT_OK;
    } catch (err) {
      if (err instanceof ConfigError) {
        io.stderr.write(`tunvpn: ${escapeControl(err.message)}\n`);
        return EXIT_CONFIG;
      }
      throw err;
    }
  },
};
