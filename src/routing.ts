import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { TunvpnError } from './errors.js';
import { isIP } from 'node:net';
import { CANONICAL_V4_ALIGNED, parseCidr, parseIp, formatCidr, scanCanonicalV4, scannedV4Addr, scannedV4Bits, type Cidr } from './peers/cidr.js';
import type { TunvpnConfig } from './config/types.js';
import * as ip from './tun/iproute.js';
import type { KernelRoute } from './tun/iproute.js';

/** True when every address of `inner` lies inside `outer`. */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  if (outer.family !== inner.family || outer.bits > inner.bits) return false;
  for (let bit = 0; bit < outer.bits; bit++) {
    const byte = bit >> 3;
    const mask = 0x80 >> (bit & 7);
    if ((outer.bytes[byte] & mask) !== (inner.bytes[byte] & mask)) return false;
  }
  return true;
}

/** Something that lets long loops give the event loop a turn (a Yielder). */
export interface Slicer {
  due(): boolean;
  pause(): Promise<void>;
}

const NO_SLICES: Slicer = { due: () => false, pause: () => Promise.resolve() };
const EMPTY_SET: ReadonlySet<string> = new Set();

/**
 * The per-prefix half of planRoutes: whether an allowed IP wants a route
 * (not covered by one of the interface's own addresses, whose connected
 * route reaches it), and the route's prefix in canonical form. One object
 * per set of addresses; planRoutes runs every allowed IP through it, an
 * incremental plan (RouteIndex) only the changed ones.
 */
export class RouteFilter {
  private readonly connected: Cidr[];
  // Each IPv4 connected prefix as its length, its block size (2^(32-len)) and its network
  // number in blocks: a prefix at least as long is covered when it has the same block number.
  private readonly c4Bits: number[] = [];
  private readonly c4Size: number[] = [];
  private readonly c4Net: number[] = [];
  // Every IPv4 connected prefix of an octet-aligned length (/0 /8 /16 /24 /32, the usual
  // case): then a canonical prefix of such a length (CANONICAL_V4_ALIGNED) is covered when its
  // text starts with the connected network's leading octets and it is at least as long.
  // A regular expression and startsWith are native code: planRoutes runs once per change,
  // often before V8 has optimised scanCanonicalV4's loop, which then cost about 0.6 us a prefix.
  private readonly heads: string[] = [];
  private readonly aligned: boolean;

  constructor(interfaceAddresses: readonly string[]) {
    this.connected = interfaceAddresses.map((a) => parseCidr(a));
    let aligned = true;
    for (const c of this.connected) {
      if (c.family !== 4) continue;
      const size = 2 ** (32 - c.bits);
      this.c4Bits.push(c.bits);
      this.c4Size.push(size);
      this.c4Net.push(Math.floor((((c.bytes[0] << 24) >>> 0) + (c.bytes[1] << 16) + (c.bytes[2] << 8) + c.bytes[3]) / size));
      if (c.bits % 8 !== 0) aligned = false;
      const octets = Array.from(c.bytes.subarray(0, c.bits >> 3), String);
      this.heads.push(c.bits === 32 ? `${octets.join('.')}/` : octets.map((o) => `${o}.`).join(''));
    }
    this.aligned = aligned;
  }

  /** The canonical prefix of the route `text` wants, or undefined when a connected route covers it. */
  route(text: string): string | undefined {
    const { c4Bits, heads } = this;
    if (this.aligned && CANONICAL_V4_ALIGNED.test(text)) {
      const n = text.length;
      const last = text.charCodeAt(n - 1) - 48;
      const tens = text.charCodeAt(n - 2);
      const bits = tens === 47 ? last : (tens - 48) * 10 + last;
      for (let k = 0; k < heads.length; k++) {
        if (c4Bits[k] <= bits && text.startsWith(heads[k])) return undefined;
      }
      return text;
    }
    if (scanCanonicalV4(text)) {
      for (let k = 0; k < c4Bits.length; k++) {
        if (c4Bits[k] <= scannedV4Bits && Math.floor(scannedV4Addr / this.c4Size[k]) === this.c4Net[k]) return undefined;
      }
      return text;
    }
    const cidr = parseCidr(text);
    if (this.connected.some((c) => cidrCovers(c, cidr))) return undefined;
    return formatCidr(cidr);
  }
}

/**
 * The routes the daemon adds through its interface: every peer's allowed
 * IPs, except those already covered by the interface's own addresses (the
 * kernel's connected route reaches them), deduplicated, in canonical form.
 */
export async function planRoutes(interfaceAddresses: readonly string[], allowedIPs: readonly string[], y: Slicer = NO_SLICES): Promise<string[]> {
  const filter = new RouteFilter(interfaceAddresses);
  const seen = new Set<string>();
  const routes: string[] = [];
  for (const text of allowedIPs) {
    if (y.due()) await y.pause();
    const canonical = filter.route(text);
    if (canonical === undefined || seen.has(canonical)) continue;
    seen.add(canonical);
    routes.push(canonical);
  }
  return routes;
}

