/**
 * Integration tests run the compiled daemon (dist/) in namespaces, so build
 * it from the current sources before any test starts. A type error still
 * emits JavaScript (tsc's default); it is printed, and `npm ci`/`npm run
 * build` are where type errors fail the build.
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
    console.warn(`tsc reported errors (JavaScript was emitted anyway):\n${out.slice(0, 4000)}`);
  }
}
