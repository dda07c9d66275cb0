/**
 * Integration tests run the compiled daemon (dist/) in namespaces, so build
 * it from the current sources before any test starts. A type error still
 * emits JavaScript (tsc's default): locally it is printed and the tests run
 * (work in progress on one file need not stop the others); with CI=true it
 * fails the run, so CI never tests a tree that does not type-check
 * (.ci/run also runs `npm run typecheck`, which covers the tests too).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export default function setup(): void {
  const root = join(import.meta.dirname, '..');
  const addons = ['tunvpn_tun.node', 'tunvpn_udp.node'];
  if (existsSync(join(root, 'binding.gyp')) && !addons.every((a) => existsSync(join(root, 'build', 'Release', a)))) {
    execFileSync('npx', ['node-gyp', 'rebuild'], { cwd: root, stdio: 'inherit' });
  }
  try {
    execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'pipe' });
  } catch (err) {
    const out = String((err as { stdout?: Buffer }).stdout ?? '');
    if (process.env.CI === 'true' || process.env.CI === '1')
      throw new Error(`tsc -p tsconfig.json reported errors (CI=${process.env.CI}):\n${out.slice(0, 4000)}`);
    console.warn(`tsc reported errors (JavaScript was emitted anyway):\n${out.slice(0, 4000)}`);
  }
}