/**
 * A route as the daemon keeps it: the prefix alone for the main table (as
 * before tables existed), "prefix table N" for any other table. One string
 * per route keeps the owned set a Set<string> and the status output short.
 */
export function routeKey(prefix: string, table: number): string {
  return table === ip.MAIN_TABLE ? prefix : `${prefix} table ${table}`;
}

export function parseRouteKey(key: string): { prefix: string; table: number } {
  const at = key.indexOf(' table ');
  return at < 0 ? { prefix: key, table: ip.MAIN_TABLE } : { prefix: key.slice(0, at), table: Number(key.slice(at + 7)) };
}

/** The table wg-quick uses for a full tunnel when no fwmark is set (and the mark then given to the sockets). */
export const FULL_TUNNEL_TABLE = 51820;
/** Rule priorities of a full tunnel: suppress is looked at first, then not-fwmark, then main (32766). */
export const SUPPRESS_PRIORITY = 32764;
export const NOT_FWMARK_PRIORITY = 32765;

export function isDefaultPrefix(prefix: string): boolean {
  return prefix === '0.0.0.0/0' || prefix === '::/0';
}

/** What a table setting makes of the planned prefixes: route keys, and the rules of a full tunnel. */
export interface RoutingPlan {
  routes: string[];
  rules: ip.PolicyRule[];
  /** The mark the sockets must carry: the configured one, or the full tunnel's own. */
  mark: number;
}

/**
 * table "off": nothing; a number: every prefix into that table, no rules;
 * "auto": the main table, except default routes, which go to table
 * (fwmark || 51820) with the two rules per family that has one, and the
 * sockets then carry that mark (wg-quick's add_default).
 */
export function planRouting(prefixes: readonly string[], table: 'auto' | 'off' | number, fwmark: number): RoutingPlan {
  if (table === 'off') return { routes: [], rules: [], mark: fwmark };
  if (typeof table === 'number') return { routes: prefixes.map((p) => routeKey(p, table)), rules: [], mark: fwmark };
  const own = fwmark !== 0 ? fwmark : FULL_TUNNEL_TABLE;
  const routes: string[] = [];
  const families = new Set<4 | 6>();
  for (const p of prefixes) {
    if (isDefaultPrefix(p)) {
      routes.push(routeKey(p, own));
      families.add(p.includes(':') ? 6 : 4);
    } else routes.push(p);
  }
  const rules: ip.PolicyRule[] = [];
  for (const family of [4, 6] as const) {
    if (!families.has(family)) continue;
    rules.push({ family, priority: NOT_FWMARK_PRIORITY, kind: 'not-fwmark', mark: own, table: own });
    rules.push({ family, priority: SUPPRESS_PRIORITY, kind: 'suppress', mark: 0, table: ip.MAIN_TABLE });
  }
  return { routes, rules, mark: rules.length > 0 ? own : fwmark };
}

/** A change of the wanted routes, from RouteIndex.delta: applied to the index at commit. */
export interface RouteDelta {
  /** Route keys wanted now and not before. */
  add: string[];
  /** Route keys wanted before and not now. */
  drop: string[];
  /** Canonical prefix: the change in the number of peers that want its route. */
  counts: Map<string, number>;
}

/** The allowed IPs of one peer, as the index reads them (a PeerConfig has them). */
interface AllowedIPsOf {
  readonly allowedIPs: readonly string[];
}

/**
 * Past this many allowed IPs in a change, an incremental plan is not worth
 * it (the full plan is sliced, and costs about 1 us per prefix anyway).
 */
export const DELTA_LIMIT = 4096;

/**
 * The wanted routes of the effective config, kept so that a change can be
 * planned from its diff instead of re-planning every prefix (a reload that
 * moves one of 10,000 routes re-planned all 10,000: 15-26 ms). It counts,
 * per canonical prefix, the peers whose allowed IPs want its route, for
 * one set of interface addresses, table and fwmark; the routes wanted are
 * then the prefixes with a count above 0, as route keys (planRouting), and
 * the rules and mark are those of the plan it was built from. Counts per
 * peer, not per entry: a peer that lists a prefix twice (or in two
 * spellings) wants it once, so whether a peer changed is a question of
 * its set of allowed IPs, which is what the diff compares.
 */
export class RouteIndex {
  private readonly filter: RouteFilter;
  private readonly wanting: Map<string, number>;

  private constructor(
    readonly addresses: readonly string[],
    readonly table: 'auto' | 'off' | number,
    readonly fwmark: number,
    /** The full plan this index was built from; its routes are not kept up to date by apply(). */
    readonly plan: RoutingPlan,
    filter: RouteFilter,
    wanting: Map<string, number>,
  ) {
    this.filter = filter;
    this.wanting = wanting;
  }

