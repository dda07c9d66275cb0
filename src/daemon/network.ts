/**
 * Network sync: makes the interface's MTU, addresses, routes and policy
 * rules match the config, at start and in the apply path's prepare and
 * commit steps (docs/apply.md), and removes what it added at stop.
 * `NetworkSync` holds what the daemon owns (OwnedRoutes, OwnedRules, from
 * src/routing.ts); the orchestrator (src/daemon.ts) decides when each
 * step runs, this file how. Sockets (port, fwmark) are not here: they are
 * the transport's, which the orchestrator swaps.
 */
import type { ConfigDiff, PeerConfig, TunvpnConfig } from '../config/index.js';
import { UAPI_EEXIST, UAPI_EINVAL } from '../control/uapi-types.js';
import type { Yielder } from '../cooperative.js';
import { TunvpnError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  OwnedRoutes,
  OwnedRules,
  RouteApplyError,
  RouteConflictError,
  RouteIndex,
  RuleApplyError,
  describeRule,
  planRoutes,
  planRouting,
  type PendingRoutes,
  type PendingRules,
  type RouteDelta,
  type RoutingPlan,
} from '../routing.js';
import type * as iproute from '../tun/iproute.js';
import * as ip from '../tun/iproute.js';
import { ApplyError } from './apply-error.js';

// The config check `tunvpn check` also runs; the daemon logs its warnings at start and after a reload.
export { endpointLoopWarnings } from '../routing.js';

/**
 * The routes of an apply plan: the whole wanted list, with the index of
 * the new config (a full plan), or only what changes (planned from the
 * diff against the index of the effective config).
 */
export type RoutesPlan = { kind: 'full'; wanted: string[]; index: RouteIndex } | { kind: 'delta'; delta: RouteDelta };

/** The network part of an apply plan: computed in plan(), nothing touched yet. */
export interface NetworkPlan {
  routes: RoutesPlan;
  /** The policy rules the new config wants (a full tunnel's). */
  rules: iproute.PolicyRule[];
  /** The mark the sockets must carry (planRouting). */
  mark: number;
  addressesToAdd: string[];
  addressesToDelete: string[];
}

/** Routes and rules added by prepare, which commit keeps and the old ones it deletes. */
export interface PreparedNetwork {
  routes: PendingRoutes;
  rules: PendingRules;
  /** What the route index becomes at commit. */
  plan: RoutesPlan;
  next: TunvpnConfig;
}

/** Interface fields whose change re-plans every route: they change which prefixes are routed, where, or the full tunnel's rules. */
const GLOBAL_FIELDS = ['addresses', 'table', 'fwmark'];

/**
 * The change of the wanted routes that `diff` makes, against `index` (of
 * the diff's old config); undefined when it must be planned in full: an
 * interface address, the table or the fwmark changed, or RouteIndex.delta
 * says so. Pure: test/routing-incremental.test.ts holds it to the full plan.
 */
export function routeDeltaFor(index: RouteIndex, diff: ConfigDiff): RouteDelta | undefined {
  if (diff.interfaceChanged.some((f) => GLOBAL_FIELDS.includes(f))) return undefined;
  const before: PeerConfig[] = [...diff.removed];
  const after: PeerConfig[] = [...diff.added];
  for (const c of diff.changed) {
    if (!c.fields.includes('allowedIPs')) continue;
    before.push(c.before);
    after.push(c.after);
  }
  return index.delta(before, after);
}

/** The routes and rules a config wants, and the mark its sockets need (planRouting), in slices. */
export async function planConfigRouting(config: TunvpnConfig, y: Yielder): Promise<RoutingPlan> {
  return planRouting(await planRoutesYielding(config, y), config.interface.table, config.interface.fwmark);
}

export class NetworkSync {
  private readonly name: string;
  private readonly log: Logger;
  private readonly routes: OwnedRoutes;
  private readonly rules: OwnedRules;
  /** The wanted routes of `indexed`, the effective config (its rules and mark), for plans from a diff. */
  private index: RouteIndex | undefined;
  private indexed: TunvpnConfig | undefined;

  /** `stateDir`: where OwnedRules records the rules it adds (IFNAME.rules.json). */
  constructor(ifname: string, stateDir: string, log: Logger) {
    this.name = ifname;
    this.log = log;
    this.routes = new OwnedRoutes(ifname);
    this.rules = new OwnedRules(ifname, stateDir);
  }

  /** Routes through our interface that the daemon added (and will delete). */
  get ownedRoutes(): string[] {
    return [...this.routes.owned];
  }

  /** Policy rules the daemon added, as `ip rule` arguments. */
  get ownedRules(): string[] {
    return this.rules.owned.map(describeRule);
  }

