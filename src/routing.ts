import { TunvpnError } from './errors.js';
import { parseCidr, formatCidr, type Cidr } from './peers/cidr.js';
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

/**
 * "a.b.c.d/n" with n in 0..32 and host bits clear, as a 32-bit number and
 * n; undefined for anything else (IPv6, or text not in canonical form).
 * Ten times cheaper than parseCidr, which matters at 50,000 prefixes.
 */
function canonicalV4(text: string): { addr: number; bits: number } | undefined {
  let addr = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  let i = 0;
  for (; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch >= 48 && ch <= 57) {
      // No leading zeros: canonical text only.
      if (digits > 0 && part === 0) return undefined;
      part = part * 10 + (ch - 48);
      if (++digits > 3 || part > 255) return undefined;
    } else if (ch === 46 || ch === 47) {
      if (digits === 0) return undefined;
      addr = addr * 256 + part;
      part = 0;
      digits = 0;
      if (ch === 47) break;
      if (++dots > 3) return undefined;
    } else return undefined;
  }
  if (dots !== 3 || i >= text.length) return undefined;
  let bits = 0;
  let bitDigits = 0;
  for (i++; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (ch < 48 || ch > 57 || (bitDigits > 0 && bits === 0)) return undefined;
    bits = bits * 10 + (ch - 48);
    if (++bitDigits > 2) return undefined;
  }
  if (bitDigits === 0 || bits > 32) return undefined;
  const hostMask = bits === 32 ? 0 : 2 ** (32 - bits) - 1;
  if (addr % (hostMask + 1) !== 0) return undefined;
  return { addr, bits };
}

/**
 * The routes the daemon adds through its interface: every peer's allowed
 * IPs, except those already covered by the interface's own addresses (the
 * kernel's connected route reaches them), deduplicated, in canonical form.
 */
export async function planRoutes(interfaceAddresses: readonly string[], allowedIPs: readonly string[], y: Slicer = NO_SLICES): Promise<string[]> {
  const connected = interfaceAddresses.map((a) => parseCidr(a));
  const connected4 = connected.filter((c) => c.family === 4).map((c) => ({ addr: (((c.bytes[0] << 24) >>> 0) + (c.bytes[1] << 16) + (c.bytes[2] << 8) + c.bytes[3]), bits: c.bits }));
  const seen = new Set<string>();
  const routes: string[] = [];
  for (const text of allowedIPs) {
    if (y.due()) await y.pause();
    let canonical: string;
    const v4 = canonicalV4(text);
    if (v4 !== undefined) {
      // Covered when the prefixes agree on the connected prefix's bits.
      if (connected4.some((c) => c.bits <= v4.bits && (c.bits === 0 || Math.floor(c.addr / 2 ** (32 - c.bits)) === Math.floor(v4.addr / 2 ** (32 - c.bits))))) continue;
      canonical = text;
    } else {
      const cidr = parseCidr(text);
      if (connected.some((c) => cidrCovers(c, cidr))) continue;
      canonical = formatCidr(cidr);
    }
    if (seen.has(canonical)) continue;
    seen.add(canonical);
    routes.push(canonical);
  }
  return routes;
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
    const prefix = kernelPrefix(r);
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

  constructor(
    private readonly ifname: string,
    private readonly opts: ip.IpOptions = {},
  ) {}

  /** Batch lines for `routes`, built in slices. */
  private async lines(op: 'add' | 'del', routes: readonly string[], y: Slicer): Promise<string[]> {
    const out: string[] = [];
    for (const r of routes) {
      out.push(ip.routeLine(op, this.ifname, r));
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
    let missing = false;
    const families = new Set<4 | 6>();
    for (const r of wanted) {
      if (!this.ours.has(r)) {
        missing = true;
        families.add(r.includes(':') ? 6 : 4);
      }
      if (y.due()) await y.pause();
    }
    const kernel = missing ? await ip.listMainRoutes(this.opts, [...families].sort()) : [];
    const plan = await planRouteChanges(wanted, this.ours, kernel, this.ifname, y);
    if (plan.conflicts.length > 0) throw new RouteConflictError(plan.conflicts[0].prefix, plan.conflicts[0].via);
    const result = await ip.runIpBatch(await this.lines('add', plan.add, y), this.opts, y);
    if (result.failed.size > 0 || result.aborted !== undefined) {
      const ok = plan.add.filter((_, i) => !result.failed.has(i));
      // An aborted batch: which lines ran is unknown, so delete all of them
      // (none of these prefixes had a route on our device before).
      await this.deleteRoutes(result.aborted !== undefined ? plan.add : ok, y);
      const [first] = result.failed;
      if (first === undefined) throw new RouteApplyError(undefined, result.aborted ?? 'ip failed');
      throw new RouteApplyError(plan.add[first[0]], first[1]);
    }
    return { added: plan.add, remove: plan.remove, satisfied: plan.satisfied };
  }

  async undo(p: PendingRoutes, y: Slicer = NO_SLICES): Promise<void> {
    await this.deleteRoutes(p.added, y);
  }

  /** Never throws: returns what could not be deleted (already gone, usually). */
  async commit(p: PendingRoutes, y: Slicer = NO_SLICES): Promise<string[]> {
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
