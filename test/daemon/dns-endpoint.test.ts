/**
 * Endpoints that follow DNS, through real daemons, real UDP and real
 * namespaces, with names served only inside the test: the client daemon
 * runs under `unshare --mount` (inside `ip netns exec`, itself a private
 * mount namespace) with a private hosts file and resolv.conf bind-mounted
 * over /etc's. The host's own /etc/hosts is never written (checked).
 *
 *   [client] 10.70.0.1 ─veth─ 10.70.0.2 → .3 → .4 [server]
 *   tunnel   10.72.0.1          ══════════         10.72.0.2
 *
 * Test timers (NODE_ENV=test, Rekey-After-Time 4 s, Rekey-Timeout 1 s)
 * shorten "a handshake younger than 135 s" to 4 + 3 × 1 = 7 s, and the
 * config sets dns.resolveInterval to 1 s.
 *
 * 1. The server's address moves from .2 to .3 and the hosts file follows:
 *    the tunnel follows within the bound (7 s + 1.25 s + a handshake), the
 *    change is logged with the old and new address, `wg show` shows it.
 * 2. The server moves to .4 and the hosts file is NOT updated (still .3):
 *    the client learns .4 from the server's authenticated keepalives
 *    (roaming) and, while pings keep the session alive, never goes back to
 *    the stale name's address.
 * 3. A second peer's name does not resolve at all: one warning per
 *    attempt, at most one attempt per interval, and the daemon keeps running.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeIntegration, linkNamespaces, Netns, run, sleep, uniqueSuffix } from '../helpers/netns.js';
import { cliPath, ConfigDir, DaemonProcess, startDaemon } from '../../src/testbed/site-to-site.js';
import { makeKeyPair, type KeyPairText } from '../helpers/daemon.js';

const NAME = 'vpn-server.test';
const GHOST = 'nowhere.test';
const FRESH_MS = 7_000;
const INTERVAL_MS = 1_000;
const TEST_ENV = { ...process.env, NODE_ENV: 'test', TUNVPN_TEST_REKEY_AFTER_TIME_MS: '4000' };

async function pingOk(ns: Netns, address: string): Promise<boolean> {
  try {
    await ns.exec('ping', ['-n', '-c', '1', '-W', '1', address], { timeoutMs: 5_000 });
    return true;
  } catch {
    return false;
  }
}

/** Milliseconds until a ping through the tunnel is answered (fails after `limitMs`). */
async function msUntilPing(ns: Netns, address: string, limitMs: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    if (await pingOk(ns, address)) return Date.now() - t0;
    await sleep(100);
  }
  throw new Error(`no ping reply from ${address} within ${limitMs} ms`);
}

/** `wg show IF endpoints`: public key → endpoint. */
async function endpoints(ifname: string): Promise<Map<string, string>> {
  const { stdout } = await run('wg', ['show', ifname, 'endpoints']);
  const out = new Map<string, string>();
  for (const line of stdout.trim().split('\n')) {
    const [k, e] = line.split('\t');
    if (k) out.set(k, e);
  }
  return out;
}

