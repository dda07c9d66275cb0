/**
 * What text from a config may be shown in a message, and how.
 *
 * "Could be key material" is defined conservatively: any run of 40 or more
 * characters from the base64, base64url and hex alphabets (A-Z a-z 0-9 + /
 * - _ =). A WireGuard key is 44 such characters (64 in hex), so a key
 * pasted anywhere, alone or inside a path, a name or a property name, is
 * always such a run; a path like "/etc/tunvpn/private.key" is not ('.'
 * breaks the run). Values of key-bearing fields (privateKey, presharedKey,
 * publicKey) are never shown at all, whatever they look like; this rule is
 * for everything else. Scanning is a plain loop, not a regular expression:
 * irregexp backtracking on a 50 MB string overflowed the stack.
 */

/** Shortest run of base64/hex-alphabet characters treated as possible key material. */
export const KEY_LIKE_MIN_RUN = 40;

/** Longest value quoted in a message; longer ones are cut, with their length given. */
export const QUOTE_MAX_CHARS = 64;

export const HIDDEN_VALUE = '(value not shown: it looks like a key)';
/** A path step standing for a property whose name could be key material; one token, like every path. */
export const HIDDEN_NAME = '<hidden-key-like-name>';
const HIDDEN_RUN = '(not shown: looks like a key)';

function isKeyAlphabet(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2b || // +
    c === 0x2f || // /
    c === 0x2d || // -
    c === 0x5f || // _
    c === 0x3d // =
  );
}

/** Calls `found(start, end)` for every maximal key-like run; stops when it returns true. */
function scanRuns(text: string, found: (start: number, end: number) => boolean): void {
  let start = -1;
  for (let i = 0; i <= text.length; i++) {
    if (i < text.length && isKeyAlphabet(text.charCodeAt(i))) {
      if (start < 0) start = i;
      continue;
    }
    if (start >= 0 && i - start >= KEY_LIKE_MIN_RUN && found(start, i)) return;
    start = -1;
  }
}

/** Whether `text` holds something that could be a key (see the file comment). */
export function couldBeKeyMaterial(text: string): boolean {
  let hit = false;
  scanRuns(text, () => (hit = true));
  return hit;
}

/** `text` with every key-like run replaced by a placeholder: the last line of defence for messages. */
export function redactKeyMaterial(text: string): string {
  let out = '';
  let last = 0;
  scanRuns(text, (start, end) => {
    out += text.slice(last, start) + HIDDEN_RUN;
    last = end;
    return false;
  });
  return last === 0 ? text : out + text.slice(last);
}

/** Every key-like run in `text` (the tokens of a wg-quick file that may be keys). */
export function keyLikeRuns(text: string): string[] {
  const out: string[] = [];
  scanRuns(text, (start, end) => {
    out.push(text.slice(start, end));
    return false;
  });
  return out;
}

/** Shortest piece of a known secret that redactFragments hides. */
export const FRAGMENT_MIN = 12;

/**
 * `text` with every piece (FRAGMENT_MIN characters or more) of any of
 * `secrets` replaced by a placeholder. For messages that quote a cut-down
 * part of their input (wg-quick's parser shows the first 40 characters of a
 * bad line, which can be 39 characters of a key: too short for
 * redactKeyMaterial, long enough to matter).
 */
export function redactFragments(text: string, secrets: readonly string[]): string {
  if (secrets.length === 0 || text.length < FRAGMENT_MIN) return text;
  const windows = new Set<string>();
  for (const s of secrets) for (let i = 0; i + FRAGMENT_MIN <= s.length; i++) windows.add(s.slice(i, i + FRAGMENT_MIN));
  const hidden = new Uint8Array(text.length);
  for (let i = 0; i + FRAGMENT_MIN <= text.length; i++) {
    if (windows.has(text.slice(i, i + FRAGMENT_MIN))) hidden.fill(1, i, i + FRAGMENT_MIN);
  }
  let out = '';
  for (let i = 0; i < text.length; i++) {
    if (!hidden[i]) out += text[i];
    else if (i === 0 || !hidden[i - 1]) out += HIDDEN_RUN;
  }
  return out;
}

function hex4(c: number): string {
  return `\\u${c.toString(16).padStart(4, '0')}`;
}

