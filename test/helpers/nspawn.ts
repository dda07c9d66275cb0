/**
 * A real systemd as PID 1 for tests: a minimal Debian rootfs (debootstrap,
 * cached between runs) booted with systemd-nspawn inside a network namespace
 * the test made, driven from the host with nsenter.
 *
 * The cached rootfs is never written to: every boot runs on an overlayfs
 * whose upper layer is a per-run directory, so each test starts from the same
 * pristine system and a crashed run cannot poison the cache.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { run, sleep, type Netns } from './netns.js';

export const NSPAWN_CACHE_DIR = process.env.TUNVPN_NSPAWN_CACHE ?? '/var/cache/tunvpn-test';
const RUN_DIR_PARENT = '/var/tmp';
const RUN_DIR_PREFIX = 'tunvpn-nspawn-';
const MARKER = '.tunvpn-rootfs-complete';

export interface RootfsSpec {
  suite: string;
  /**
   * systemd as init, dbus for systemctl, iproute2 for the daemon's `ip`
   * calls, and the README's prerequisites for installing tunvpn (a C
   * compiler and python3 for node-gyp).
   */
  packages: readonly string[];
}

export const BOOKWORM: RootfsSpec = {
  suite: 'bookworm',
  // wireguard-tools: `wg show` against the service, as root, as the README
  // says. wireguard-go: a real root daemon whose socket shares
  // /run/wireguard with ours, to prove the units leave it alone.
  packages: ['systemd', 'systemd-sysv', 'dbus', 'iproute2', 'build-essential', 'python3', 'wireguard-tools', 'wireguard-go'],
};

export interface Rootfs {
  path: string;
  /** True when this call ran debootstrap (no valid cache). */
  built: boolean;
  ms: number;
}

/**
 * The Debian mirror this machine's apt uses for `suite` (deb822 or one-line
 * sources), so debootstrap works wherever apt does.
 */
export function debianMirror(suite: string): string {
  if (process.env.TUNVPN_DEBIAN_MIRROR) return process.env.TUNVPN_DEBIAN_MIRROR;
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d')) files.push(join('/etc/apt/sources.list.d', f));
  } catch {
    /* no directory */
  }
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const field = (name: string): string[] => (new RegExp(`^${name}:\\s*(.*)$`, 'mi').exec(stanza)?.[1] ?? '').trim().split(/\s+/).filter(Boolean);
        if (!field('Types').includes('deb') || !field('Suites').includes(suite) || !field('Components').includes('main')) continue;
        const uri = field('URIs')[0];
        if (uri) return uri;
      }
    } else {
      for (const line of text.split('\n')) {
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line.trim());
        if (m && m[2] === suite && m[3].split(/\s+/).includes('main')) return m[1];
      }
    }
  }
  return 'http://deb.debian.org/debian';
}

function markerText(spec: RootfsSpec): string {
  return JSON.stringify({ suite: spec.suite, packages: [...spec.packages].sort() }) + '\n';
}

function validRootfs(path: string, spec: RootfsSpec): boolean {
  try {
    return readFileSync(join(path, MARKER), 'utf8') === markerText(spec) && existsSync(join(path, 'usr', 'lib', 'systemd', 'systemd'));
  } catch {
    return false;
  }
}

/**
 * Returns the cached rootfs for `spec`, building it first when the cache is
 * missing, incomplete (no marker: an interrupted build) or made for another
 * package list. Builds into a private directory and renames it into place,
 * so concurrent runs never see a half-built tree.
 */
