/**
 * The refusal of a configuration change (docs/apply.md): its own module
 * because both the orchestrator (src/daemon.ts) and the network steps
 * (src/daemon/network.ts) throw it, and network.ts must not import
 * daemon.ts (imports go one way).
 */
import { TunvpnError } from '../errors.js';

/**
 * A configuration change refused before anything that runs changed: the
 * errno for the control socket, the field for the log.
 */
export class ApplyError extends TunvpnError {
  readonly errno: number;
  /** The config path of the field at fault, e.g. "interface.listenPort", "peers[3].allowedIPs[0]". */
  readonly field: string | undefined;

  constructor(errno: number, message: string, field?: string, options?: { cause?: unknown }) {
    super('APPLY_REJECTED', message, options);
    this.errno = errno;
    this.field = field;
  }
}