  /** The full plan of `config` (planRoutes, then planRouting: the same routes in the same order) and its index, in slices. */
  static async build(config: Pick<TunvpnConfig, 'interface' | 'peers'>, y: Slicer = NO_SLICES): Promise<RouteIndex> {
    const { addresses, table, fwmark } = config.interface;
    const filter = new RouteFilter(addresses);
    const wanting = new Map<string, number>();
    const prefixes: string[] = [];
    for (const p of config.peers) {
      const list = p.allowedIPs;
      if (list.length === 1) {
        const c = filter.route(list[0]);
        if (c !== undefined) {
          const n = wanting.get(c);
          if (n === undefined) prefixes.push(c);
          wanting.set(c, (n ?? 0) + 1);
        }
      } else if (list.length > 1) {
        const own = new Set<string>();
        // Per prefix: one peer can have 50,000.
        for (const text of list) {
          const c = filter.route(text);
          if (c !== undefined && !own.has(c)) {
            own.add(c);
            const n = wanting.get(c);
            if (n === undefined) prefixes.push(c);
            wanting.set(c, (n ?? 0) + 1);
          }
          if (y.due()) await y.pause();
        }
      }
      if (y.due()) await y.pause();
    }
    return new RouteIndex(addresses, table, fwmark, planRouting(prefixes, table, fwmark), filter, wanting);
  }

  /** The number of prefixes with a route wanted (for tests). */
  get size(): number {
    return this.wanting.size;
  }

  /**
   * What the wanted routes become when the peers `before` are replaced by
   * `after` (removed, and a changed peer's old allowed IPs, against added,
   * and its new ones); undefined when the change must be planned in full:
   * more than DELTA_LIMIT allowed IPs, a full tunnel's default route
   * (its rules and mark depend on it) or counts that do not add up (a
   * `before` this index did not count). The interface's addresses, table
   * and fwmark are the caller's to compare: any change there is a full plan.
   */
  delta(before: Iterable<AllowedIPsOf>, after: Iterable<AllowedIPsOf>): RouteDelta | undefined {
    const counts = new Map<string, number>();
    let seen = 0;
    const tally = (peers: Iterable<AllowedIPsOf>, sign: 1 | -1): boolean => {
      for (const p of peers) {
        seen += p.allowedIPs.length;
        if (seen > DELTA_LIMIT) return false;
        const own = p.allowedIPs.length > 1 ? new Set<string>() : undefined;
        for (const text of p.allowedIPs) {
          const c = this.filter.route(text);
          if (c === undefined || own?.has(c) === true) continue;
          own?.add(c);
          counts.set(c, (counts.get(c) ?? 0) + sign);
        }
      }
      return true;
    };
    if (!tally(before, -1) || !tally(after, 1)) return undefined;
    const delta: RouteDelta = { add: [], drop: [], counts };
    for (const [prefix, n] of counts) {
      if (n === 0) continue;
      const was = this.wanting.get(prefix) ?? 0;
      const now = was + n;
      if (now < 0) return undefined;
      if (was > 0 && now > 0) continue;
      // A full tunnel's default route brings or takes its rules (and the sockets' mark).
      if (this.table === 'auto' && isDefaultPrefix(prefix)) return undefined;
      const key = this.keyOf(prefix);
      if (key !== undefined) (now > 0 ? delta.add : delta.drop).push(key);
    }
    return delta;
  }

  /** Takes a committed delta in. */
  apply(delta: RouteDelta): void {
    for (const [prefix, n] of delta.counts) {
      if (n === 0) continue;
      const now = (this.wanting.get(prefix) ?? 0) + n;
      if (now > 0) this.wanting.set(prefix, now);
      else this.wanting.delete(prefix);
    }
  }

  /** The route key of a canonical prefix, as planRouting makes it (undefined for table "off"). */
  private keyOf(prefix: string): string | undefined {
    const table = this.table;
    if (table === 'off') return undefined;
    if (typeof table === 'number') return routeKey(prefix, table);
    return isDefaultPrefix(prefix) ? routeKey(prefix, this.fwmark !== 0 ? this.fwmark : FULL_TUNNEL_TABLE) : prefix;
  }

  /** The prefixes wanted now, as route keys (for tests: the set a full plan of the same config gives). */
  wantedKeys(): string[] {
    const out: string[] = [];
    for (const p of this.wanting.keys()) {
      const key = this.keyOf(p);
      if (key !== undefined) out.push(key);
    }
    return out;
  }

  /**
   * Of `keys`, the one a full plan of `config` (same addresses, table and
   * fwmark) lists first: the order in which an error names one of several
   * conflicts. Linear in the config: for the error path only.
   */
  firstInPlanOrder(config: Pick<TunvpnConfig, 'peers'>, keys: readonly string[]): string | undefined {
    const wanted = new Set(keys);
    for (const p of config.peers) {
      for (const text of p.allowedIPs) {
        const c = this.filter.route(text);
        const key = c === undefined ? undefined : this.keyOf(c);
        if (key !== undefined && wanted.has(key)) return key;
      }
    }
    return undefined;
  }
}

/** A wanted route that another device (or a route without one) already has. */
export class RouteConflictError extends TunvpnError {
  readonly prefix: string;
  /** "dev eth0", or the route's type ("blackhole") when it has no device. */
  readonly via: string;

  constructor(prefix: string, via: string) {
    super('ROUTE_EXISTS', `route ${prefix} exists via ${via}`);
    this.prefix = prefix;
    this.via = via;
  }
}