export async function ensureRootfs(spec: RootfsSpec = BOOKWORM, log: (msg: string) => void = () => undefined): Promise<Rootfs> {
  const t0 = Date.now();
  // The package list is part of the name: a checkout with another list
  // (an older branch, say) keeps its own tree instead of rebuilding ours.
  const specHash = createHash('sha256').update(markerText(spec)).digest('hex').slice(0, 8);
  const path = join(NSPAWN_CACHE_DIR, `rootfs-${spec.suite}-${specHash}`);
  if (validRootfs(path, spec)) return { path, built: false, ms: Date.now() - t0 };
  await mkdir(NSPAWN_CACHE_DIR, { recursive: true });
  const staging = `${path}.build-${process.pid}-${randomBytes(3).toString('hex')}`;
  const mirror = debianMirror(spec.suite);
  log(`building ${path} with debootstrap from ${mirror} (cached for later runs)`);
  try {
    await run('debootstrap', ['--variant=minbase', `--include=${spec.packages.join(',')}`, spec.suite, staging, mirror], {
      timeoutMs: 15 * 60_000,
    });
    // The .debs are only needed once; dropping them halves the cache.
    await run('sh', ['-c', 'rm -f "$1"/var/cache/apt/archives/*.deb', 'sh', staging]);
    await writeFile(join(staging, MARKER), markerText(spec));
    if (existsSync(path) && !validRootfs(path, spec)) await rm(path, { recursive: true, force: true });
    try {
      await rename(staging, path);
    } catch (err) {
      // Another run finished first: use its tree.
      if (!validRootfs(path, spec)) throw err;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  if (!validRootfs(path, spec)) throw new Error(`rootfs ${path} is not valid after building it`);
  return { path, built: true, ms: Date.now() - t0 };
}

/** Where this host's Node.js lives, to be bind-mounted into the container. */
export interface HostNode {
  /** The node binary (realpath). */
  node: string;
  /** npm's package directory, e.g. /usr/lib/node_modules/npm. */
  npmDir: string;
  /** The prefix whose include/node holds the headers node-gyp builds against. */
  headersPrefix: string | undefined;
  /** The npm cache that `npm ci` filled, for offline installs. */
  npmCache: string;
}

export function hostNode(): HostNode {
  const node = realpathSync(process.execPath);
  const globalRoot = execFileSync('npm', ['root', '-g'], { encoding: 'utf8' }).trim();
  const npmDir = realpathSync(join(globalRoot, 'npm'));
  const prefix = dirname(dirname(node));
  const headersPrefix = existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? prefix : undefined;
  const npmCache = execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).trim();
  return { node, npmDir, headersPrefix, npmCache };
}

export interface ExecOptions {
  /** Written to the command's stdin. */
  input?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

export interface ContainerResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export class ContainerCommandError extends Error {
  readonly result: ContainerResult;
  constructor(what: string, result: ContainerResult) {
    super(`${what} exited ${String(result.code)}\nstdout: ${result.stdout.slice(-3000)}\nstderr: ${result.stderr.slice(-3000)}`);
    this.name = 'ContainerCommandError';
    this.result = result;
  }
}

export interface BootOptions {
  rootfs: string;
  /** The container joins this namespace (its veths are already in it). */
  netns: Netns;
  /** Extra `--bind-ro=SRC:DST` pairs. */
  bindRo?: readonly (readonly [string, string])[];
  node?: HostNode;
  bootTimeoutMs?: number;
}

const live = new Set<NspawnContainer>();

/** Last resort on exit: kill containers and unmount their overlays. */
function destroyAllContainers(): void {
  for (const c of live) c.destroySync();
}
process.once('exit', destroyAllContainers);

const CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A booted container: systemd is PID 1 inside, nspawn is our child. */
export class NspawnContainer {
  readonly machine: string;
  /** The network namespace the container lives in. */
  readonly netns: Netns;
  /** The overlay's merged directory: the container's / seen from the host. */
  readonly root: string;
  /** PID (host's view) of the container's systemd. */
  readonly leader: number;
  readonly console: string[];
  private readonly runDir: string;
  private readonly nspawn: ChildProcess;
  private readonly exited: Promise<void>;
  private destroyed = false;

  private constructor(machine: string, netns: Netns, runDir: string, nspawn: ChildProcess, leader: number, consoleLines: string[], exited: Promise<void>) {
    this.machine = machine;
    this.netns = netns;
    this.runDir = runDir;
    this.root = join(runDir, 'root');
    this.nspawn = nspawn;
    this.leader = leader;
    this.console = consoleLines;
    this.exited = exited;
  }

  /**
   * Mounts an overlay over `rootfs`, makes the host's Node.js available in
   * it (binary, npm, headers, npm cache, all read-only) and boots it until
   * `systemctl is-system-running --wait` answers.
   */
  static async boot(opts: BootOptions): Promise<NspawnContainer> {
    await cleanStaleRuns();
    const runDir = await mkdtemp(join(RUN_DIR_PARENT, `${RUN_DIR_PREFIX}${process.pid}-`));
    const root = join(runDir, 'root');
    for (const d of ['upper', 'work', 'root']) await mkdir(join(runDir, d));
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${opts.rootfs},upperdir=${join(runDir, 'upper')},workdir=${join(runDir, 'work')}`, root]);
    const machine = `tunvpn-${process.pid}-${randomBytes(2).toString('hex')}`;
    let nspawn: ChildProcess | undefined;
    try {
      const binds: [string, string][] = [];
      const overlays: [string, string][] = [];
      const node = opts.node;
      if (node) {
        binds.push([node.node, '/usr/bin/node'], [node.npmDir, '/usr/lib/node_modules/npm']);
        // npm writes into its cache even offline; a throwaway overlay keeps the host's intact.
        overlays.push([node.npmCache, '/root/.npm']);
        if (node.headersPrefix) binds.push([join(node.headersPrefix, 'include', 'node'), '/usr/include/node']);
        // What a Node.js package would have put there besides the binary.
        for (const tool of ['npm', 'npx']) await symlink(`../lib/node_modules/npm/bin/${tool}-cli.js`, join(root, 'usr', 'bin', tool));
      }
      for (const b of opts.bindRo ?? []) binds.push([b[0], b[1]]);
      const args = [
        '--quiet',
        '-D',
        root,
        `--machine=${machine}`,
        '--register=no',
        '--keep-unit',
        '-b',
        `--network-namespace-path=/run/netns/${opts.netns.name}`,
        '--capability=CAP_NET_ADMIN',
        ...binds.map(([src, dst]) => `--bind-ro=${src}:${dst}`),
        ...overlays.map(([src, dst]) => `--overlay=${src}::${dst}`),
      ];
      nspawn = spawn('systemd-nspawn', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SYSTEMD_COLORS: '0' } });
      const child = nspawn;
      const lines: string[] = [];
      const collect = (chunk: Buffer): void => {
        for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(l);
      };
      child.stdout?.on('data', collect);
      child.stderr?.on('data', collect);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const container = new NspawnContainer(machine, opts.netns, runDir, child, await findLeader(child, lines, opts.bootTimeoutMs ?? 30_000), lines, exited);
      live.add(container);
      const state = await container.waitBooted(opts.bootTimeoutMs ?? 30_000).catch((e: unknown) => {
        throw new Error(`container did not boot: ${String(e)}\nconsole:\n${lines.slice(-40).join('\n')}`);
      });
      // "degraded" (a unit irrelevant to us failed) is still a booted system.
      if (!/^(running|degraded)$/.test(state.stdout.trim())) {
        throw new Error(`container state ${state.stdout.trim()}\nconsole:\n${lines.slice(-40).join('\n')}`);
      }
      // nspawn gives the container its own copy of /dev/net/tun with the
      // host's mode. On Debian udev makes it 0666 (50-udev-default.rules);
      // some hosts, this test machine among them, have 0600, under which
      // the unit's unprivileged user could not open it. The container runs
      // no udev, so do what it would; the host's node is not touched.
      await container.exec(['chmod', '0666', '/dev/net/tun']);
      return container;
    } catch (err) {
      nspawn?.kill('SIGKILL');
      await run('umount', ['-l', root]).catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * `systemctl is-system-running --wait`, retried while systemd has not yet
   * opened its private bus socket (the leader exists before it does): then
   * systemctl prints nothing, or "offline" (seen on a loaded machine).
   */
  private async waitBooted(timeoutMs: number): Promise<ContainerResult> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.execAllowFail(['systemctl', 'is-system-running', '--wait'], { timeoutMs });
      if (!['', 'offline'].includes(r.stdout.trim()) || Date.now() > deadline) return r;
      if (!this.running) throw new Error('systemd-nspawn exited during boot');
      await sleep(100);
    }
  }

  /** Runs argv inside every namespace of the container, as root, with a clean environment. */
  async exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ContainerResult> {
    const result = await this.execAllowFail(argv, opts);
    if (result.code !== 0) throw new ContainerCommandError(argv.join(' '), result);
    return result;
  }

  /** Like exec, but a non-zero exit is a result, not an error. */
  execAllowFail(argv: readonly string[], opts: ExecOptions = {}): Promise<ContainerResult> {
    const env = Object.entries({ PATH: CONTAINER_PATH, HOME: '/root', LANG: 'C.UTF-8', SYSTEMD_PAGER: '', ...opts.env }).map(([k, v]) => `${k}=${v}`);
    const input = opts.input;
    const child = spawn('nsenter', ['-t', String(this.leader), '-a', 'env', '-i', ...env, ...argv], {
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    return new Promise((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${argv.join(' ')}: no exit within ${opts.timeoutMs ?? 30_000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
      }, opts.timeoutMs ?? 30_000);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
      if (input !== undefined && child.stdin) {
        // A command that exits without reading its input is its own failure, reported by its exit code.
        child.stdin.on('error', () => undefined);
        child.stdin.end(input);
      }
    });
  }

  /** A bash script inside the container (errexit, pipefail). */
  sh(script: string, opts: ExecOptions = {}): Promise<ContainerResult> {
    // --norc: stdin is a socket, which makes Debian's bash source bashrc as
    // for an rsh login.
    return this.exec(['bash', '--norc', '-c', `set -euo pipefail\n${script}`], opts);
  }

  /** `systemctl show -p NAME --value UNIT` */
  async property(unit: string, name: string): Promise<string> {
    return (await this.exec(['systemctl', 'show', '-p', name, '--value', unit])).stdout.trim();
  }

  /**
   * Powers the container off (systemctl poweroff, then SIGKILL of nspawn if
   * it hangs), unmounts the overlay and removes the run directory.
   * Idempotent; never throws.
   */
  async destroy(timeoutMs = 20_000): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.nspawn.exitCode === null && this.nspawn.signalCode === null) {
      await this.execAllowFail(['systemctl', 'poweroff', '--no-block'], { timeoutMs: 5_000 }).catch(() => undefined);
      const timer = setTimeout(() => this.nspawn.kill('SIGKILL'), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    live.delete(this);
    await unmountAndRemove(this.runDir);
    // nspawn removes its propagation directory on a clean exit only.
    await rm(join('/run/systemd/nspawn/propagate', this.machine), { recursive: true, force: true }).catch(() => undefined);
  }

  /** For process exit, when nothing can be awaited. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.nspawn.kill('SIGKILL');
    try {
      execFileSync('umount', ['-l', this.root], { stdio: 'ignore' });
    } catch {
      /* not mounted */
    }
    try {
      execFileSync('rm', ['-rf', '--one-file-system', this.runDir, join('/run/systemd/nspawn/propagate', this.machine)], { stdio: 'ignore' });
    } catch {
      /* best effort */
    }
  }

  get running(): boolean {
    return this.nspawn.exitCode === null && this.nspawn.signalCode === null;
  }
}

/** The container's init is nspawn's child once it has exec'd systemd. */
async function findLeader(nspawn: ChildProcess, lines: string[], timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  const parent = nspawn.pid;
  if (parent === undefined) throw new Error('systemd-nspawn did not start');
  for (;;) {
    for (const pid of childrenOf(parent)) {
      try {
        if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'systemd') return pid;
      } catch {
        /* gone */
      }
    }
    if (nspawn.exitCode !== null || nspawn.signalCode !== null) throw new Error(`systemd-nspawn exited ${String(nspawn.exitCode)}:\n${lines.join('\n')}`);
    if (Date.now() > deadline) throw new Error(`no systemd under systemd-nspawn within ${timeoutMs} ms:\n${lines.join('\n')}`);
    await sleep(50);
  }
}

function childrenOf(pid: number): number[] {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
    return text.split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function unmountAndRemove(runDir: string): Promise<void> {
  const root = join(runDir, 'root');
  for (let i = 0; i < 20; i++) {
    try {
      await run('umount', [root]);
      break;
    } catch {
      if (!(await mounted(root))) break;
      await sleep(100);
    }
  }
  if (await mounted(root)) await run('umount', ['-l', root]).catch(() => undefined);
  // --one-file-system: never descend into a mount that is somehow still there.
  await run('rm', ['-rf', '--one-file-system', runDir]).catch(() => undefined);
}

async function mounted(path: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  return mounts.split('\n').some((l) => l.split(' ')[4] === path);
}

/** Run directories of test processes that died without cleaning up. */
async function cleanStaleRuns(): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(RUN_DIR_PARENT).filter((n) => n.startsWith(RUN_DIR_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(name.slice(RUN_DIR_PREFIX.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || existsSync(`/proc/${pid}`)) continue;
    await unmountAndRemove(join(RUN_DIR_PARENT, name));
  }
}
