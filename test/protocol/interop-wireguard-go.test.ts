/**
 * Interop with a real wireguard-go: the proof that the protocol core speaks
 * WireGuard. Namespace A runs wireguard-go (configured with wg and ip);
 * namespace B runs test/protocol/fixtures/wg-harness.ts, which drives our
 * WireGuardDevice over a plain UDP socket (no TUN) and answers/sends ICMP
 * echoes built by hand. Each case uses fresh keys for the harness and a
 * fresh wireguard-go peer, so neither side has a session and the case
 * decides who initiates.
 *
 * The harness runs as a child process inside namespace B, so it must be
 * JavaScript: beforeAll compiles the harness and the sources it imports with
 * tsc into a temporary directory (only that import graph, so others'
 * in-progress files cannot break it).
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Netns, describeIntegration, linkNamespaces, pingUntil, sleep, uniqueSuffix } from '../helpers/netns.js';

const ROOT = join(import.meta.dirname, '..', '..');
const UNDERLAY_A = '10.77.0.1';
const UNDERLAY_B = '10.77.0.2';
const TUN_A = '10.99.0.1';
const TUN_B = '10.99.0.2';
const WG_PORT = 51820;

interface Harness {
  child: ChildProcess;
  events: Array<Record<string, unknown>>;
  send(cmd: Record<string, unknown>): void;
  waitFor(pred: (e: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>>;
}

describeIntegration('protocol interop with wireguard-go', ['wireguard-go', 'wg'], () => {
  let buildDir = '';
  let nsA: Netns | undefined;
  let nsB: Netns | undefined;
  let ifname = '';
  let caseNo = 0;
  let wgGo: ChildProcess | undefined;

  beforeAll(async () => {
    buildDir = mkdtempSync(join(tmpdir(), 'tunvpn-interop-'));
    try {
      execFileSync(
        'npx',
        [
          'tsc',
          '--ignoreConfig',
          '--outDir',
          buildDir,
          '--rootDir',
          ROOT,
          '--module',
          'nodenext',
          '--moduleResolution',
          'nodenext',
          '--target',
          'es2022',
          '--lib',
          'es2022',
          '--strict',
          '--skipLibCheck',
          '--types',
          'node',
          join(ROOT, 'test/protocol/fixtures/wg-harness.ts'),
        ],
        { cwd: ROOT, stdio: 'pipe' },
      );
    } catch (err) {
      // Type errors (possibly in others' in-progress files) still emit JavaScript;
      // the harness's existence below is what matters.
      console.warn(`tsc: ${String((err as { stdout?: Buffer }).stdout ?? err).slice(0, 2000)}`);
    }
    if (!existsSync(join(buildDir, 'test/protocol/fixtures/wg-harness.js'))) throw new Error('harness did not compile');
    writeFileSync(join(buildDir, 'package.json'), '{"type":"module"}\n');
    symlinkSync(join(ROOT, 'node_modules'), join(buildDir, 'node_modules'));

    nsA = await Netns.create('pia');
    nsB = await Netns.create('pib');
    await linkNamespaces(nsA, nsB, `${UNDERLAY_A}/24`, `${UNDERLAY_B}/24`);
    ifname = `wgi${uniqueSuffix()}`.slice(0, 15);
    wgGo = nsA.spawn('wireguard-go', ['-f', ifname], {
      env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', LOG_LEVEL: 'error' },
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await nsA.exec('wg', ['show', ifname]);
        break;
      } catch {
        if (Date.now() > deadline) throw new Error('wireguard-go did not come up');
        await sleep(50);
      }
    }
    const key = (await nsA.exec('wg', ['genkey'])).stdout.trim();
    const keyFile = join(buildDir, 'wg-go.key');
    writeFileSync(keyFile, `${key}\n`, { mode: 0o600 });
    await nsA.exec('wg', ['set', ifname, 'private-key', keyFile, 'listen-port', String(WG_PORT)]);
    await nsA.exec('ip', ['addr', 'add', `${TUN_A}/24`, 'dev', ifname]);
    await nsA.exec('ip', ['link', 'set', ifname, 'up']);
  }, 120_000);

  afterAll(async () => {
    wgGo?.kill('SIGTERM');
    await nsA?.destroy();
    // wireguard-go removes its control socket only on a clean exit; make sure.
    if (ifname) rmSync(`/var/run/wireguard/${ifname}.sock`, { force: true });
    await nsB?.destroy();
    if (buildDir) rmSync(buildDir, { recursive: true, force: true });
  });

  async function wgPublicKey(): Promise<string> {
    if (!nsA) throw new Error('no namespace');
    return (await nsA.exec('wg', ['show', ifname, 'public-key'])).stdout.trim();
  }

  /** Fresh harness keys, a fresh wireguard-go peer for them, and a running harness. */
  async function setUp(withPsk: boolean, backend: string): Promise<{ harness: Harness; harnessPub: string }> {
    if (!nsA || !nsB) throw new Error('no namespaces');
    caseNo++;
    const priv = (await nsA.exec('wg', ['genkey'])).stdout.trim();
    const pub = execFileSync('wg', ['pubkey'], { input: `${priv}\n`, encoding: 'utf8' }).trim();
    const psk = withPsk ? (await nsA.exec('wg', ['genpsk'])).stdout.trim() : '-';
    const harnessPort = WG_PORT + caseNo;
    // Remove the previous cases' peers so allowed-ips 10.99.0.2/32 maps to this one.
    const peers = (await nsA.exec('wg', ['show', ifname, 'peers'])).stdout.split('\n').filter(Boolean);
    for (const p of peers) await nsA.exec('wg', ['set', ifname, 'peer', p, 'remove']);
    const args = ['set', ifname, 'peer', pub, 'allowed-ips', `${TUN_B}/32`, 'endpoint', `${UNDERLAY_B}:${harnessPort}`];
    if (withPsk) {
      const pskFile = join(buildDir, `psk-${caseNo}`);
      writeFileSync(pskFile, `${psk}\n`, { mode: 0o600 });
      args.push('preshared-key', pskFile);
    }
    await nsA.exec('wg', args);

    const script = join(buildDir, 'test/protocol/fixtures/wg-harness.js');
    const child = nsB.spawn(process.execPath, [script, priv, await wgPublicKey(), psk, UNDERLAY_B, String(harnessPort), UNDERLAY_A, String(WG_PORT), TUN_B], {
      env: { ...process.env, HARNESS_CRYPTO: backend },
    });
    const events: Array<Record<string, unknown>> = [];
    const waiters = new Set<() => void>();
    let stderr = '';
    child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      try {
        events.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        events.push({ event: 'unparsed', line });
      }
      for (const w of waiters) w();
    });
    const harness: Harness = {
      child,
      events,
      send: (cmd) => child.stdin?.write(`${JSON.stringify(cmd)}\n`),
      waitFor: (pred, timeoutMs) =>
        new Promise((resolve, reject) => {
          const check = (): boolean => {
            const e = events.find(pred);
            if (e) {
              waiters.delete(onEvent);
              clearTimeout(timer);
              resolve(e);
              return true;
            }
            return false;
          };
          const onEvent = (): void => void check();
          const timer = setTimeout(() => {
            waiters.delete(onEvent);
            reject(new Error(`harness: timed out; events: ${JSON.stringify(events)}; stderr: ${stderr}`));
          }, timeoutMs);
          waiters.add(onEvent);
          check();
        }),
    };
    const ready = await harness.waitFor((e) => e.event === 'ready' || e.event === 'fatal', 15_000);
    expect(ready).toEqual({ event: 'ready', backend });
    return { harness, harnessPub: pub };
  }

  async function tearDown(h: Harness): Promise<void> {
    h.child.stdin?.end();
    h.child.kill('SIGKILL');
    await new Promise((r) => (h.child.exitCode !== null ? r(undefined) : h.child.once('exit', r)));
  }

  async function latestHandshake(pub: string): Promise<number> {
    if (!nsA) throw new Error('no namespace');
    const out = (await nsA.exec('wg', ['show', ifname, 'latest-handshakes'])).stdout;
    const line = out.split('\n').find((l) => l.startsWith(pub));
    return line ? Number(line.split(/\s+/)[1]) : 0;
  }

  for (const [withPsk, backend] of [
    [false, 'sodium-native'],
    [true, 'sodium-native'],
    [false, 'libsodium-wrappers'],
    [true, 'libsodium-wrappers'],
  ] as const) {
    const label = `${withPsk ? 'with' : 'without'} a preshared key, ${backend}`;

    it(`our side initiates: echo request through wireguard-go and its reply back (${label})`, async () => {
      const { harness, harnessPub } = await setUp(withPsk, backend);
      try {
        // Repeat the ping until the reply arrives: the first one waits in the queue for the handshake.
        let reply: Record<string, unknown> | undefined;
        for (let seq = 1; seq <= 10 && !reply; seq++) {
          harness.send({ cmd: 'ping', dst: TUN_A, id: 77, seq });
          reply = await harness.waitFor((e) => e.event === 'echo-reply', 1_000).catch(() => undefined);
        }
        expect(reply).toMatchObject({ event: 'echo-reply', from: TUN_A, id: 77, checksumOk: true });
        // We initiated: our harness started a handshake and wireguard-go answered it.
        const hs = harness.events.find((e) => e.event === 'handshake');
        expect(hs).toMatchObject({ peer: true, replied: false });
        expect(Number(hs?.started)).toBeGreaterThanOrEqual(1);
        expect(await latestHandshake(harnessPub)).toBeGreaterThan(0);
        expect(harness.events.filter((e) => e.event === 'drop')).toEqual([]);
      } finally {
        await tearDown(harness);
      }
    }, 60_000);

    it(`wireguard-go initiates: its ping is answered by our side (${label})`, async () => {
      const { harness, harnessPub } = await setUp(withPsk, backend);
      try {
        if (!nsA) throw new Error('no namespace');
        const out = await pingUntil(nsA, TUN_B, 20_000);
        expect(out).toMatch(/1 received/);
        const req = await harness.waitFor((e) => e.event === 'echo-request', 1_000);
        expect(req).toMatchObject({ from: TUN_A });
        // wireguard-go initiated: our first handshake event is us replying with a response.
        const hs = harness.events.find((e) => e.event === 'handshake');
        expect(hs).toMatchObject({ peer: true, replied: true, started: 0 });
        expect(await latestHandshake(harnessPub)).toBeGreaterThan(0);
        // And traffic keeps flowing in the other direction on the same session.
        harness.send({ cmd: 'ping', dst: TUN_A, id: 78, seq: 1 });
        await harness.waitFor((e) => e.event === 'echo-reply' && e.id === 78, 5_000);
        expect(harness.events.filter((e) => e.event === 'drop')).toEqual([]);
      } finally {
        await tearDown(harness);
      }
    }, 60_000);
  }
});