/**
 * Characters a terminal may act on instead of showing: C0 controls (except
 * newline and tab), DEL, C1 controls (0x9b is CSI on some terminals), the
 * line and paragraph separators and the bidirectional overrides (which can
 * make a line read differently from what it holds).
 */
export function isUnsafeForDisplay(c: number): boolean {
  if (c < 0x20) return c !== 0x0a && c !== 0x09;
  if (c >= 0x7f && c <= 0x9f) return true;
  return c === 0x061c || c === 0x200e || c === 0x200f || c === 0x2028 || c === 0x2029 || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/**
 * `text` with every character that is unsafe for a terminal written as a
 * JSON-style \uXXXX escape. Newline and tab stay (messages are multi-line);
 * with `allowSgr`, well-formed SGR colour sequences (ESC [ digits;... m) stay
 * too: they can only change colours, not move the cursor, set the window
 * title or make a link. Idempotent: escaped text has nothing left to escape.
 * For the output streams; text from a config goes through escapeAll.
 */
export function escapeControl(text: string, allowSgr = false): string {
  return escapeUnsafe(text, allowSgr, true);
}

/**
 * Like escapeControl, but newline and tab are escaped too: text from a
 * config is one value on one line, and a newline in it could forge a line
 * of output (an invented "  interface.name: OK").
 */
export function escapeAll(text: string): string {
  return escapeUnsafe(text, false, false);
}

function escapeUnsafe(text: string, allowSgr: boolean, keepLayout: boolean): string {
  let out = '';
  let last = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (!isUnsafeForDisplay(c) && !(!keepLayout && (c === 0x0a || c === 0x09))) continue;
    if (allowSgr && c === 0x1b) {
      const end = sgrEnd(text, i);
      if (end > 0) {
        i = end - 1;
        continue;
      }
    }
    out += text.slice(last, i) + hex4(c);
    last = i + 1;
  }
  return last === 0 ? text : out + text.slice(last);
}

/** End (exclusive) of an SGR sequence starting at `at` (ESC), or 0 when it is not one. */
function sgrEnd(text: string, at: number): number {
  if (text.charCodeAt(at + 1) !== 0x5b) return 0; // '['
  // At most 16 parameter characters: real colour sequences are short.
  for (let i = at + 2; i < text.length && i < at + 2 + 16; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x6d) return i + 1; // 'm'
    if (!((c >= 0x30 && c <= 0x39) || c === 0x3b)) return 0; // digits and ';' only
  }
  return 0;
}

/**
 * A value from the config for a message: `"text"` in JSON string syntax with
 * unsafe characters (newline included) escaped and cut at QUOTE_MAX_CHARS,
 * or a placeholder when it could be key material.
 */
export function quote(text: string): string {
  if (couldBeKeyMaterial(text)) return HIDDEN_VALUE;
  if (text.length <= QUOTE_MAX_CHARS) return quoteString(text);
  return `${quoteString(text.slice(0, QUOTE_MAX_CHARS), '...')} (${text.length} characters)`;
}

/** JSON string syntax (so '"' and '\\' are escaped), then every unsafe character escaped. */
function quoteString(text: string, ellipsis = ''): string {
  const json = JSON.stringify(text);
  return escapeAll(ellipsis ? `${json.slice(0, -1)}${ellipsis}"` : json);
}

const PLAIN_NAME = /^[A-Za-z_$][A-Za-z0-9_$-]{0,63}$/;

/**
 * A property name as one step of a field path: `.name` for a plain
 * identifier, `["odd name"]` (escaped, cut) otherwise, or a placeholder when
 * the name could be key material. Keeps paths unambiguous: a name holding
 * "." or "[" cannot pass for a deeper path.
 */
export function pathStep(name: string): string {
  if (couldBeKeyMaterial(name)) return `.${HIDDEN_NAME}`;
  if (PLAIN_NAME.test(name)) return `.${name}`;
  return `[${name.length <= QUOTE_MAX_CHARS ? quoteString(name) : quoteString(name.slice(0, QUOTE_MAX_CHARS), '...')}]`;
}

/** `path` extended by the property `name` ("" is the root). */
export function joinPath(path: string, name: string): string {
  const step = pathStep(name);
  return path === '' && step.startsWith('.') ? step.slice(1) : path + step;
}
