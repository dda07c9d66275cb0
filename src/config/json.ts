/**
 * A strict JSON parser for config files. JSON.parse is not used because its
 * messages quote the text around the error (which may be a key) and it
 * silently keeps the last of duplicate keys. Errors here carry line and
 * column and never quote the input (a duplicate property name is shown
 * only when it cannot be key material, see redact.ts).
 *
 * Nesting is bounded (MAX_JSON_DEPTH): the parser recurses once per level,
 * and about 3,000 levels of "[" overflowed the stack ("Maximum call stack
 * size exceeded", exit 1, no position). A tunvpn config nests 4 levels
 * (root, peers, a peer, its allowedIPs); 64 leaves room for any future
 * section while staying far below the ~3,000 that overflow.
 */
import { quote } from './redact.js';

/** Deepest nesting of arrays and objects accepted; the root object is level 1. */
export const MAX_JSON_DEPTH = 64;

/**
 * Most values (strings, numbers, objects, arrays, literals; property names
 * not counted) in one config. The validation that follows does work per
 * value: 5.6 million empty peers (`[{},{},...]`, 16 MiB) ran for minutes in
 * gigabytes. 10,000 peers take about 100,000 values, one peer with 100,000
 * allowed IPs as many; a 16 MiB file of realistic peers about 600,000.
 */
export const MAX_JSON_VALUES = 1 << 20;

export class JsonSyntaxError extends Error {
  readonly line: number;
  readonly column: number;
  readonly reason: string;

  /** `syntax`: not JSON; `structure`: JSON, but not the shape a config has at all (e.g. an array). */
  constructor(reason: string, line: number, column: number, kind: 'syntax' | 'structure' = 'syntax') {
    super(`${kind === 'syntax' ? 'JSON syntax error at' : 'at'} line ${line}, column ${column}: ${reason}`);
    this.reason = reason;
    this.line = line;
    this.column = column;
  }
}

class Parser {
  private pos = 0;
  private values = 0;

  constructor(
    private readonly text: string,
    private readonly expectObject: boolean,
  ) {}

  parse(): unknown {
    if (this.text.charCodeAt(0) === 0xfeff) this.pos = 1;
    this.ws();
    if (this.pos >= this.text.length) this.fail('the file is empty', this.pos);
    if (this.expectObject && this.text[this.pos] !== '{') this.structureError();
    const value = this.value(0);
    this.ws();
    if (this.pos < this.text.length) this.fail('unexpected text after the end of the JSON value');
    return value;
  }

  /** A well-formed value that is not an object, refused before it is parsed (it could be huge). */
  private structureError(): never {
    const c = this.text[this.pos];
    const got =
      c === '['
        ? 'an array'
        : c === '"'
          ? 'a string'
          : c === 't' || c === 'f'
            ? 'a boolean'
            : c === 'n'
              ? 'null'
              : c === '-' || (c >= '0' && c <= '9')
                ? 'a number'
                : undefined;
    if (got === undefined) this.fail('expected a value (string in double quotes, number, object, array, true, false or null)');
    const { line, column } = this.position(this.pos);
    throw new JsonSyntaxError(`the configuration must be a JSON object ({...}), got ${got}`, line, column, 'structure');
  }

  private position(at: number): { line: number; column: number } {
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < at && i < this.text.length; i++) {
      if (this.text.charCodeAt(i) === 10) {
        line++;
        lineStart = i + 1;
      }
    }
    return { line, column: at - lineStart + 1 };
  }

  private fail(reason: string, at = this.pos): never {
    const { line, column } = this.position(at);
    throw new JsonSyntaxError(reason, line, column);
  }

  private ws(): void {
    for (;;) {
      const c = this.text.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.pos++;
      else return;
    }
  }

  /** A value at `depth` levels of nesting (0 for the root). */
  private value(depth: number): unknown {
    const c = this.text[this.pos];
    if (++this.values > MAX_JSON_VALUES) this.fail(`more than ${MAX_JSON_VALUES} values (the limit for a config file)`);
    if ((c === '{' || c === '[') && depth >= MAX_JSON_DEPTH) {
      this.fail(`nesting deeper than ${MAX_JSON_DEPTH} levels of arrays and objects (a tunvpn config needs 4)`);
    }
    if (c === '{') return this.object(depth + 1);
    if (c === '[') return this.array(depth + 1);
    if (c === '"') return this.string();
    if (c === '-' || (c >= '0' && c <= '9')) return this.number();
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return v;
      }
    }
    if (this.pos >= this.text.length) this.fail('unexpected end of file, expected a value');
    return this.fail('expected a value (string in double quotes, number, object, array, true, false or null)');
  }

  private object(depth: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.pos++;
    this.ws();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.text[this.pos] !== '"') this.fail(this.text[this.pos] === '}' ? 'trailing comma before "}"' : 'expected a property name in double quotes');
      const keyAt = this.pos;
      const key = this.string();
      if (Object.hasOwn(out, key)) this.fail(`duplicate key ${quote(key)}`, keyAt);
      this.ws();
      if (this.text[this.pos] !== ':') this.fail('expected ":" after a property name');
      this.pos++;
      this.ws();
      // defineProperty for "__proto__": it must stay data, not replace the prototype. Every
      // other key is a plain assignment (Object.prototype has no other setter), which is
      // several times cheaper: 10,000 peers are 30,000 properties.
      if (key === '__proto__') Object.defineProperty(out, key, { value: this.value(depth), enumerable: true, writable: true, configurable: true });
      else out[key] = this.value(depth);
      this.ws();
      const c = this.text[this.pos];
      if (c === ',') {
        this.pos++;
        continue;
      }
      if (c === '}') {
        this.pos++;
        return out;
      }
      this.fail(this.pos >= this.text.length ? 'unexpected end of file inside an object' : 'expected "," or "}" after a property value');
    }
  }

  private array(depth: number): unknown[] {
    const out: unknown[] = [];
    this.pos++;
    this.ws();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.text[this.pos] === ']') this.fail('trailing comma before "]"');
      out.push(this.value(depth));
      this.ws();
      const c = this.text[this.pos];
      if (c === ',') {
        this.pos++;
        continue;
      }
      if (c === ']') {
        this.pos++;
        return out;
      }
      this.fail(this.pos >= this.text.length ? 'unexpected end of file inside an array' : 'expected "," or "]" after an array element');
    }
  }

  private string(): string {
    const start = this.pos;
    this.pos++;
    let out = '';
    let chunk = this.pos;
    for (;;) {
      if (this.pos >= this.text.length) this.fail('unterminated string', start);
      const c = this.text.charCodeAt(this.pos);
      if (c === 0x22) {
        out += this.text.slice(chunk, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) this.fail('control character (such as a raw newline) inside a string');
      if (c === 0x5c) {
        out += this.text.slice(chunk, this.pos);
        const e = this.text[this.pos + 1];
        const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e !== undefined && Object.hasOwn(simple, e)) {
          out += simple[e];
          this.pos += 2;
        } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(this.text.slice(this.pos + 2, this.pos + 6))) {
          out += String.fromCharCode(parseInt(this.text.slice(this.pos + 2, this.pos + 6), 16));
          this.pos += 6;
        } else {
          this.fail('invalid escape sequence in a string');
        }
        chunk = this.pos;
        continue;
      }
      this.pos++;
    }
  }

  private number(): number {
    const m = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(this.text.slice(this.pos, this.pos + 64));
    if (!m) this.fail('invalid number');
    this.pos += m[0].length;
    return Number(m[0]);
  }
}

