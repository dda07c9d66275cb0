import { TunvpnError } from '../errors.js';

export interface ConfigIssue {
  /** Where in the config, e.g. "peers[1].allowedIPs[0]"; "" for the file as a whole. */
  path: string;
  message: string;
}

export function formatIssue(issue: ConfigIssue): string {
  return issue.path ? `${issue.path}: ${issue.message}` : issue.message;
}

/**
 * Every problem found in a configuration, all at once. The message is a
 * header line followed by one line per issue; no line contains a secret.
 */
export class ConfigError extends TunvpnError {
  readonly issues: ConfigIssue[];
  readonly file: string | undefined;

  constructor(issues: ConfigIssue[], file?: string) {
    const where = file ? ` in ${file}` : '';
    const count = issues.length === 1 ? '1 problem' : `${issues.length} problems`;
    super('CONFIG_INVALID', [`invalid configuration${where} (${count}):`, ...issues.map((i) => `  ${formatIssue(i)}`)].join('\n'));
    this.issues = issues;
    this.file = file;
  }
}