/** `ip` refused a route for another reason (or a race made it exist after we looked). */
export class RouteApplyError extends TunvpnError {
  readonly prefix: string | undefined;
  /** True when the kernel said the route exists (EEXIST). */
  readonly exists: boolean;

  constructor(prefix: string | undefined, reason: string) {
    super('ROUTE_FAILED', prefix === undefined ? `routes could not be added: ${reason}` : `route ${prefix} could not be added: ${reason}`);
    this.prefix = prefix;
    this.exists = /File exists/i.test(reason);
  }
}

export interface RoutePlan {
  /** Wanted, not ours, and no route for the prefix anywhere: to add (and then own). */
  add: string[];
  /** Ours and no longer wanted: to delete. */
  remove: string[];
  /** Wanted, not ours, already routed through our device (the kernel's fe80::/64, an operator's): left alone, never deleted. */
  satisfied: string[];
  /** Wanted, not ours, routed some other way: the change must fail. */
  conflicts: { prefix: string; via: string }[];
}

function kernelPrefix(r: KernelRoute): string {
  // ip prints IPv6 as inet_ntop does (RFC 5952 like formatCidr) except
  // IPv4-mapped tails; only those need parsing.
  return r.family === 6 && r.dst.includes('.') ? formatCidr(parseCidr(r.dst)) : r.dst;
}

/**
 * Pure: what to add and delete so that the routes through `ifname` cover
 * `wanted`, given the routes we own and the main table as it is.
 */
export async function planRouteChanges(
  wanted: readonly string[],
  owned: ReadonlySet<string>,
  kernel: readonly KernelRoute[],
  ifname: string,
  y: Slicer = NO_SLICES,
): Promise<RoutePlan> {
  // Every loop here is sliced: 50,000 wanted routes are tens of milliseconds of Set work.
  const wantedSet = new Set<string>();
  const candidates = new Set<string>();
  for (const r of wanted) {
    wantedSet.add(r);
    if (!owned.has(r)) candidates.add(r);
    if (y.due()) await y.pause();
  }
  const onOurs = new Set<string>();
  const elsewhere = new Map<string, string>();
  for (const r of kernel) {
    if (candidates.size === 0) break;
    if (y.due()) await y.pause();
    const prefix = routeKey(kernelPrefix(r), r.table ?? ip.MAIN_TABLE);
    if (!candidates.has(prefix)) continue;
    if (r.dev === ifname) onOurs.add(prefix);
    else if (!elsewhere.has(prefix)) elsewhere.set(prefix, r.dev === undefined ? r.type : `dev ${r.dev}`);
  }
  const plan: RoutePlan = { add: [], remove: [], satisfied: [], conflicts: [] };
  for (const r of candidates) {
    if (onOurs.has(r)) plan.satisfied.push(r);
    else {
      const via = elsewhere.get(r);
      if (via === undefined) plan.add.push(r);
      else plan.conflicts.push({ prefix: r, via });
    }
    if (y.due()) await y.pause();
  }
  for (const r of owned) {
    if (!wantedSet.has(r)) plan.remove.push(r);
    if (y.due()) await y.pause();
  }
  return plan;
}

/**
 * Up to this many missing routes are looked up one by one (`ip route show
 * exact P`, all at once) instead of listing their tables: a reload that
 * moves one prefix on a hub of 10,000 routes otherwise lists all 10,000
 * (ip -j prints 0.7 MB in 40-50 ms here, and its JSON.parse takes another
 * 11 ms on the daemon's thread) to learn about one. Each lookup is one
 * process; past a handful the listing is cheaper.
 */
export const EXACT_LOOKUPS = 8;

/**
 * The routes for exactly `key`'s prefix in its table, any device or type,
 * as listTableRoutes would have given them for that prefix (a table that
 * does not exist has none).
 */
async function lookupExact(key: string, opts: ip.IpOptions): Promise<KernelRoute[]> {
  const { prefix, table } = parseRouteKey(key);
  const family = prefix.includes(':') ? 6 : 4;
  let text: string;
  try {
    // The family must be given: without it ip matches an IPv6 prefix against nothing.
    text = await ip.runIp(['-j', `-${family}`, 'route', 'show', 'table', table === ip.MAIN_TABLE ? 'main' : String(table), 'exact', prefix], opts);
  } catch (err) {
    if (err instanceof ip.IpCommandError && /table does not exist/i.test(err.stderr)) return [];
    throw err;
  }
  const parsed: unknown = text.trim() ? JSON.parse(text) : [];
  if (!Array.isArray(parsed)) return [];
  const out: KernelRoute[] = [];
  for (const r of parsed as unknown[]) {
    if (typeof r !== 'object' || r === null) continue;
    const { dev, type } = r as { dev?: unknown; type?: unknown };
    // `exact` lists only this prefix, whatever form ip prints it in (a bare address for a /32).
    const route: KernelRoute = { dst: prefix, family, type: typeof type === 'string' ? type : 'unicast', table };
    if (typeof dev === 'string') route.dev = dev;
    out.push(route);
  }
  return out;
}

