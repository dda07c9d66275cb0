/**
 * The incremental route plan (RouteIndex, routeDeltaFor, changeCandidates)
 * against the full plan, over random configs and random chains of
 * changes: after every change the routes wanted, the rules and the mark
 * must be the ones the full plan of the new config gives, and the routes
 * an incremental prepare looks up and deletes the ones planRouteChanges
 * finds with the whole wanted list. The daemon keeps one index across
 * changes (apply() after each incremental one, a new one after a full
 * one), so the chains check that it stays in step, too.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { diffConfig } from '../src/config/diff.js';
import type { PeerConfig, TunvpnConfig } from '../src/config/index.js';
import { planConfigRouting, routeDeltaFor } from '../src/daemon/network.js';
import { NO_YIELD, Yielder } from '../src/cooperative.js';
import { RouteIndex, changeCandidates, planRouteChanges } from '../src/routing.js';

const KEYS = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7'];
/** Prefixes that overlap, repeat, are covered by the addresses below, or are a full tunnel's. */
const PREFIXES = [
  '10.1.0.0/16',
  '10.1.2.0/24',
  '10.100.0.2/32',
  '10.100.0.0/16',
  '10.100.7.0/24',
  '192.168.5.0/24',
  '192.168.5.128/25',
  '0.0.0.0/0',
  '::/0',
  'fd00::/64',
  'fd00::1/128',
  'fd00:0:0:0::2/128',
  '10.1.2.3/24',
];
const ADDRESSES = [['10.100.0.1/16'], ['10.100.0.1/16', 'fd00::1/64'], ['192.168.5.1/24'], [], ['10.1.2.1/32']];
const TABLES: ('auto' | 'off' | number)[] = ['auto', 'auto', 'auto', 'off', 254, 1000];
const MARKS = [0, 0, 51820, 1234];

interface PeerModel {
  key: string;
  allowed: string[];
  keepalive: number;
}
interface ConfigModel {
  addresses: number;
  table: number;
  mark: number;
  peers: PeerModel[];
}

function build(m: ConfigModel): TunvpnConfig {
  const peers: PeerConfig[] = m.peers.map((p) => ({
    publicKey: p.key,
    publicKeyBytes: new Uint8Array(32),
    allowedIPs: [...p.allowed],
    persistentKeepalive: p.keepalive,
  }));
  return {
    interface: {
      name: 'tvinc0',
      privateKey: new Uint8Array(32),
      listenPort: 51820,
      addresses: [...ADDRESSES[m.addresses]],
      mtu: 1420,
      fwmark: MARKS[m.mark],
      table: TABLES[m.table],
    },
    peers,
    log: { level: 'info' },
    metrics: {},
    crypto: { backend: 'auto' },
    warnings: [],
  } as unknown as TunvpnConfig;
}

const allowedList = fc.array(fc.constantFrom(...PREFIXES), { maxLength: 4 });
const peerModel = (key: string): fc.Arbitrary<PeerModel> => fc.record({ key: fc.constant(key), allowed: allowedList, keepalive: fc.constantFrom(0, 25) });
const configModel: fc.Arbitrary<ConfigModel> = fc
  .subarray(KEYS)
  .chain((keys) => fc.tuple(fc.tuple(...keys.map(peerModel)), fc.nat(ADDRESSES.length - 1), fc.nat(TABLES.length - 1), fc.nat(MARKS.length - 1)))
  .map(([peers, addresses, table, mark]) => ({ peers: [...peers], addresses, table, mark }));

/** One change, as a reload or a `set` makes them; mostly to peers, now and then to the interface. */
type Change =
  | { kind: 'add'; key: string; allowed: string[] }
  | { kind: 'remove'; at: number }
  | { kind: 'allowed'; at: number; allowed: string[] }
  | { kind: 'move'; from: number; to: number; which: number }
  | { kind: 'keepalive'; at: number }
  | { kind: 'reorder'; at: number }
  | { kind: 'interface'; addresses: number; table: number; mark: number };
const change: fc.Arbitrary<Change> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('add' as const), key: fc.constantFrom(...KEYS), allowed: allowedList }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('remove' as const), at: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('allowed' as const), at: fc.nat(), allowed: allowedList }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('move' as const), from: fc.nat(), to: fc.nat(), which: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('keepalive' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reorder' as const), at: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('interface' as const),
      addresses: fc.nat(ADDRESSES.length - 1),
      table: fc.nat(TABLES.length - 1),
      mark: fc.nat(MARKS.length - 1),
    }),
  },
);

function applyChange(m: ConfigModel, c: Change): ConfigModel {
  const peers = m.peers.map((p) => ({ ...p, allowed: [...p.allowed] }));
  const n = peers.length;
  switch (c.kind) {
    case 'add':
      if (!peers.some((p) => p.key === c.key)) peers.push({ key: c.key, allowed: c.allowed, keepalive: 0 });
      break;
    case 'remove':
      if (n > 0) peers.splice(c.at % n, 1);
      break;
    case 'allowed':
      if (n > 0) peers[c.at % n].allowed = c.allowed;
      break;
    case 'move':
      if (n > 0 && peers[c.from % n].allowed.length > 0) {
        const from = peers[c.from % n];
        const [p] = from.allowed.splice(c.which % from.allowed.length, 1);
        peers[c.to % n].allowed.push(p);
      }
      break;
    case 'keepalive':
      if (n > 0) peers[c.at % n].keepalive = 25 - peers[c.at % n].keepalive;
      break;
    case 'reorder':
      if (n > 0) peers[c.at % n].allowed.reverse();
      break;
    case 'interface':
      return { ...m, peers, addresses: c.addresses, table: c.table, mark: c.mark };
  }
  return { ...m, peers };
}

