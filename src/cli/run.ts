/**
 * `tunvpn run`: starts the daemon in the foreground (systemd runs it so),
 * wires signals: HUP reloads, TERM and INT stop cleanly and exit 0.
 */
import { parseArgs } from 'node:util';
import { loadConfigMemo, resolveConfigPath, ConfigError } from '../config/index.js';
import { ControlSocketActivationError, inheritedControlSocket } from '../control/socket-activation.js';
import { Daemon } from '../daemon.js';
import { createLogger } from '../log.js';
import type { CliIo } from './io.js';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export const RUN_HELP = `Usage: tunvpn run [--config FILE] [--log-level LEVEL]

Runs the tunvpn daemon in the foreground: creates the interface, its
addresses and routes, and tunnels to the configured peers.

Options:
  -c, --config FILE      config file (default: $TUNVPN_CONFIG, else /etc/tunvpn/tunvpn.json)
  -l, --log-level LEVEL  trace|debug|info|warn|error|fatal|silent (overrides log.level)
  -h, --help             show this help

Signals: SIGHUP re-reads the config (an invalid one is rejected and the
running one kept); SIGTERM and SIGINT remove the interface and exit 0.
`;

export async function runCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', short: 'c' },
      'log-level': { type: 'string', short: 'l' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    io.stdout.write(RUN_HELP);
    return 0;
  }
  const level = values['log-level'];
  if (level !== undefined && !LEVELS.includes(level)) {
    io.stderr.write(`tunvpn run: --log-level must be one of ${LEVELS.join(', ')}, not "${level}"\n`);
    return 2;
  }
  const configPath = resolveConfigPath({ config: values.config }, process.env);
  let config;
  let configMemo;
  try {
    // With its memo, so that the daemon's first reload checks only the peers that changed.
    ({ config, memo: configMemo } = await loadConfigMemo(configPath));
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr.write(`tunvpn: ${err.message}\n`);
      return 78;
    }
    throw err;
  }
  // Under tunvpn.socket / tunvpn@.socket systemd made the control socket;
  // checked before anything is created, since a wrong one cannot be fixed by a restart.
  let controlSocketFd: number | undefined;
  try {
    controlSocketFd = inheritedControlSocket(config.interface.name)?.fd;
  } catch (err) {
    if (err instanceof ControlSocketActivationError) {
      io.stderr.write(`tunvpn: cannot start: ${err.message}\n`);
      return 78;
    }
    throw err;
  }
  const log = createLogger({ level: level ?? config.log.level });
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({
      config,
      configPath,
      configMemo,
      logger: log,
      controlSocketFd,
      onShutdownRequest: () => process.kill(process.pid, 'SIGTERM'),
    });
  } catch (err) {
    io.stderr.write(`tunvpn: cannot start: ${describeStartError(err, config.interface.name)}\n`);
    return (err as { code?: string }).code === 'CONFIG_INVALID' ? 78 : 1;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'stopping');
      daemon.stop().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err: String(err) }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      log.info('SIGHUP: reloading configuration');
      // reload() logs its own outcome ("configuration reloaded" or "reload
      // rejected: ..."); anything it could not log must not vanish either.
      daemon.reload().catch((err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, 'reload failed'));
    });
    process.on('SIGUSR1', () => {
      log.info({ status: daemon.status() }, 'status');
    });
  });
}

/**
 * One clear line for the start-up failures people actually hit, saying what
 * to do about them; anything else keeps its own message and code.
 */
export function describeStartError(err: unknown, ifname: string): string {
  const e = err as Error & { code?: string };
  switch (e.code) {
    case 'EACCES':
      // open() refused by the node's mode, before any capability check.
      if (/\/dev\/net\/tun/.test(e.message)) {
        return `cannot open /dev/net/tun: this user may not (it is normally mode 0666, set by udev; see ls -l /dev/net/tun), or run tunvpn as root (EACCES)`;
      }
      return `not permitted to create the TUN interface ${ifname}: tunvpn needs CAP_NET_ADMIN (run it as root, or as the systemd unit does with AmbientCapabilities=CAP_NET_ADMIN) (${e.code})`;
    case 'EPERM':
      return `not permitted to create the TUN interface ${ifname}: tunvpn needs CAP_NET_ADMIN (run it as root, or as the systemd unit does with AmbientCapabilities=CAP_NET_ADMIN) (${e.code})`;
    case 'ENOENT':
    case 'ENODEV':
    case 'ENOTTY':
      return `no usable /dev/net/tun: load the tun kernel module (modprobe tun) or give the container the device (${e.code})`;
    case 'EBUSY':
      return `interface ${ifname} is already in use, by another tunvpn or WireGuard instance? (EBUSY)`;
    default: {
      const code = e.code && !e.message.includes(e.code) ? ` (${e.code})` : '';
      return `${e.message}${code}`;
    }
  }
}
