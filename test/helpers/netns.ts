/**
 * Integration-test side of the test bed: re-exports the namespace helpers
 * of src/testbed/netns.ts and adds prerequisite checks that fail loudly in CI.
 */
import { existsSync } from 'node:fs';
import { describe, it } from 'vitest';

export * from '../../src/testbed/netns.js';

function hasTool(tool: string): boolean {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => existsSync(`${d}/${tool}`));
}

/** Why integration prerequisites are missing, or undefined when all are there. */
export function missingPrerequisites(tools: readonly string[] = []): string | undefined {
  const missing: string[] = [];
  if (process.platform !== 'linux') missing.push('Linux');
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) missing.push('root');
  if (!existsSync('/dev/net/tun')) missing.push('/dev/net/tun');
  for (const tool of ['ip', ...tools]) {
    if (!hasTool(tool)) missing.push(tool);
  }
  return missing.length ? `missing prerequisites: ${missing.join(', ')}` : undefined;
}

export const inCI = process.env.CI === 'true' || process.env.CI === '1';

/**
 * describe() for integration tests. When a prerequisite (root, /dev/net/tun,
 * a tool) is missing: in CI the suite fails loudly with the reason; outside
 * CI it is skipped with the reason printed, never silently.
 */
export function describeIntegration(name: string, tools: readonly string[], fn: () => void): void {
  const missing = missingPrerequisites(tools);
  if (!missing) {
    describe(name, fn);
  } else if (inCI) {
    describe(name, () => {
      it('has its prerequisites', () => {
        throw new Error(`${name}: ${missing} (CI=true: integration tests must run)`);
      });
    });
  } else {
    console.warn(`skipping integration suite "${name}": ${missing}`);
    describe.skip(name, fn);
  }
}
