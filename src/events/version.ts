import type { Ticks } from '../contract.js';

/**
 * The version order of the event contract (docs/events.md, "Which version wins"), in one place: the consumers'
 * in-batch reduction, both target dialects' guards and every subscriber apply this same rule, so every replica and
 * every replay ends in the same state. Pure.
 *
 * - A change replaces a change when its `(modifiedOn, observed)` is greater: ModifiedOn first (NULL before every
 *   value), then the observation stamp. The stamp follows the order in which the poller read the source states, so
 *   a content change that kept its ModifiedOn wins over the state read before it.
 * - The content hash only breaks a tie between two observations with the same stamp, which the poller never
 *   produces for different states (contract v1 events, whose stamp defaults to their ModifiedOn, can tie).
 * - A delete removes every change observed at or before it, whatever its ModifiedOn: a delete is what was seen
 *   last. A change observed after a delete (an undelete, a restore) brings the row back.
 */

export interface ChangeVersion {
  readonly modifiedOn: Ticks | null;
  readonly observed: Ticks;
  readonly contentSha256: Buffer | null;
}

export interface DeleteVersion {
  readonly observed: Ticks;
}

/** Negative when `a` is older than `b`, positive when newer, 0 for the same version. */
export function compareChanges(a: ChangeVersion, b: ChangeVersion): number {
  return compareModifiedOn(a.modifiedOn, b.modifiedOn) || compareTicks(a.observed, b.observed) || compareHashes(a.contentSha256, b.contentSha256);
}

/** NULL sorts before every ModifiedOn. */
export function compareModifiedOn(a: Ticks | null, b: Ticks | null): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return compareTicks(a, b);
}

/** Whether the delete removes the change: it was observed at or after it. */
export function deleteCovers(deletion: DeleteVersion, change: Pick<ChangeVersion, 'observed'>): boolean {
  return deletion.observed >= change.observed;
}

/** Whether the change outlives the delete (an undelete or restore observed after it). */
export function outlivesDelete(change: Pick<ChangeVersion, 'observed'>, deletion: DeleteVersion): boolean {
  return change.observed > deletion.observed;
}

/**
 * Of several changes of one key, the ones that can still win where they are applied: for every possible latest
 * tombstone there (which the caller does not know), the greatest change observed after it. Newest observation first;
 * identical versions appear once. Normally this is one change — the greatest — and more only when a ModifiedOn moved
 * backwards across a delete (a restore), where the newer life of the key has the smaller ModifiedOn: keeping only the
 * greatest would keep a version an earlier tombstone at the target refuses, and lose the one that should win.
 */
export function candidatesToWin<T extends ChangeVersion>(changes: readonly T[]): T[] {
  const newestFirst = [...changes].sort((a, b) => compareTicks(b.observed, a.observed) || compareChanges(b, a));
  const out: T[] = [];
  for (const c of newestFirst) if (out.length === 0 || compareChanges(c, out.at(-1)!) > 0) out.push(c);
  return out;
}

function compareTicks(a: Ticks, b: Ticks): number {
  return a === b ? 0 : a < b ? -1 : 1;
}

function compareHashes(a: Buffer | null, b: Buffer | null): number {
  return Buffer.compare(a ?? EMPTY, b ?? EMPTY);
}

const EMPTY = Buffer.alloc(0);
