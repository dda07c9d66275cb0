/**
 * Issue 16: interface.fwmark and interface.table in the config (validated,
 * with the field path), what planRouting makes of them, the endpoint-loop
 * warning of `tunvpn check`, and the policy rules on a real kernel (a
 * namespace of its own): added, recognised exactly, removed after a crash
 * from the record, never someone else's.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig, type TunvpnConfig } from '../src/config/index.js';
import { describeSchema } from '../src/config/schema.js';
import { endpointLoopWarnings, OwnedRules, parseRouteKey, planRouting, routeKey } from '../src/routing.js';
import * as ip from '../src/tun/iproute.js';
import { describeIntegration, Netns } from './helpers/netns.js';
import { keyPair } from './config/helpers.js';
import { tunvpn } from './cli/helpers.js';

const me = keyPair();
const a = keyPair();

async function parse(iface: Record<string, unknown>, peer: Record<string, unknown> = {}): Promise<TunvpnConfig> {
  return parseConfig(
    { interface: { privateKey: me.priv, addresses: ['10.62.0.1/24'], ...iface }, peers: [{ publicKey: a.pub, allowedIPs: ['10.62.0.2/32'], ...peer }] },
    { baseDir: '/' },
  );
}

async function issues(iface: Record<string, unknown>): Promise<string[]> {
  try {
    await parse(iface);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
  }
  throw new Error('expected a ConfigError');
}

describe('interface.fwmark and interface.table in the config', () => {
  it('default to 0 and "auto", are documented in the schema', async () => {
    const cfg = await parse({});
    expect(cfg.interface.fwmark).toBe(0);
    expect(cfg.interface.table).toBe('auto');
    const docs = describeSchema();
    expect(docs.find((d) => d.path === 'interface.fwmark')?.doc).toMatch(/SO_MARK/);
    expect(docs.find((d) => d.path === 'interface.table')?.doc).toMatch(/suppress_prefixlength 0/);
  });

  it('take valid values', async () => {
    expect((await parse({ fwmark: 0xffffffff, table: 'off' })).interface).toMatchObject({ fwmark: 0xffffffff, table: 'off' });
    expect((await parse({ table: 1234 })).interface.table).toBe(1234);
    expect((await parse({ table: 254 })).interface.table).toBe(254);
  });

  it('refuse bad values, naming the field', async () => {
    expect(await issues({ fwmark: -1 })).toEqual([expect.stringMatching(/^interface\.fwmark: must be an integer from 0 to 4294967295/)]);
    expect(await issues({ fwmark: 2 ** 32 })).toEqual([expect.stringMatching(/^interface\.fwmark: /)]);
    expect(await issues({ fwmark: '0x10' })).toEqual([expect.stringMatching(/^interface\.fwmark: .*got a string/)]);
    expect(await issues({ table: 'main' })).toEqual([expect.stringMatching(/^interface\.table: must be "auto", "off" or a routing table number/)]);
    expect(await issues({ table: 0 })).toEqual([expect.stringMatching(/^interface\.table: /)]);
    expect(await issues({ table: 255 })).toEqual([expect.stringMatching(/^interface\.table: must not be table 255 \(reserved: local\)/)]);
    expect(await issues({ table: 253 })).toEqual([expect.stringMatching(/^interface\.table: must not be table 253/)]);
    expect(await issues({ table: 1.5 })).toEqual([expect.stringMatching(/^interface\.table: /)]);
  });
});

describe('planRouting', () => {
  const prefixes = ['10.1.0.0/16', '0.0.0.0/0', '::/0', 'fd00::/64'];

  it('auto: default routes to table 51820 (or the fwmark), two rules per family, the sockets marked', () => {
    const p = planRouting(prefixes, 'auto', 0);
    expect(p.routes).toEqual(['10.1.0.0/16', '0.0.0.0/0 table 51820', '::/0 table 51820', 'fd00::/64']);
    expect(p.mark).toBe(51820);
    expect(p.rules).toEqual([
      { family: 4, priority: 32765, kind: 'not-fwmark', mark: 51820, table: 51820 },
      { family: 4, priority: 32764, kind: 'suppress', mark: 0, table: 254 },
      { family: 6, priority: 32765, kind: 'not-fwmark', mark: 51820, table: 51820 },
      { family: 6, priority: 32764, kind: 'suppress', mark: 0, table: 254 },
    ]);
    const marked = planRouting(['::/0'], 'auto', 77);
    expect(marked).toEqual({
      routes: ['::/0 table 77'],
      rules: [expect.objectContaining({ family: 6, mark: 77, table: 77 }), expect.objectContaining({ family: 6, kind: 'suppress' })],
      mark: 77,
    });
  });

  it('auto without a default route: main table, no rules, the configured mark (0 stays 0)', () => {
    expect(planRouting(['10.1.0.0/16'], 'auto', 0)).toEqual({ routes: ['10.1.0.0/16'], rules: [], mark: 0 });
    expect(planRouting(['10.1.0.0/16'], 'auto', 9).mark).toBe(9);
  });

  it('off: nothing; a number: every route in that table, no rules', () => {
    expect(planRouting(prefixes, 'off', 0)).toEqual({ routes: [], rules: [], mark: 0 });
    expect(planRouting(prefixes, 1234, 5)).toEqual({ routes: prefixes.map((r) => `${r} table 1234`), rules: [], mark: 5 });
  });

  it('route keys round-trip; the main table keeps the bare prefix', () => {
    expect(routeKey('10.0.0.0/8', 254)).toBe('10.0.0.0/8');
    expect(parseRouteKey('10.0.0.0/8')).toEqual({ prefix: '10.0.0.0/8', table: 254 });
    expect(parseRouteKey(routeKey('::/0', 51820))).toEqual({ prefix: '::/0', table: 51820 });
    expect(ip.routeLine('add', 'tv0', '::/0', 51820)).toBe('route add ::/0 dev tv0 table 51820');
    expect(ip.routeLine('del', 'tv0', '::/0', 51820)).toBe('route del ::/0 dev tv0 table 51820 metric 1024');
  });
});

describe('endpointLoopWarnings (tunvpn check, issue 16 item 2)', () => {
  const cfg = (
    table: TunvpnConfig['interface']['table'],
    fwmark: number,
    allowedIPs: string[],
    host = '198.51.100.7',
  ): Pick<TunvpnConfig, 'interface' | 'peers'> =>
    ({
      interface: { table, fwmark },
      peers: [{ allowedIPs: ['10.9.0.0/16'] }, { allowedIPs, endpoint: { host, port: 51820 } }],
    }) as unknown as Pick<TunvpnConfig, 'interface' | 'peers'>;

  it('warns for a prefix covering the endpoint in the main table, naming both fields', () => {
    expect(endpointLoopWarnings(cfg('auto', 0, ['10.0.0.0/8', '198.51.100.0/24']))).toEqual([
      expect.stringMatching(/^peers\[1\]\.allowedIPs\[1\]: 198\.51\.100\.0\/24 covers peers\[1\]\.endpoint 198\.51\.100\.7: .*a loop/),
    ]);
    expect(endpointLoopWarnings(cfg('auto', 0, ['0.0.0.0/1', '128.0.0.0/1']))).toEqual([expect.stringMatching(/128\.0\.0\.0\/1 covers/)]);
    expect(endpointLoopWarnings(cfg(254, 0, ['0.0.0.0/0']))).toEqual([expect.stringMatching(/table 254 \(main\)/)]);
    expect(endpointLoopWarnings(cfg('auto', 0, ['2001:db8::/32'], '2001:db8::1'))).toEqual([
      expect.stringMatching(/2001:db8::\/32 covers peers\[1\]\.endpoint 2001:db8::1/),
    ]);
  });

  it('is silent when a full tunnel keeps the datagrams out, with table off, for prefixes not covering it, and for host names', () => {
    expect(endpointLoopWarnings(cfg('auto', 0, ['0.0.0.0/0', '::/0']))).toEqual([]);
    expect(endpointLoopWarnings(cfg('off', 0, ['198.51.100.0/24']))).toEqual([]);
    expect(endpointLoopWarnings(cfg('auto', 0, ['198.51.101.0/24', '2001:db8::/32']))).toEqual([]);
    expect(endpointLoopWarnings(cfg('auto', 0, ['198.51.100.0/24'], 'vpn.example.org'))).toEqual([]);
    expect(endpointLoopWarnings(cfg(1234, 7, ['198.51.100.0/24']))).toEqual([]);
    expect(endpointLoopWarnings(cfg(1234, 0, ['198.51.100.0/24']))).toEqual([expect.stringMatching(/with fwmark 0 no rule can tell them apart/)]);
  });

  it('is linear: 20,000 peers with endpoints and 20,000 prefixes in seconds, not minutes', () => {
    const peers = Array.from({ length: 20_000 }, (_, i) => ({
      allowedIPs: [`10.${i >> 8}.${i & 255}.0/24`],
      endpoint: { host: `192.0.${(i >> 8) & 255}.${i & 255}`, port: 1 },
    }));
    const t0 = performance.now();
    expect(endpointLoopWarnings({ interface: { table: 'auto', fwmark: 0 }, peers } as unknown as Pick<TunvpnConfig, 'interface' | 'peers'>)).toEqual([]);
    // Two prefix lengths in use: two lookups per endpoint; every endpoint against every prefix is 400 million comparisons.
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('tunvpn check prints it as a warning and still exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tunvpn-loop-'));
    try {
      const path = join(dir, 'c.json');
      writeFileSync(
        path,
        JSON.stringify({ interface: { privateKey: me.priv }, peers: [{ publicKey: a.pub, endpoint: '203.0.113.9:51820', allowedIPs: ['203.0.113.0/24'] }] }),
        { mode: 0o600 },
      );
      const r = await tunvpn(['check', '--config', path]);
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/^warning: peers\[0\]\.allowedIPs\[0\]: 203\.0\.113\.0\/24 covers peers\[0\]\.endpoint 203\.0\.113\.9/m);
      writeFileSync(
        path,
        JSON.stringify({ interface: { privateKey: me.priv }, peers: [{ publicKey: a.pub, endpoint: '203.0.113.9:51820', allowedIPs: ['0.0.0.0/0'] }] }),
        { mode: 0o600 },
      );
      expect((await tunvpn(['check', '--config', path])).stderr).not.toMatch(/covers/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeIntegration('policy rules on a real kernel (OwnedRules)', [], () => {
  let ns: Netns;
  let stateDir: string;
  const rulesOf = (family: 4 | 6): string => execFileSync('ip', ['-n', ns.name, `-${family}`, 'rule', 'show'], { encoding: 'utf8' });

  beforeAll(async () => {
    ns = await Netns.create('rules');
    stateDir = mkdtempSync(join(tmpdir(), 'tunvpn-rules-'));
  });

  afterAll(async () => {
    await ns?.destroy();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('adds, records, recognises exactly, and after a "crash" a new instance removes only the recorded ones', async () => {
    const before4 = rulesOf(4);
    const before6 = rulesOf(6);
    const { rules } = planRouting(['0.0.0.0/0', '::/0'], 'auto', 0);
    const first = new OwnedRules('tvr0', stateDir, { netns: ns.name });
    await first.commit(await first.prepare(rules));
    expect(rulesOf(4)).toMatch(/^32765:\s+not from all fwmark 0xca6c lookup 51820/m);
    expect(rulesOf(6)).toMatch(/^32764:\s+from all lookup main suppress_prefixlength 0/m);
    expect(JSON.parse(readFileSync(first.record, 'utf8'))).toHaveLength(4);
    for (const r of rules) expect(await ip.ruleExists(r, { netns: ns.name })).toBe(true);
    // Another mark, another priority: not ours.
    expect(await ip.ruleExists({ ...rules[0], mark: 1 }, { netns: ns.name })).toBe(false);
    expect(await ip.ruleExists({ ...rules[0], priority: 100 }, { netns: ns.name })).toBe(false);
    // Someone else's rule at our priority with another table stays.
    execFileSync('ip', ['-n', ns.name, '-4', 'rule', 'add', 'not', 'fwmark', '51820', 'table', '999', 'priority', '32765']);
    const foreign4 = rulesOf(4);

    // "Crash": the first instance is forgotten; a second one for the same interface cleans up.
    const second = new OwnedRules('tvr0', stateDir, { netns: ns.name });
    expect(await second.removeLeftovers()).toHaveLength(4);
    expect(existsSync(second.record)).toBe(false);
    expect(rulesOf(4)).toMatch(/lookup 999/);
    expect(rulesOf(4)).not.toMatch(/lookup 51820/);
    expect(rulesOf(6)).toBe(before6);
    // Nothing recorded for another interface: nothing removed.
    expect(await new OwnedRules('tvr1', stateDir, { netns: ns.name }).removeLeftovers()).toEqual([]);
    execFileSync('ip', ['-n', ns.name, '-4', 'rule', 'del', 'not', 'fwmark', '51820', 'table', '999', 'priority', '32765']);
    expect(rulesOf(4)).toBe(before4);
    expect(foreign4).not.toBe(before4);
  });

  it('without a record (read-only /run): a start finds the rules it wants as leftovers only while their table has no route', async () => {
    const before = rulesOf(4) + rulesOf(6);
    const { rules } = planRouting(['0.0.0.0/0', '::/0'], 'auto', 0);
    // A file where the state directory should be: mkdir fails, as on a read-only /run.
    const blocked = join(stateDir, 'not-a-dir');
    writeFileSync(blocked, '');
    const crashed = new OwnedRules('tvr3', blocked, { netns: ns.name });
    await crashed.commit(await crashed.prepare(rules));
    expect(crashed.recordProblem).toMatch(/ENOTDIR|EEXIST/);
    expect(rulesOf(4)).toMatch(/lookup 51820/);
    // A live full tunnel's table routes: its rules are not leftovers.
    execFileSync('ip', ['-n', ns.name, '-4', 'route', 'add', 'default', 'dev', 'lo', 'table', '51820']);
    const next = new OwnedRules('tvr3', blocked, { netns: ns.name });
    expect((await next.removeLeftovers(rules)).map((r) => r.family)).toEqual([6, 6]);
    expect(rulesOf(4)).toMatch(/lookup 51820/);
    execFileSync('ip', ['-n', ns.name, '-4', 'route', 'del', 'default', 'dev', 'lo', 'table', '51820']);
    expect(await next.removeLeftovers(rules)).toHaveLength(2);
    expect(rulesOf(4) + rulesOf(6)).toBe(before);
  });

  it('a prepare that fails half-way removes what it added (all or nothing), and removeAll leaves nothing', async () => {
    const before = rulesOf(4) + rulesOf(6);
    const { rules } = planRouting(['0.0.0.0/0', '::/0'], 'auto', 0);
    // The v6 suppress rule exists already (someone else's): its add fails with EEXIST.
    execFileSync('ip', ['-n', ns.name, '-6', 'rule', 'add', 'table', 'main', 'suppress_prefixlength', '0', 'priority', '32764']);
    const owned = new OwnedRules('tvr2', stateDir, { netns: ns.name });
    await expect(owned.prepare(rules)).rejects.toMatchObject({ code: 'RULE_FAILED', exists: true });
    execFileSync('ip', ['-n', ns.name, '-6', 'rule', 'del', 'table', 'main', 'suppress_prefixlength', '0', 'priority', '32764']);
    expect(rulesOf(4) + rulesOf(6)).toBe(before);
    await owned.commit(await owned.prepare(rules));
    expect(await owned.removeAll()).toEqual([]);
    expect(rulesOf(4) + rulesOf(6)).toBe(before);
    expect(existsSync(owned.record)).toBe(false);
  });
});