/**
 * The routes an incremental prepare looks up (`candidates`: wanted, not
 * ours) and deletes at commit (`remove`: ours, no longer wanted), from the
 * routes we own, those the last commit wanted and found satisfied
 * (`unowned`), and the change: `add` newly wanted, `drop` no longer. The
 * same sets as planRouteChanges with the whole new wanted list, as long as
 * ours and unowned together are what the last commit wanted.
 */
export function changeCandidates(
  ours: ReadonlySet<string>,
  unowned: ReadonlySet<string>,
  add: readonly string[],
  drop: readonly string[],
): { candidates: string[]; remove: string[] } {
  const dropped = new Set(drop);
  const candidates: string[] = [];
  for (const r of unowned) if (!dropped.has(r)) candidates.push(r);
  for (const r of add) if (!ours.has(r) && !unowned.has(r)) candidates.push(r);
  const remove: string[] = [];
  for (const r of drop) if (ours.has(r)) remove.push(r);
  return { candidates, remove };
}

/** Routes added by prepare(), waiting for commit() or undo(). */
export interface PendingRoutes {
  readonly added: readonly string[];
  readonly remove: readonly string[];
  readonly satisfied: readonly string[];
}

/**
 * The routes through our interface that the daemon added, and only those:
 * it never deletes a route it did not add. Changes are two-phase so a
 * configuration change can be all or nothing: prepare() adds what is
 * missing (in one `ip -batch` process) or fails having added nothing;
 * commit() takes them as ours and deletes what is no longer wanted; undo()
 * deletes what prepare() added.
 */
export class OwnedRoutes {
  private readonly ours = new Set<string>();
  /**
   * The routes the last commit wanted that are not ours (found satisfied:
   * the kernel's fe80::/64, an operator's route on our device). Every
   * prepare looks at them again (one may have gone: then it is added and
   * becomes ours, or another device may have taken the prefix).
   */
  private unowned = new Set<string>();

  constructor(
    private readonly ifname: string,
    private readonly opts: ip.IpOptions = {},
  ) {}

  /** Batch lines for `routes`, built in slices. */
  private async lines(op: 'add' | 'del', routes: readonly string[], y: Slicer): Promise<string[]> {
    const out: string[] = [];
    for (const r of routes) {
      const { prefix, table } = parseRouteKey(r);
      out.push(ip.routeLine(op, this.ifname, prefix, table));
      if (y.due()) await y.pause();
    }
    return out;
  }

  get owned(): ReadonlySet<string> {
    return this.ours;
  }

  /**
   * Adds the wanted routes that are missing. Throws RouteConflictError for
   * a prefix another device routes, RouteApplyError when `ip` refuses a
   * line; either way nothing stays added.
   */
  async prepare(wanted: readonly string[], y: Slicer = NO_SLICES): Promise<PendingRoutes> {
    const missing: string[] = [];
    for (const r of wanted) {
      if (!this.ours.has(r)) missing.push(r);
      if (y.due()) await y.pause();
    }
    const kernel = await this.kernelRoutesFor(missing);
    const plan = await planRouteChanges(wanted, this.ours, kernel, this.ifname, y);
    return this.addPlanned(plan, y);
  }

  /**
   * prepare() for a change given as its difference (RouteIndex.delta):
   * `add` the route keys newly wanted, `drop` those no longer wanted, the
   * rest wanted as before. The same outcome as prepare() with the whole
   * new wanted list, in work proportional to the change: what prepare()
   * would look at is what is wanted and not ours, which is the wanted
   * routes the last commit found satisfied (not ours), less `drop`, plus
   * `add` (ours is always a subset of what the last commit wanted). So
   * those are looked up again as prepare() would, and only `drop` can
   * hold routes of ours to delete. `firstConflict` picks the conflict to
   * report when there are several (prepare() reports the first in the
   * wanted list's order, which this does not have).
   */
  async prepareChange(
    add: readonly string[],
    drop: readonly string[],
    y: Slicer = NO_SLICES,
    firstConflict: (conflicts: readonly { prefix: string; via: string }[]) => { prefix: string; via: string } = (c) => c[0],
  ): Promise<PendingRoutes> {
    const { candidates, remove } = changeCandidates(this.ours, this.unowned, add, drop);
    const kernel = await this.kernelRoutesFor(candidates);
    const plan = await planRouteChanges(candidates, EMPTY_SET, kernel, this.ifname, y);
    plan.remove = remove;
    if (plan.conflicts.length > 1) plan.conflicts = [firstConflict(plan.conflicts)];
    return this.addPlanned(plan, y);
  }

  /**
   * The routes in the tables of `missing` (wanted, not ours): each table
   * (and family in it) listed once, unless so few are missing that asking
   * about each is cheaper (EXACT_LOOKUPS).
   */
  private async kernelRoutesFor(missing: readonly string[]): Promise<KernelRoute[]> {
    const kernel: KernelRoute[] = [];
    if (missing.length === 0) return kernel;
    if (missing.length <= EXACT_LOOKUPS) {
      for (const routes of await Promise.all(missing.map((r) => lookupExact(r, this.opts)))) kernel.push(...routes);
      return kernel;
    }
    const tables = new Map<number, Set<4 | 6>>();
    for (const r of missing) {
      const { prefix, table } = parseRouteKey(r);
      let families = tables.get(table);
      if (families === undefined) {
        families = new Set();
        tables.set(table, families);
      }
      families.add(prefix.includes(':') ? 6 : 4);
    }
    for (const [table, families] of tables) kernel.push(...(await ip.listTableRoutes(table, this.opts, [...families].sort())));
    return kernel;
  }

