/**
 * Secrets: a private key file others can read is refused by `tunvpn run`;
 * no private or preshared key ever reaches the logs of a full run (both
 * daemons at trace level, handshakes, status, a good reload, bad reloads,
 * keys read and written through the control socket);
 * the control socket answers root only.
 *
 * The config error paths themselves are unit-tested in test/config.
 */
import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADDR, cliPath, ConfigDir } from '../../src/testbed/site-to-site.js';
import { makeKeyPair } from '../helpers/daemon.js';
import { describeIntegration, Netns, pingUntil } from '../helpers/netns.js';
import { hardeningBed, status, type HardeningBed } from './helpers.js';

/** Every spelling of a key a careless log line could carry. */
function spellings(b64: string): string[] {
  const raw = Buffer.from(b64, 'base64');
  return [b64, b64.replace(/=+$/, ''), raw.toString('base64url'), raw.toString('hex'), raw.toString('hex').toUpperCase(), [...raw].join(',')];
}

describeIntegration('hardening: key file permissions', [], () => {
  let ns: Netns;
  let dir: ConfigDir;

  beforeAll(async () => {
    ns = await Netns.create('hkp');
    dir = await ConfigDir.create();
  });

  afterAll(async () => {
    await ns?.destroy();
    await dir?.destroy();
  });

  it('tunvpn run refuses a private key file readable by others: exit 78, the file named, the key not printed', async () => {
    const [me, peer] = [makeKeyPair(), makeKeyPair()];
    const cfg = await dir.writeHost('loose', {
      interfaceName: 'hkp0',
      privateKey: me.privateKey,
      listenPort: 51820,
      addresses: ['10.62.9.1/24'],
      peers: [{ name: 'p', publicKey: peer.publicKey, allowedIPs: ['10.62.9.2/32'] }],
    });
    const keyFile = join(dir.path, 'loose.key');
    await chmod(keyFile, 0o644);
    const r = await ns.exec(process.execPath, [cliPath(), 'run', '--config', cfg]).then(
      (ok) => ({ code: 0, ...ok }),
      (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' }),
    );
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(keyFile);
    expect(r.stderr).toMatch(/0644/);
    for (const s of spellings(me.privateKey)) expect(r.stdout + r.stderr).not.toContain(s);
    // Nothing was created.
    const links = await ns.exec('ip', ['-o', 'link']);
    expect(links.stdout).not.toContain('hkp0');
  });
});

describeIntegration('hardening: no key in any log', ['ping', 'wg', 'setpriv'], () => {
  let h: HardeningBed;
  let psk: string;
  const psk2 = randomBytes(32).toString('base64');

  beforeAll(async () => {
    psk = randomBytes(32).toString('base64');
    h = await hardeningBed('hs', { presharedKey: psk, extraArgs: ['--log-level', 'trace'] });
  });

  afterAll(async () => {
    await h?.destroy();
  });

  describe('a full run', () => {
    it('handshakes, status, a reload, bad reloads: no private or preshared key in the logs, in any spelling', async () => {
      const good = await readFile(h.cfgB, 'utf8');
      await status(h.da);
      await status(h.db);
      // A good reload (a peer setting changed).
      const cfg = JSON.parse(good) as { peers: { persistentKeepalive?: number }[]; interface: { privateKeyFile: string } };
      cfg.peers[0].persistentKeepalive = 25;
      await writeFile(h.cfgB, JSON.stringify(cfg), { mode: 0o600 });
      let from = h.db.records().length;
      h.db.signal('SIGHUP');
      await h.db.waitForLog(/configuration reloaded/, 10_000, from);
      // A bad reload: invalid allowed IPs.
      const bad1 = JSON.parse(good) as { peers: { allowedIPs: string[] }[] };
      bad1.peers[0].allowedIPs = ['10.61.1.0/33'];
      await writeFile(h.cfgB, JSON.stringify(bad1), { mode: 0o600 });
      from = h.db.records().length;
      h.db.signal('SIGHUP');
      await h.db.waitForLog(/reload rejected/, 10_000, from);
      // A bad reload: the preshared key inline but one character short, and
      // the private key file holding a damaged key; the error must not echo them.
      const bad2 = JSON.parse(good) as { peers: { presharedKey?: string }[]; interface: { privateKeyFile: string } };
      bad2.peers[0].presharedKey = psk.slice(0, -2);
      const damagedKey = join(h.dir.path, 'damaged.key');
      await writeFile(damagedKey, h.b.privateKey.slice(0, -3) + '\n', { mode: 0o600 });
      bad2.interface.privateKeyFile = damagedKey;
      await writeFile(h.cfgB, JSON.stringify(bad2), { mode: 0o600 });
      from = h.db.records().length;
      h.db.signal('SIGHUP');
      await h.db.waitForLog(/reload rejected/, 10_000, from);
      await writeFile(h.cfgB, good, { mode: 0o600 });
      // Keys through the control socket: wg showconf reads them, wg set writes a new preshared key on both sides.
      const pskFile = join(h.dir.path, 'psk2');
      await writeFile(pskFile, psk2 + '\n', { mode: 0o600 });
      await h.bed.tb.exec('wg', ['showconf', h.hostB.interfaceName]);
      await h.bed.ta.exec('wg', ['set', h.hostA.interfaceName, 'peer', h.b.publicKey, 'preshared-key', pskFile]);
      await h.bed.tb.exec('wg', ['set', h.hostB.interfaceName, 'peer', h.a.publicKey, 'preshared-key', pskFile]);
      await pingUntil(h.bed.la, ADDR.lb.v4, 5_000);
      await status(h.db);

      const logs = [...h.da.lines, ...h.db.lines].join('\n');
      expect(h.da.lines.length + h.db.lines.length).toBeGreaterThan(10);
      expect(logs).toContain('configuration changed through the control socket');
      const secrets: [string, string][] = [
        ['private key A', h.a.privateKey],
        ['private key B', h.b.privateKey],
        ['preshared key', psk],
        ['preshared key set through wg', psk2],
      ];
      for (const [what, key] of secrets) {
        for (const s of spellings(key)) expect({ what, found: logs.includes(s) }).toEqual({ what, found: false });
      }
      for (const partial of [psk.slice(0, -2), h.b.privateKey.slice(0, -3)]) expect(logs).not.toContain(partial);
    });
  });

  it('the control socket answers root and refuses other users', async () => {
    const root = await h.bed.tb.exec('wg', ['show', h.hostB.interfaceName]);
    expect(root.stdout).toContain(h.a.publicKey);
    const nobody = await h.bed.tb
      .exec('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'wg', 'show', h.hostB.interfaceName, 'private-key'])
      .then(
        (ok) => ({ code: 0, out: ok.stdout + ok.stderr }),
        (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: err.code ?? -1, out: (err.stdout ?? '') + (err.stderr ?? '') }),
      );
    expect(nobody.code).not.toBe(0);
    for (const s of spellings(h.b.privateKey)) expect(nobody.out).not.toContain(s);
  });
});
