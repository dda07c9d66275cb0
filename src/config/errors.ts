import { TunvpnError } from '../errors.js';
import { escapeAll, redactKeyMaterial } from './redact.js';

export interface ConfigIssue {
  /** Where in the config, e.g. "peers[1].allowedIPs[0]"; "" for the file as a whole. */
  path: string;
  message: string;
}

/** Anything issues can be reported to: an array, or an IssueList. */
export interface IssueSink {
  push(issue: ConfigIssue): void;
}

/**
 * At most this many issues (and warnings) are kept and printed; the rest
 * are counted. A 16 MiB config of 4 million bad entries otherwise printed
 * 280 MB of errors and needed 3.5 GB to collect them.
 */
export const MAX_REPORTED_ISSUES = 100;

/** Collects issues, keeping the first MAX_REPORTED_ISSUES and counting the others. */
export class IssueList implements IssueSink {
  readonly items: ConfigIssue[] = [];
  omitted = 0;

  push(issue: ConfigIssue): void {
    if (this.items.length < MAX_REPORTED_ISSUES) this.items.push(issue);
    else this.omitted++;
  }

  get count(): number {
    return this.items.length + this.omitted;
  }
}

/** Collects warning lines with the same cap; `lines()` ends with a count of those left out. */
export class WarningList {
  private readonly kept: string[] = [];
  private omitted = 0;

  push(warning: string): void {
    if (this.kept.length < MAX_REPORTED_ISSUES) this.kept.push(warning);
    else this.omitted++;
  }

  /** Warnings pushed so far, kept or not. */
  get count(): number {
    return this.kept.length + this.omitted;
  }

  /** The kept warnings, sanitized (they reach logs and terminals), and a count of the rest. */
  lines(): string[] {
    const out = this.kept.map(sanitize);
    if (this.omitted > 0) out.push(`... and ${this.omitted} more warnings not shown (the first ${MAX_REPORTED_ISSUES} are)`);
    return out;
  }
}

/**
 * One line of text that may quote a config, made safe to show: key-like
 * runs replaced (the last line of defence behind the field-specific rules,
 * see redact.ts) and control characters escaped, newline included (one
 * issue, one line: a newline in a value cannot forge another line).
 */
export function sanitize(text: string): string {
  return escapeAll(redactKeyMaterial(text));
}

export function formatIssue(issue: ConfigIssue): string {
  return issue.path ? `${issue.path}: ${issue.message}` : issue.message;
}

/**
 * Every problem found in a configuration, all at once (up to
 * MAX_REPORTED_ISSUES, then a count). The message is a header line followed
 * by one line per issue; no line contains a secret or a control character,
 * and neither do `issues` (the daemon logs them).
 */
export class ConfigError extends TunvpnError {
  readonly issues: ConfigIssue[];
  readonly file: string | undefined;
  /** Issues found but not kept. */
  readonly omitted: number;

  constructor(issues: ConfigIssue[], file?: string, omitted = 0) {
    const kept = issues.slice(0, MAX_REPORTED_ISSUES).map((i) => ({ path: sanitize(i.path), message: sanitize(i.message) }));
    const left = omitted + issues.length - kept.length;
    const total = kept.length + left;
    const where = file ? ` in ${escapeAll(file)}` : '';
    const count = total === 1 ? '1 problem' : `${total} problems`;
    const lines = [`invalid configuration${where} (${count}):`, ...kept.map((i) => `  ${formatIssue(i)}`)];
    if (left > 0) lines.push(`  ... and ${left} more problems not shown (the first ${kept.length} are)`);
    super('CONFIG_INVALID', lines.join('\n'));
    this.issues = kept;
    this.file = file;
    this.omitted = left;
  }
}
