/**
 * The one interface-name rule of tunvpn, used by the config (`check` and
 * `run` alike), the `ip` wrapper and the control socket's file name.
 *
 * The kernel's dev_valid_name() accepts 1 to 15 bytes (IFNAMSIZ - 1) other
 * than "." and "..", without '/', ':' or whitespace. tunvpn narrows that to
 * what is safe everywhere the name goes:
 *
 * - only ASCII letters, digits and `_ = + . -`: the set wg-quick accepts
 *   (so every wg-quick interface imports as it is), printable, and needing
 *   no quoting in a file name (`/var/run/wireguard/NAME.sock`), a shell or
 *   a log line. Control characters, non-ASCII (which terminals may render
 *   as look-alikes) and ',', '#', '@' (iproute2 reads "a@b" as a link
 *   reference) are out;
 * - no leading '-': `ip` (and any other tool given the name as an argument)
 *   could take it for an option.
 *
 * Messages never repeat the name itself, only describe the offending
 * character, so they are safe to print whatever the input was.
 */

/** IFNAMSIZ - 1: the kernel's limit, in bytes. */
export const IFNAME_MAX_BYTES = 15;

/** The characters tunvpn accepts in an interface name, for help texts. */
export const IFNAME_CHARSET = 'ASCII letters, digits and _ = + . -';

function isAllowed(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x5f || // _
    c === 0x3d || // =
    c === 0x2b || // +
    c === 0x2e || // .
    c === 0x2d // -
  );
}

function describeChar(c: number): string {
  const u = `U+${c.toString(16).toUpperCase().padStart(4, '0')}`;
  if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return `the control character ${u}`;
  if (c === 0x20 || c === 0xa0 || /\s/.test(String.fromCharCode(c))) return `whitespace (${u})`;
  if (c > 0x7e) return `the non-ASCII character ${u}`;
  return `"${String.fromCharCode(c)}"`;
}

/** Why `name` is not a valid interface name, or undefined when it is one. */
export function interfaceNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return `must be a string, got ${name === null ? 'null' : Array.isArray(name) ? 'an array' : `a ${typeof name}`}`;
  if (name.length === 0) return 'must not be empty';
  const bytes = Buffer.byteLength(name);
  if (bytes > IFNAME_MAX_BYTES) return `is ${bytes} bytes long, longer than ${IFNAME_MAX_BYTES} bytes (the Linux interface name limit)`;
  if (name === '.' || name === '..') return 'must not be "." or ".." (refused by Linux)';
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (isAllowed(c)) continue;
    const what = describeChar(name.codePointAt(i) ?? c);
    if (c === 0x2f || c === 0x3a || what.startsWith('whitespace')) {
      return `is not a valid Linux interface name: ${what} is not allowed (no "/", ":" or whitespace)`;
    }
    return `is not a valid interface name: ${what} is not allowed (only ${IFNAME_CHARSET})`;
  }
  if (name.startsWith('-')) return 'must not start with "-" (it would read as an option to ip)';
  return undefined;
}

export function isValidInterfaceName(name: unknown): name is string {
  return interfaceNameProblem(name) === undefined;
}