  /** At start: MTU, addresses, up, then routes and rules (leftovers of a crashed run removed first). */
  async configureInterface(config: TunvpnConfig, y: Yielder): Promise<void> {
    const name = this.name;
    await ip.setMtu(name, config.interface.mtu);
    for (const addr of config.interface.addresses) await ip.addAddress(name, addr);
    await ip.setUp(name);
    const index = await RouteIndex.build(config, y);
    const routing = index.plan;
    // A run that crashed (kill -9) left its rules: the interface, and every
    // route through it, went with the process; rules do not.
    for (const r of await this.rules.removeLeftovers(routing.rules))
      this.log.warn({ rule: describeRule(r) }, 'removed a rule an earlier run of this interface left behind');
    let pending: PendingRoutes;
    try {
      pending = await this.routes.prepare(routing.routes, y);
    } catch (err) {
      if (err instanceof RouteConflictError || err instanceof RouteApplyError) {
        throw new TunvpnError(err.code, `${err.message}${routeField(config, err.prefix)}`, { cause: err });
      }
      throw err;
    }
    try {
      await this.rules.commit(await this.rules.prepare(routing.rules));
    } catch (err) {
      await this.routes.undo(pending, y);
      if (err instanceof RuleApplyError) throw new TunvpnError(err.code, `${err.message} (interface.table)`, { cause: err });
      throw err;
    }
    await this.routes.commit(pending, y);
    this.index = index;
    this.indexed = config;
    if (this.rules.recordProblem !== undefined) {
      this.log.warn(
        { record: this.rules.record, err: this.rules.recordProblem },
        'cannot record the policy rules: after a crash only those the next start wants itself are found again',
      );
    }
    this.warnSrcValidMark();
    if (routing.rules.length > 0)
      this.log.info(
        { table: routing.rules[0].table, fwmark: routing.mark, rules: routing.rules.map(describeRule) },
        'full tunnel: default routes in their own table',
      );
  }

  /**
   * The routes, rules and mark `next` wants. From the diff when it can be
   * shown to give what a full plan gives (docs/apply.md, section 4): the
   * effective config is the one indexed, no interface address, table or
   * fwmark changed, the change touches at most DELTA_LIMIT allowed IPs and
   * no full tunnel's default route (RouteIndex.delta). Otherwise in full.
   */
  async planRoutes(
    current: TunvpnConfig,
    next: TunvpnConfig,
    diff: ConfigDiff,
    y: Yielder,
  ): Promise<{ routes: RoutesPlan; rules: iproute.PolicyRule[]; mark: number }> {
    const index = this.index;
    if (index !== undefined && this.indexed === current) {
      const delta = routeDeltaFor(index, diff);
      if (delta !== undefined) return { routes: { kind: 'delta', delta }, rules: index.plan.rules, mark: index.plan.mark };
    }
    const full = await RouteIndex.build(next, y);
    return { routes: { kind: 'full', wanted: full.plan.routes, index: full }, rules: full.plan.rules, mark: full.plan.mark };
  }