  /** Fails on a conflict, else adds the planned routes in one batch; on a failure deletes what it added. */
  private async addPlanned(plan: RoutePlan, y: Slicer): Promise<PendingRoutes> {
    if (plan.conflicts.length > 0) {
      const { prefix, table } = parseRouteKey(plan.conflicts[0].prefix);
      throw new RouteConflictError(prefix, table === ip.MAIN_TABLE ? plan.conflicts[0].via : `${plan.conflicts[0].via} in table ${table}`);
    }
    const result = await ip.runIpBatch(await this.lines('add', plan.add, y), this.opts, y);
    if (result.failed.size > 0 || result.aborted !== undefined) {
      const ok = plan.add.filter((_, i) => !result.failed.has(i));
      // An aborted batch: which lines ran is unknown, so delete all of them
      // (none of these prefixes had a route on our device before).
      await this.deleteRoutes(result.aborted !== undefined ? plan.add : ok, y);
      const [first] = result.failed;
      if (first === undefined) throw new RouteApplyError(undefined, result.aborted ?? 'ip failed');
      throw new RouteApplyError(parseRouteKey(plan.add[first[0]]).prefix, first[1]);
    }
    return { added: plan.add, remove: plan.remove, satisfied: plan.satisfied };
  }

  async undo(p: PendingRoutes, y: Slicer = NO_SLICES): Promise<void> {
    await this.deleteRoutes(p.added, y);
  }

  /** Never throws: returns what could not be deleted (already gone, usually). */
  async commit(p: PendingRoutes, y: Slicer = NO_SLICES): Promise<string[]> {
    // What is wanted and not ours is now exactly what prepare found satisfied (it throws on a conflict).
    this.unowned = new Set(p.satisfied);
    for (const r of p.added) {
      this.ours.add(r);
      if (y.due()) await y.pause();
    }
    for (const r of p.remove) {
      this.ours.delete(r);
      if (y.due()) await y.pause();
    }
    return this.deleteRoutes(p.remove, y);
  }

  /** Deletes every route we own (at stop). Never throws. */
  async removeAll(y: Slicer = NO_SLICES): Promise<string[]> {
    const all = [...this.ours];
    this.ours.clear();
    this.unowned = new Set();
    return this.deleteRoutes(all, y);
  }

  /** Deletes routes through our interface; returns "prefix: reason" for the ones that failed. */
  private async deleteRoutes(routes: readonly string[], y: Slicer): Promise<string[]> {
    if (routes.length === 0) return [];
    try {
      const result = await ip.runIpBatch(await this.lines('del', routes, y), this.opts, y);
      const failures = [...result.failed].map(([i, why]) => `${routes[i]}: ${why}`);
      if (result.aborted !== undefined) failures.push(result.aborted);
      return failures;
    } catch (err) {
      return [(err as Error).message];
    }
  }
}

/** `ip rule` refused one of a full tunnel's rules. */
export class RuleApplyError extends TunvpnError {
  readonly exists: boolean;

  constructor(rule: ip.PolicyRule, reason: string) {
    super('RULE_FAILED', `rule ${describeRule(rule)} could not be added: ${reason}`);
    this.exists = /File exists/i.test(reason);
  }
}

export function describeRule(r: ip.PolicyRule): string {
  return r.kind === 'suppress'
    ? `-${r.family} priority ${r.priority} table main suppress_prefixlength 0`
    : `-${r.family} priority ${r.priority} not fwmark ${r.mark} table ${r.table}`;
}

function ruleKey(r: ip.PolicyRule): string {
  return `${r.family}/${r.priority}/${r.kind}/${r.mark}/${r.table}`;
}

function isPolicyRule(v: unknown): v is ip.PolicyRule {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    (r.family === 4 || r.family === 6) &&
    typeof r.priority === 'number' &&
    (r.kind === 'not-fwmark' || r.kind === 'suppress') &&
    typeof r.mark === 'number' &&
    typeof r.table === 'number'
  );
}

export interface PendingRules {
  readonly added: readonly ip.PolicyRule[];
  readonly wanted: readonly ip.PolicyRule[];
}

