/**
 * The syntax of a wg-quick config (wg-quick(8), wg(8) "CONFIGURATION FILE
 * FORMAT"): INI-like sections [Interface] and [Peer], `Key = Value` lines,
 * `#` comments to the end of the line, keys and section names matched
 * without regard to case. Meaning is given to the entries by the importer.
 */
import { TunvpnError } from '../errors.js';

/** Malformed wg-quick input; `line` is 1-based (0 when about the whole file). */
export class WgQuickError extends TunvpnError {
  readonly line: number;

  constructor(line: number, message: string) {
    super('WGQUICK_INVALID', line > 0 ? `line ${line}: ${message}` : message);
    this.line = line;
  }
}

export interface WgQuickEntry {
  /** As written, for messages. */
  key: string;
  /** Lower-case, for matching. */
  lkey: string;
  value: string;
  line: number;
}

export interface WgQuickSection {
  kind: 'interface' | 'peer';
  /** Line of the [Section] header. */
  line: number;
  entries: WgQuickEntry[];
}

const MAX_LINE = 4096;

export function parseWgQuick(text: string): WgQuickSection[] {
  const sections: WgQuickSection[] = [];
  let current: WgQuickSection | undefined;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const n = i + 1;
    const raw = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    if (raw.length > MAX_LINE) throw new WgQuickError(n, `line longer than ${MAX_LINE} characters`);
    const hash = raw.indexOf('#');
    const line = (hash >= 0 ? raw.slice(0, hash) : raw).trim();
    if (line === '') continue;
    if (line.startsWith('[')) {
      const name = line.replace(/\s+/g, '').toLowerCase();
      if (name === '[interface]') {
        if (sections.some((s) => s.kind === 'interface')) throw new WgQuickError(n, 'a second [Interface] section');
        current = { kind: 'interface', line: n, entries: [] };
      } else if (name === '[peer]') {
        current = { kind: 'peer', line: n, entries: [] };
      } else {
        throw new WgQuickError(n, `unknown section ${JSON.stringify(line.slice(0, 40))} (expected [Interface] or [Peer])`);
      }
      sections.push(current);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw new WgQuickError(n, 'expected "Key = Value"');
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (key === '') throw new WgQuickError(n, 'missing key before "="');
    if (!/^[A-Za-z0-9]+$/.test(key)) throw new WgQuickError(n, `invalid key ${JSON.stringify(key.slice(0, 40))}`);
    if (!current) throw new WgQuickError(n, `${key} outside of any section (expected [Interface] or [Peer] first)`);
    current.entries.push({ key, lkey: key.toLowerCase(), value, line: n });
  }
  return sections;
}