  /**
   * The apply path's reversible network steps, in order: MTU, new
   * addresses, new routes, new rules. On a failure the ones done are
   * undone in reverse and ApplyError is thrown (the caller undoes its own
   * steps before these).
   */
  async prepare(current: TunvpnConfig, next: TunvpnConfig, plan: NetworkPlan, y: Yielder): Promise<PreparedNetwork> {
    const name = this.name;
    const cur = current.interface;
    const nxt = next.interface;
    const undo: (() => Promise<unknown>)[] = [];
    try {
      if (nxt.mtu !== cur.mtu) {
        await ip.setMtu(name, nxt.mtu).catch((err: unknown) => {
          throw new ApplyError(UAPI_EINVAL, `cannot set MTU ${nxt.mtu}: ${(err as Error).message}`, 'interface.mtu', { cause: err });
        });
        undo.push(() => ip.setMtu(name, cur.mtu));
      }
      for (const a of plan.addressesToAdd) {
        await ip.addAddress(name, a).catch((err: unknown) => {
          const exists = /File exists/i.test(String((err as { stderr?: unknown }).stderr ?? (err as Error).message));
          const i = nxt.addresses.indexOf(a);
          throw new ApplyError(exists ? UAPI_EEXIST : UAPI_EINVAL, `cannot add address ${a}: ${(err as Error).message}`, `interface.addresses[${i}]`, {
            cause: err,
          });
        });
        undo.push(() => ip.delAddress(name, a));
      }
      let routes: PendingRoutes;
      try {
        const rp = plan.routes;
        if (rp.kind === 'full') routes = await this.routes.prepare(rp.wanted, y);
        else {
          // Several conflicts: the one a full plan would have named (the first in the config's order).
          const first = (conflicts: readonly { prefix: string; via: string }[]) => {
            const key = this.index?.firstInPlanOrder(
              next,
              conflicts.map((c) => c.prefix),
            );
            return conflicts.find((c) => c.prefix === key) ?? conflicts[0];
          };
          routes = await this.routes.prepareChange(rp.delta.add, rp.delta.drop, y, first);
        }
      } catch (err) {
        if (err instanceof RouteConflictError || err instanceof RouteApplyError) {
          const errno = err instanceof RouteConflictError || err.exists ? UAPI_EEXIST : UAPI_EINVAL;
          throw new ApplyError(errno, err.message, routeFieldPath(next, err.prefix), { cause: err });
        }
        throw new ApplyError(UAPI_EINVAL, `routes: ${(err as Error).message}`, undefined, { cause: err });
      }
      const pendingRoutes = routes;
      undo.push(() => this.routes.undo(pendingRoutes, y));
      let rules: PendingRules;
      try {
        rules = await this.rules.prepare(plan.rules);
      } catch (err) {
        if (err instanceof RuleApplyError) throw new ApplyError(err.exists ? UAPI_EEXIST : UAPI_EINVAL, err.message, 'interface.table', { cause: err });
        throw new ApplyError(UAPI_EINVAL, `rules: ${(err as Error).message}`, 'interface.table', { cause: err });
      }
      return { routes, rules, plan: plan.routes, next };
    } catch (err) {
      for (const step of undo.reverse()) {
        await step().catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'could not undo a prepared step'));
      }
      throw err;
    }
  }

  /** Commit, cannot fail: the old routes and rules deleted (a failure is logged), the src_valid_mark warning. */
  async commitRouting(prepared: PreparedNetwork, y: Yielder): Promise<void> {
    // The index follows the effective config: replaced by a full plan's, or the delta taken in.
    const rp = prepared.plan;
    if (rp.kind === 'full') this.index = rp.index;
    else this.index?.apply(rp.delta);
    this.indexed = this.index === undefined ? undefined : prepared.next;
    for (const failure of await this.routes.commit(prepared.routes, y)) this.log.warn({ route: failure }, 'could not remove route');
    for (const failure of await this.rules.commit(prepared.rules)) this.log.warn({ rule: failure }, 'could not remove rule');
    this.warnSrcValidMark();
  }

  /** Commit, cannot fail: the addresses no longer wanted deleted (a failure is logged). */
  async deleteAddresses(addresses: readonly string[]): Promise<void> {
    for (const a of addresses) {
      await ip.delAddress(this.name, a).catch((err: unknown) => this.log.warn({ address: a, err: (err as Error).message }, 'could not remove address'));
    }
  }

  /** Rules outlive the interface: a failed start deletes the ones it added. */
  async removeRules(): Promise<void> {
    for (const f of await this.rules.removeAll()) this.log.warn({ rule: f }, 'could not remove rule');
  }

  /** At stop: exactly the routes we added (one ip process), never the kernel's or an operator's, and our rules. */
  async removeAll(y: Yielder): Promise<void> {
    for (const failure of await this.routes.removeAll(y)) this.log.debug({ route: failure }, 'route already gone');
    for (const failure of await this.rules.removeAll()) this.log.warn({ rule: failure }, 'could not remove rule');
  }

  /** A full tunnel over IPv4 wants src_valid_mark (as wg-quick sets it); say so once if it could not be set. */
  private warnSrcValidMark(): void {
    const problem = this.rules.srcValidMarkProblem;
    if (problem === undefined) return;
    this.rules.srcValidMarkProblem = undefined;
    this.log.warn(
      { sysctl: 'net.ipv4.conf.all.src_valid_mark', err: problem },
      'cannot set net.ipv4.conf.all.src_valid_mark=1: with a strict reverse-path filter (rp_filter=1) replies to the full tunnel may be dropped; set it in /etc/sysctl.d/',
    );
  }
}

/** The routes a config wants (planRoutes), in slices. */
export async function planRoutesYielding(config: TunvpnConfig, y: Yielder): Promise<string[]> {
  const all: string[] = [];
  for (const p of config.peers) {
    // Per prefix: one peer can have 50,000.
    for (const c of p.allowedIPs) {
      all.push(c);
      if (y.due()) await y.pause();
    }
    if (y.due()) await y.pause();
  }
  return planRoutes(config.interface.addresses, all, y);
}

/** The config path of the first allowed IP that wants route `prefix` ("" when none does). */
export function routeFieldPath(config: TunvpnConfig, prefix: string | undefined): string | undefined {
  if (prefix === undefined) return undefined;
  for (let i = 0; i < config.peers.length; i++) {
    const j = config.peers[i].allowedIPs.indexOf(prefix);
    if (j >= 0) return `peers[${i}].allowedIPs[${j}]`;
  }
  return undefined;
}

/** routeFieldPath for a message: " (peers[i].allowedIPs[j])", or "" when no allowed IP wants the route. */
function routeField(config: TunvpnConfig, prefix: string | undefined): string {
  const f = routeFieldPath(config, prefix);
  return f === undefined ? '' : ` (${f})`;
}