/**
 * The policy rules of a full tunnel that the daemon added, and only those.
 * Rules outlive the interface (routes through a deleted device go with
 * it, rules do not), so after a crash the next start must find the
 * previous run's, two ways:
 *  - recorded: every change first writes the rules it may add to
 *    STATE_DIR/IFNAME.rules.json (before adding them, so a crash in between
 *    leaves them recorded); start deletes exactly the recorded rules that
 *    `ip rule show` still lists with the same priority, selector and table.
 *    Best effort: under the systemd units /run is read-only
 *    (ProtectSystem=strict) unless the unit has RuntimeDirectory=tunvpn.
 *  - derived: a rule the new run wants (same priority, `not fwmark M`,
 *    table T) that exists already while table T has no route at all is
 *    a leftover: a live full tunnel has its default route there. Then the
 *    suppress rule of that family at our priority goes too.
 * A rule someone else added with other values is never touched, nor one
 * whose table still routes (adding ours then fails with EEXIST: two full
 * tunnels cannot share a table).
 */
export class OwnedRules {
  private ours: ip.PolicyRule[] = [];
  private readonly recordPath: string;

  constructor(
    ifname: string,
    stateDir: string,
    private readonly opts: ip.IpOptions = {},
  ) {
    this.recordPath = path.join(stateDir, `${ifname}.rules.json`);
  }

  get owned(): readonly ip.PolicyRule[] {
    return this.ours;
  }

  get record(): string {
    return this.recordPath;
  }

  /** Set when the record could not be written (read-only /run): the reason, once. */
  recordProblem: string | undefined;
  /** Why net.ipv4.conf.all.src_valid_mark could not be set (the units' ProtectKernelTunables=), if so. */
  srcValidMarkProblem: string | undefined;

  private async writeRecord(rules: readonly ip.PolicyRule[]): Promise<void> {
    try {
      await this.writeRecordOrThrow(rules);
    } catch (err) {
      this.recordProblem ??= (err as Error).message;
    }
  }

