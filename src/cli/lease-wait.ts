import type { TableStatusRecord } from '../control/sql.js';
import { HighwaterError } from '../errors.js';
import { sleep } from '../retry.js';

/**
 * `resume` after a poller was killed: its leases stay live until they expire (poll.leaseSeconds), and a resumed
 * table must not run beside a poller that may still be alive. So resume waits for those leases, counting down on
 * stderr, unless --no-wait. A lease whose expiry moves later while we wait was renewed: its poller is alive, and
 * waiting longer would wait for ever, so that is an error naming the holder.
 */

export interface HeldLease {
  readonly table: string;
  readonly scope: string;
  readonly owner: string;
  readonly secondsLeft: number;
}

export interface LeaseWaitDeps {
  /** The control store's status (leases by the database's clock). */
  readonly status: () => Promise<readonly TableStatusRecord[]>;
  /** One countdown line (stderr); `final` is true for the last one. */
  readonly say: (line: string, final: boolean) => void;
  readonly signal?: AbortSignal | undefined;
  readonly tickMs?: number;
}

/** The live leases among `tables` (name and scope), longest first. Pure. */
export function heldLeases(status: readonly TableStatusRecord[], tables: readonly { table: string; scope: string }[]): HeldLease[] {
  return status
    .filter((s) => s.leaseActive && s.leaseOwner !== null && tables.some((t) => t.table === s.table && t.scope === s.scope))
    .map((s) => ({ table: s.table, scope: s.scope, owner: s.leaseOwner!, secondsLeft: s.leaseSecondsLeft ?? 0 }))
    .sort((a, b) => b.secondsLeft - a.secondsLeft);
}

/** "waiting for the lease of T [*] (held by h:1:ab) to expire: 27 s left". Pure. */
export function countdownLine(held: readonly HeldLease[]): string {
  const first = held[0]!;
  const others = held.length > 1 ? ` and ${held.length - 1} more` : '';
  return `waiting for the lease of ${first.table} [${first.scope}]${others} (held by ${first.owner}, a poller that may have died) to expire: ${Math.ceil(first.secondsLeft)} s left`;
}

export function leaseHeldError(held: readonly HeldLease[], why: string): HighwaterError {
  const list = held.map((h) => `${h.table} [${h.scope}] by ${h.owner} for ${Math.ceil(h.secondsLeft)} s more`).join('; ');
  return new HighwaterError('LEASE_HELD', `${why}: ${list}`);
}

/** Resolves once none of `tables` is leased; throws when a holder renews its lease or `noWait` is set. */
export async function waitForLeases(tables: readonly { table: string; scope: string }[], deps: LeaseWaitDeps, noWait: boolean): Promise<void> {
  let held = heldLeases(await deps.status(), tables);
  if (held.length === 0) return;
  if (noWait) throw leaseHeldError(held, 'the run\'s tables are leased (--no-wait given)');
  // Expiry deadlines by table, as seconds on our own monotonic clock: a renewal moves one later than allowed.
  const started = performance.now();
  const deadline = new Map(held.map((h) => [`${h.table}\u0000${h.scope}\u0000${h.owner}`, h.secondsLeft]));
  while (held.length > 0) {
    deps.say(countdownLine(held), false);
    await sleep(deps.tickMs ?? 1000, deps.signal);
    if (deps.signal?.aborted) throw new HighwaterError('STOPPED', 'stopped while waiting for a lease; nothing was resumed');
    held = heldLeases(await deps.status(), tables);
    const elapsed = (performance.now() - started) / 1000;
    const renewed = held.filter((h) => h.secondsLeft + elapsed > (deadline.get(`${h.table}\u0000${h.scope}\u0000${h.owner}`) ?? -Infinity) + 2);
    if (renewed.length > 0) {
      deps.say('', true);
      throw leaseHeldError(renewed, 'another poller is alive and renewing its lease (or took it over); stop it, or let it finish, then resume');
    }
  }
  deps.say('the leases expired; resuming', true);
}