/**
 * Parses `text`; with `expectObject`, a root that is not an object is
 * refused with its position.
 *
 * Fast path: JSON.parse, when a scan of the text first shows that the
 * strict parser would give the same value: nesting within MAX_JSON_DEPTH,
 * at most MAX_JSON_VALUES values, no number longer than the strict parser
 * reads, and (counted after the parse) as many properties as the text has
 * names, so no duplicate key was dropped. Anything else, and any text
 * JSON.parse refuses, goes to the strict parser, which gives the value or
 * the error with its line and column as before. A 10,000-peer file (1.3 MB)
 * took the strict parser 18-34 ms; scan, JSON.parse and count take about a
 * third of that, and JSON.parse's strings are flat ones, which every later
 * check reads faster than the strict parser's slices of the whole text.
 */
export function parseJson(text: string, opts: { expectObject?: boolean } = {}): unknown {
  const expectObject = opts.expectObject === true;
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const scan = scanJson(body, expectObject);
  if (scan !== undefined) {
    let value: unknown;
    let parsed = true;
    try {
      value = JSON.parse(body);
    } catch {
      parsed = false;
    }
    if (parsed && countProperties(value) === scan.names) return value;
  }
  return parseJsonStrictly(text, opts);
}

/** The strict parser alone (the reference the fast path must agree with; the tests compare them). */
export function parseJsonStrictly(text: string, opts: { expectObject?: boolean } = {}): unknown {
  return new Parser(text, opts.expectObject === true).parse();
}

/**
 * One pass over text the fast path may take (exported for its test): the number of property names
 * (colons outside strings), or undefined when the strict parser could
 * decide differently (too deep, too many values, a long number, not an
 * object at the root when one is expected). For well-formed JSON the
 * counts are exact; for anything else JSON.parse throws anyway.
 */
export function scanJson(text: string, expectObject: boolean): { names: number } | undefined {
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) i++;
    else break;
  }
  if (expectObject && text.charCodeAt(i) !== 0x7b) return undefined;
  let depth = 0;
  let names = 0;
  // Every value but the root is the first element of its container or follows a comma.
  let values = 1;
  let numberRun = 0;
  for (; i < n; i++) {
    const c = text.charCodeAt(i);
    // Whitespace first: most of a pretty-printed file is indentation. (A control character
    // outside a string is no JSON: JSON.parse refuses it and the strict parser says where.)
    if (c <= 0x20) {
      numberRun = 0;
      continue;
    }
    if (c === 0x22) {
      numberRun = 0;
      // To the closing quote by indexOf (native, much faster than a loop
      // per character over keys and names): a quote is the string's end
      // unless an odd run of backslashes escapes it.
      let q = i;
      for (;;) {
        q = text.indexOf('"', q + 1);
        if (q < 0) break;
        let b = q - 1;
        while (b > i && text.charCodeAt(b) === 0x5c) b--;
        if (((q - 1 - b) & 1) === 0) break;
      }
      // Unterminated: to the end (JSON.parse refuses it).
      i = q < 0 ? n : q;
      continue;
    }
    if ((c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45) {
      // The strict parser reads a number from a 64-character window.
      if (++numberRun >= 64) return undefined;
      continue;
    }
    numberRun = 0;
    if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_JSON_DEPTH) return undefined;
      values++;
    } else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2c) values++;
    else if (c === 0x3a) names++;
  }
  return values <= MAX_JSON_VALUES ? { names } : undefined;
}

/** Own properties of every object in a parsed value (nesting is bounded by the scan). */
function countProperties(v: unknown): number {
  if (typeof v !== 'object' || v === null) return 0;
  let count = 0;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const e: unknown = v[i];
      if (typeof e === 'object' && e !== null) count += countProperties(e);
    }
    return count;
  }
  for (const key in v) {
    count++;
    const e: unknown = (v as Record<string, unknown>)[key];
    if (typeof e === 'object' && e !== null) count += countProperties(e);
  }
  return count;
}