describeIntegration('endpoints that follow DNS', ['ping', 'wg', 'unshare', 'mount'], () => {
  let client: Netns;
  let server: Netns;
  let serverIf: string;
  let dir: ConfigDir;
  let hostsFile: string;
  let hostsBefore: string | undefined;
  let c: KeyPairText;
  let s: KeyPairText;
  let ghost: KeyPairText;
  let clientDaemon: DaemonProcess | undefined;
  let serverDaemon: DaemonProcess | undefined;
  const suffix = uniqueSuffix();
  const clientIf = `dc${suffix}`.slice(0, 15);
  const serverTun = `ds${suffix}`.slice(0, 15);
  let clientStarted = 0;

  /** Rewrites the private hosts file in place (the bind mount pins its inode). */
  const serveName = (address: string) => writeFile(hostsFile, `127.0.0.1 localhost\n${address} ${NAME}\n`);

  beforeAll(async () => {
    hostsBefore = await readFile('/etc/hosts', 'utf8');
    [c, s, ghost] = [makeKeyPair(), makeKeyPair(), makeKeyPair()];
    dir = await ConfigDir.create();
    client = await Netns.create('dnsc');
    server = await Netns.create('dnss');
    ({ ifB: serverIf } = await linkNamespaces(client, server, '10.70.0.1/24', '10.70.0.2/24'));
    // Deleting the primary address would take the new (secondary) one with it.
    await server.exec('sysctl', ['-q', '-w', `net.ipv4.conf.${serverIf}.promote_secondaries=1`]);

    hostsFile = join(dir.path, 'hosts');
    await serveName('10.70.0.2');
    const resolvFile = join(dir.path, 'resolv.conf');
    // Nothing listens on the namespace's loopback: a name not in the hosts file fails at once.
    await writeFile(resolvFile, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');

    const write = async (name: string, cfg: unknown) => {
      const path = join(dir.path, `${name}.json`);
      await writeFile(path, JSON.stringify(cfg, null, 2), { mode: 0o600 });
      return path;
    };
    const serverConfig = await write('server', {
      interface: { name: serverTun, privateKey: s.privateKey, listenPort: 51820, addresses: ['10.72.0.2/24'] },
      // No endpoint: the server learns the client's from its packets, and
      // sends nothing on its own until test 3 turns keepalives on.
      peers: [{ name: 'client', publicKey: c.publicKey, allowedIPs: ['10.72.0.1/32'] }],
    });
    const clientConfig = await write('client', {
      interface: { name: clientIf, privateKey: c.privateKey, listenPort: 51821, addresses: ['10.72.0.1/24'] },
      peers: [
        { name: 'server', publicKey: s.publicKey, endpoint: `${NAME}:51820`, allowedIPs: ['10.72.0.2/32'] },
        { name: 'ghost', publicKey: ghost.publicKey, endpoint: `${GHOST}:51820`, allowedIPs: ['10.72.0.9/32'] },
      ],
      dns: { resolveInterval: INTERVAL_MS / 1000 },
      log: { level: 'debug' },
    });

    serverDaemon = await startDaemon(server, serverConfig);
    const script = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec "$3" "$4" run --config "$5"';
    const child = client.spawn(
      'unshare',
      ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', hostsFile, resolvFile, process.execPath, cliPath(), clientConfig],
      { stdio: ['ignore', 'pipe', 'pipe'], env: TEST_ENV },
    );
    clientDaemon = new DaemonProcess(child);
    await clientDaemon.waitForLog(/^tunvpn up/);
    clientStarted = Date.now();
  });

  afterAll(async () => {
    if (process.env.DNS_TEST_DUMP) {
      await writeFile(process.env.DNS_TEST_DUMP, [...(clientDaemon?.lines ?? []), '--- server', ...(serverDaemon?.lines ?? [])].join('\n'));
    }
    await clientDaemon?.stop();
    await serverDaemon?.stop();
    await client?.destroy();
    await server?.destroy();
    await dir?.destroy();
    // The private hosts file lived only in the daemon's mount namespace.
    if (hostsBefore !== undefined) expect(await readFile('/etc/hosts', 'utf8')).toBe(hostsBefore);
  });

  it('resolves the name at start; the tunnel works', async () => {
    await msUntilPing(client, '10.72.0.2', 15_000);
    expect((await endpoints(clientIf)).get(s.publicKey)).toBe('10.70.0.2:51820');
  });

  it('follows the name when the server moves, within the bound, and logs old and new address', async () => {
    const from = clientDaemon?.lines.length ?? 0;
    await server.exec('ip', ['addr', 'add', '10.70.0.3/24', 'dev', serverIf]);
    await server.exec('ip', ['addr', 'del', '10.70.0.2/24', 'dev', serverIf]);
    await serveName('10.70.0.3');
    const ms = await msUntilPing(client, '10.72.0.2', 30_000);
    console.log(`dns-endpoint: the tunnel answered again ${ms} ms after the server moved`);
    // Stale after 7 s without a handshake, looked up within 1.25 s, a handshake, ping's 1 s wait; slack for a loaded machine.
    expect(ms).toBeLessThan(FRESH_MS + 1.25 * INTERVAL_MS + 10_000);
    const change = await clientDaemon?.waitForLog(/^endpoint address changed$/, 5_000, from);
    expect(change).toMatchObject({ peer: 'server', host: NAME, from: '10.70.0.2:51820', to: '10.70.0.3:51820' });
    expect((await endpoints(clientIf)).get(s.publicKey)).toBe('10.70.0.3:51820');
    // Never a key in the daemon's log.
    const log = clientDaemon?.lines.join('\n') ?? '';
    for (const k of [c.privateKey, s.publicKey, ghost.publicKey]) expect(log).not.toContain(k);
  }, 60_000);

  it('an endpoint learned by roaming is not overridden by the stale name while the session is alive', async () => {
    const from = clientDaemon?.lines.length ?? 0;
    // Keepalives every second from the server: they leave from whatever address it has.
    await run('wg', ['set', serverTun, 'peer', c.publicKey, 'persistent-keepalive', '1']);
    // The server moves to .4; the name still says .3 (nobody there now).
    await server.exec('ip', ['addr', 'add', '10.70.0.4/24', 'dev', serverIf]);
    await server.exec('ip', ['addr', 'del', '10.70.0.3/24', 'dev', serverIf]);
    // The server's keepalives (from .4) reach the client, which roams.
    const deadline = Date.now() + 10_000;
    while ((await endpoints(clientIf)).get(s.publicKey) !== '10.70.0.4:51820') {
      if (Date.now() > deadline) throw new Error(`client did not roam to 10.70.0.4: ${JSON.stringify([...(await endpoints(clientIf))])}`);
      await sleep(100);
    }
    // Keep the session alive (rekeys every 4 s) for three times the freshness bound.
    const until = Date.now() + 3 * FRESH_MS;
    let sent = 0;
    let answered = 0;
    while (Date.now() < until) {
      sent++;
      if (await pingOk(client, '10.72.0.2')) answered++;
      expect((await endpoints(clientIf)).get(s.publicKey)).toBe('10.70.0.4:51820');
      await sleep(200);
    }
    expect(answered).toBeGreaterThan(sent * 0.8);
    const changes = (clientDaemon?.records() ?? []).slice(from).filter((r) => r.msg === 'endpoint address changed' && r.peer === 'server');
    expect(changes).toEqual([]);
  }, 60_000);

  it('`wg set ... endpoint IP` replaces the name until the next reload, which brings it back', async () => {
    // Quiet: no keepalives, so the client's handshake goes stale (7 s).
    await run('wg', ['set', serverTun, 'peer', c.publicKey, 'persistent-keepalive', '0']);
    await run('wg', ['set', clientIf, 'peer', s.publicKey, 'endpoint', '10.70.0.4:51820']);
    const from = clientDaemon?.lines.length ?? 0;
    // The name still says .3: were it still looked up, the stale session would move there.
    await sleep(FRESH_MS + 3 * INTERVAL_MS);
    const changes = () => (clientDaemon?.records() ?? []).slice(from).filter((r) => r.msg === 'endpoint address changed' && r.peer === 'server');
    expect(changes()).toEqual([]);
    expect((await endpoints(clientIf)).get(s.publicKey)).toBe('10.70.0.4:51820');
    // A reload makes the config file's name the endpoint again (resolved: .4) ...
    await serveName('10.70.0.4');
    clientDaemon?.signal('SIGHUP');
    await clientDaemon?.waitForLog(/^configuration reloaded$/, 10_000, from);
    expect((await endpoints(clientIf)).get(s.publicKey)).toBe('10.70.0.4:51820');
    // ... and it is looked up again: the (stale) session follows the name.
    await serveName('10.70.0.3');
    const change = await clientDaemon?.waitForLog(/^endpoint address changed$/, FRESH_MS + 5_000, from);
    expect(change).toMatchObject({ peer: 'server', from: '10.70.0.4:51820', to: '10.70.0.3:51820' });
    // The name back to the server's real address: the tunnel follows (the session never came back on .3).
    const back = clientDaemon?.lines.length ?? 0;
    await serveName('10.70.0.4');
    await clientDaemon?.waitForLog(/^endpoint address changed$/, 5_000, back);
    await msUntilPing(client, '10.72.0.2', 10_000);
  }, 60_000);

  it('an unresolvable name is logged once per attempt, at most once per interval, and the daemon keeps running', async () => {
    const elapsed = Date.now() - clientStarted;
    const warnings = (clientDaemon?.records() ?? []).filter((r) => r.msg === 'endpoint not resolved: keeping the current one' && r.peer === 'ghost');
    expect(warnings.length).toBeGreaterThanOrEqual(3);
    expect(warnings.length).toBeLessThanOrEqual(Math.floor(elapsed / INTERVAL_MS) + 1);
    expect(warnings[0]).toMatchObject({ host: GHOST });
    // Consecutive attempts are at least one interval apart (pino's `time`, ms).
    const times = warnings.map((r) => Number(r.time));
    for (let i = 1; i < times.length; i++) expect(times[i] - times[i - 1]).toBeGreaterThanOrEqual(INTERVAL_MS - 50);
    expect(clientDaemon?.running).toBe(true);
    expect(await pingOk(client, '10.72.0.2')).toBe(true);
    expect((await endpoints(clientIf)).get(ghost.publicKey)).toBe('(none)');
  });
});