const sorted = (xs: Iterable<string>): string[] => [...xs].sort();

describe('incremental route plan: the same routes, rules and mark as the full plan', () => {
  it('RouteIndex.build gives planRoutes + planRouting, routes in the same order', async () => {
    await fc.assert(
      fc.asyncProperty(configModel, async (m) => {
        const config = build(m);
        const reference = await planConfigRouting(config, new Yielder());
        const index = await RouteIndex.build(config, NO_YIELD);
        expect(index.plan).toEqual(reference);
        expect(sorted(index.wantedKeys())).toEqual(sorted(reference.routes));
      }),
      { numRuns: 500 },
    );
  });

  it('over random chains of changes', async () => {
    let incremental = 0;
    let withRoutes = 0;
    let full = 0;
    await fc.assert(
      fc.asyncProperty(configModel, fc.array(change, { minLength: 1, maxLength: 12 }), fc.nat(), async (start, changes, ownSeed) => {
        let model = start;
        let config = build(model);
        let index = await RouteIndex.build(config, NO_YIELD);
        for (const c of changes) {
          const nextModel = applyChange(model, c);
          const next = build(nextModel);
          const diff = diffConfig(config, next);
          const reference = await planConfigRouting(next, new Yielder());
          const delta = routeDeltaFor(index, diff);
          if (delta === undefined) {
            full++;
            index = await RouteIndex.build(next, NO_YIELD);
          } else {
            incremental++;
            if (delta.add.length + delta.drop.length > 0) withRoutes++;
            const before = new Set(index.wantedKeys());
            // The rules and the mark stay those of the index's plan: they must be the new config's.
            expect(index.plan.rules).toEqual(reference.rules);
            expect(index.plan.mark).toEqual(reference.mark);
            for (const r of delta.add) expect(before.has(r)).toBe(false);
            for (const r of delta.drop) expect(before.has(r)).toBe(true);
            const after = new Set(before);
            for (const r of delta.drop) after.delete(r);
            for (const r of delta.add) after.add(r);
            expect(sorted(after)).toEqual(sorted(reference.routes));
            // Some wanted routes ours, the others found satisfied last time (not ours).
            const ours = new Set<string>();
            const unowned = new Set<string>();
            for (const [i, r] of [...before].sort().entries()) ((ownSeed >> (i % 16)) & 1 ? unowned : ours).add(r);
            const { candidates, remove } = changeCandidates(ours, unowned, delta.add, delta.drop);
            const whole = await planRouteChanges(reference.routes, ours, [], 'tvinc0');
            expect(sorted(candidates)).toEqual(sorted(whole.add));
            expect(sorted(remove)).toEqual(sorted(whole.remove));
            index.apply(delta);
          }
          expect(sorted(index.wantedKeys())).toEqual(sorted(reference.routes));
          model = nextModel;
          config = next;
        }
      }),
      { numRuns: 1500 },
    );
    // Not vacuous: most changes went the incremental way, many of them changing routes.
    expect(incremental).toBeGreaterThan(full);
    expect(withRoutes).toBeGreaterThan(1000);
  });

  it('plans in full what it cannot derive: the interface, a full tunnel, a large change', async () => {
    const m: ConfigModel = { addresses: 0, table: 0, mark: 0, peers: [{ key: 'k0', allowed: ['10.1.0.0/16'], keepalive: 0 }] };
    const config = build(m);
    const index = await RouteIndex.build(config, NO_YIELD);
    const delta = (c: Change) => routeDeltaFor(index, diffConfig(config, build(applyChange(m, c))));
    expect(delta({ kind: 'allowed', at: 0, allowed: ['10.2.0.0/16'] })).toEqual({
      add: ['10.2.0.0/16'],
      drop: ['10.1.0.0/16'],
      counts: new Map([
        ['10.1.0.0/16', -1],
        ['10.2.0.0/16', 1],
      ]),
    });
    expect(delta({ kind: 'keepalive', at: 0 })?.add).toEqual([]);
    expect(delta({ kind: 'allowed', at: 0, allowed: ['0.0.0.0/0'] })).toBeUndefined();
    expect(delta({ kind: 'interface', addresses: 1, table: 0, mark: 0 })).toBeUndefined();
    expect(delta({ kind: 'interface', addresses: 0, table: 4, mark: 0 })).toBeUndefined();
    expect(delta({ kind: 'interface', addresses: 0, table: 0, mark: 3 })).toBeUndefined();
    const many = Array.from({ length: 5000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`);
    expect(routeDeltaFor(index, diffConfig(config, build({ ...m, peers: [{ key: 'k1', allowed: many, keepalive: 0 }] })))).toBeUndefined();
  });
});
