/**
 * Base class of every error tunvpn raises on purpose. `code` is stable and
 * machine-readable (tests and callers switch on it); `message` is for people.
 */
export class TunvpnError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}