  private async writeRecordOrThrow(rules: readonly ip.PolicyRule[]): Promise<void> {
    if (rules.length === 0) {
      await fs.rm(this.recordPath, { force: true });
      return;
    }
    await fs.mkdir(path.dirname(this.recordPath), { recursive: true, mode: 0o755 });
    const tmp = `${this.recordPath}.${process.pid}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(rules) + '\n', { mode: 0o644 });
    await fs.rename(tmp, this.recordPath);
  }

  /**
   * At start: deletes the rules an earlier run of this interface left
   * behind: those it recorded, and those of `wanted` that are stale (see
   * the class comment). Returns them.
   */
  async removeLeftovers(wanted: readonly ip.PolicyRule[] = []): Promise<ip.PolicyRule[]> {
    let parsed: unknown = [];
    try {
      parsed = JSON.parse(await fs.readFile(this.recordPath, 'utf8'));
    } catch {
      /* no record (or not readable): only the derived leftovers */
    }
    const candidates = Array.isArray(parsed) ? parsed.filter(isPolicyRule) : [];
    for (const r of wanted) {
      if (r.kind !== 'not-fwmark') continue;
      try {
        if (!(await ip.ruleExists(r, this.opts))) continue;
        if ((await ip.listTableRoutes(r.table, this.opts, [r.family])).length > 0) continue;
      } catch {
        continue;
      }
      candidates.push(r);
      const suppress = wanted.find((w) => w.kind === 'suppress' && w.family === r.family);
      if (suppress) candidates.push(suppress);
    }
    const removed: ip.PolicyRule[] = [];
    const seen = new Set<string>();
    for (const r of candidates) {
      if (seen.has(ruleKey(r))) continue;
      seen.add(ruleKey(r));
      try {
        if (await ip.ruleExists(r, this.opts)) {
          await ip.delRule(r, this.opts);
          removed.push(r);
        }
      } catch {
        /* an invalid record entry or a rule already gone: nothing of ours to delete */
      }
    }
    await fs.rm(this.recordPath, { force: true }).catch(() => undefined);
    return removed;
  }

  /** Adds the wanted rules we do not have; on a failure deletes what it added and throws RuleApplyError. */
  async prepare(wanted: readonly ip.PolicyRule[]): Promise<PendingRules> {
    const have = new Set(this.ours.map(ruleKey));
    const missing = wanted.filter((r) => !have.has(ruleKey(r)));
    if (missing.length === 0) return { added: [], wanted };
    const union = [...this.ours, ...missing];
    await this.writeRecord(union);
    const added: ip.PolicyRule[] = [];
    try {
      for (const r of missing) {
        try {
          await ip.addRule(r, this.opts);
        } catch (err) {
          const why = err instanceof ip.IpCommandError ? err.stderr.trim() || err.message : (err as Error).message;
          throw new RuleApplyError(r, why);
        }
        added.push(r);
        if (r.family === 4 && r.kind === 'not-fwmark' && this.opts.netns === undefined) this.srcValidMarkProblem = await enableSrcValidMark();
      }
    } catch (err) {
      await this.deleteRules(added);
      await this.writeRecord(this.ours);
      throw err;
    }
    return { added, wanted };
  }

  async undo(p: PendingRules): Promise<void> {
    await this.deleteRules(p.added);
    await this.writeRecord(this.ours);
  }

  /** Takes the added rules as ours, deletes ours no longer wanted. Never throws: returns failures. */
  async commit(p: PendingRules): Promise<string[]> {
    const want = new Set(p.wanted.map(ruleKey));
    const stale = this.ours.filter((r) => !want.has(ruleKey(r)));
    const failures = await this.deleteRules(stale);
    const byKey = new Map<string, ip.PolicyRule>();
    for (const r of [...this.ours, ...p.added]) if (want.has(ruleKey(r))) byKey.set(ruleKey(r), r);
    this.ours = [...byKey.values()];
    await this.writeRecord(this.ours);
    return failures;
  }

  /** At stop. Never throws. */
  async removeAll(): Promise<string[]> {
    const all = this.ours;
    this.ours = [];
    const failures = await this.deleteRules(all);
    await this.writeRecord([]);
    return failures;
  }

  private async deleteRules(rules: readonly ip.PolicyRule[]): Promise<string[]> {
    const failures: string[] = [];
    for (const r of rules) {
      await ip.delRule(r, this.opts).catch((err: unknown) => failures.push(`${describeRule(r)}: ${(err as Error).message}`));
    }
    return failures;
  }
}

/**
 * net.ipv4.conf.all.src_valid_mark=1, as wg-quick sets it: without it the
 * reverse-path filter looks up a marked reply's source without the mark
 * and can drop it. Left set at stop (as wg-quick does): it only makes the
 * check take marks into account.
 */
async function enableSrcValidMark(): Promise<string | undefined> {
  return fs.writeFile('/proc/sys/net/ipv4/conf/all/src_valid_mark', '1\n').then(
    () => undefined,
    (err: unknown) => (err as Error).message,
  );
}

/**
 * Issue 16 item 2: an allowed prefix that covers a peer's own endpoint
 * sends the tunnel's datagrams to that peer into the tunnel itself (a
 * loop: nothing gets through), unless a full tunnel keeps them out: table
 * "auto" with the prefix a default route (its own table, the sockets
 * marked, `not fwmark` sending marked datagrams to the main table). Table
 * "off" adds no routes, so no loop of ours. A prefix in the main table
 * (auto and not /0, or table 254) always loops; one in another table loops
 * when rules send the datagrams there, which tunvpn cannot see: a warning
 * when no fwmark lets such rules tell them apart. Endpoints given as host
 * names are not resolved here (check touches nothing).
 *
 * Linear: each endpoint's covering prefixes, of the lengths the allowed
 * IPs actually use (usually a handful), are looked up in a map of the
 * allowed IPs, instead of every endpoint against every prefix.
 */
export function endpointLoopWarnings(config: Pick<TunvpnConfig, 'interface' | 'peers'>): string[] {
  const table = config.interface.table;
  if (table === 'off') return [];
  // No endpoint given as an address (a hub whose sites dial in): nothing can loop, and the
  // map below (20,000 field names for 10,000 peers, 11-13 ms, in the start's path) is not needed.
  if (!config.peers.some((p) => p.endpoint !== undefined && isIP(p.endpoint.host) !== 0)) return [];
  // The peer and index of each prefix, as numbers: the field name is made only for a hit.
  const owner = new Map<string, { i: number; j: number }>();
  const lengths = { 4: new Set<number>(), 6: new Set<number>() };
  config.peers.forEach((p, i) => {
    p.allowedIPs.forEach((a, j) => {
      owner.set(a, { i, j });
      lengths[a.includes(':') ? 6 : 4].add(Number(a.slice(a.indexOf('/') + 1)));
    });
  });
  const byLength = { 4: [...lengths[4]].sort((x, y) => y - x), 6: [...lengths[6]].sort((x, y) => y - x) };
  const out: string[] = [];
  config.peers.forEach((p, i) => {
    const host = p.endpoint?.host;
    if (host === undefined || isIP(host) === 0) return;
    const bytes = parseIp(host);
    const family: 4 | 6 = bytes.length === 4 ? 4 : 6;
    for (const bits of byLength[family]) {
      const masked = Uint8Array.from(bytes, (b, k) => (k * 8 >= bits ? 0 : k * 8 + 8 <= bits ? b : b & (0xff << (8 - (bits - k * 8)))));
      const prefix = formatCidr({ family, bytes: masked, bits });
      const o = owner.get(prefix);
      if (o === undefined) continue;
      const where = `peers[${o.i}].allowedIPs[${o.j}]: ${prefix} covers peers[${i}].endpoint ${host}`;
      if (table === 'auto') {
        if (bits !== 0)
          out.push(
            `${where}: the tunnel's own datagrams to that peer would be routed into the tunnel (a loop); only a default route (${family === 4 ? '0.0.0.0/0' : '::/0'}) with table "auto" is kept off it (full tunnel), so exclude the endpoint from this prefix`,
          );
      } else if (table === ip.MAIN_TABLE) {
        out.push(
          `${where}: with table 254 (main) the tunnel's own datagrams to that peer are routed into the tunnel (a loop); use table "auto" for a full tunnel`,
        );
      } else if (config.interface.fwmark === 0) {
        out.push(
          `${where}: routes go to table ${table}; if your rules send the tunnel's own datagrams there they loop, and with fwmark 0 no rule can tell them apart (set interface.fwmark and a rule "not fwmark M table ${table}")`,
        );
      }
      return;
    }
  });
  return out;
}
