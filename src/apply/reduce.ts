import type { BlobChange, BlobChunk, Deletion, WatermarkMarker } from '../contract.js';
import { candidatesToWin, outlivesDelete } from '../events/version.js';
import { hierarchyDepth } from '../events/hierarchy.js';

/**
 * Reduces a batch to what must be written, by the contract's version order (src/events/version.ts — the same order
 * the target's guards use, so reduction never changes the result): per key the greatest change by (ModifiedOn,
 * observation) unless the latest delete covers it — or, when a ModifiedOn moved backwards across a delete, the few that
 * can win depending on the target's tombstones (candidatesToWin) — and the latest delete. Parents before children. Pure.
 */

export { compareChanges as compareVersions } from '../events/version.js';

export interface ReducedBatch {
  readonly changes: BlobChange[];
  readonly deletes: Deletion[];
  readonly chunks: BlobChunk[];
  /** Latest marker per (table, scope) seen in the batch. */
  readonly markers: WatermarkMarker[];
  /** Events that were superseded inside the batch (for the duplicates metric). */
  readonly superseded: number;
  /** The changes that lost (to a newer version or a delete of the batch): their chunks are never needed. */
  readonly dropped: BlobChange[];
}

export type BatchEvent =
  | { readonly type: 'change'; readonly change: BlobChange }
  | { readonly type: 'delete'; readonly deletion: Deletion }
  | { readonly type: 'chunk'; readonly chunk: BlobChunk }
  | { readonly type: 'marker'; readonly marker: WatermarkMarker };

export function reduceBatch(events: readonly BatchEvent[]): ReducedBatch {
  const chunks: BlobChunk[] = [];
  const markers = new Map<string, WatermarkMarker>();
  const latestDelete = new Map<string, Deletion>();
  let keyed = 0;
  for (const e of events) {
    if (e.type === 'chunk') chunks.push(e.chunk);
    else if (e.type === 'marker') markers.set(`${e.marker.table}\u0000${e.marker.scope}`, e.marker);
    else keyed++;
    if (e.type !== 'delete') continue;
    const held = latestDelete.get(keyOf(e.deletion));
    if (!held || e.deletion.observed > held.observed) latestDelete.set(keyOf(e.deletion), e.deletion);
  }
  // Only changes observed after the key's latest delete compete: one observed before it is gone whatever its
  // ModifiedOn, and must not outrank (by a ModifiedOn since set back) the change that brought the row back.
  const byKey = new Map<string, BlobChange[]>();
  for (const e of events) {
    if (e.type !== 'change') continue;
    const id = keyOf(e.change);
    const deletion = latestDelete.get(id);
    if (deletion !== undefined && !outlivesDelete(e.change, deletion)) continue;
    byKey.set(id, [...(byKey.get(id) ?? []), e.change]);
  }
  // A delete is kept even when a change observed after it wins (the row came back): the target must still learn of
  // it, so that an older version that reaches it later (from the retry topic) cannot bring the deleted state back.
  const changes = [...byKey.values()].flatMap((versions) => candidatesToWin(versions));
  const deletes = [...latestDelete.values()];
  const kept = new Set(changes);
  const dropped = events.flatMap((e) => (e.type === 'change' && !kept.has(e.change) ? [e.change] : []));
  return { changes: parentsFirst(changes), deletes, chunks, markers: [...markers.values()], superseded: keyed - changes.length - deletes.length, dropped };
}

function keyOf(e: { readonly tenant: string; readonly key: string }): string {
  return `${e.tenant}\u0000${e.key}`;
}

/** Stable sort by hierarchy depth, so a parent in the batch is written before (or with) its children. */
export function parentsFirst(changes: readonly BlobChange[]): BlobChange[] {
  return changes
    .map((c, i) => ({ c, i, d: hierarchyDepth(c.pathLocator) }))
    .sort((a, b) => a.d - b.d || a.i - b.i)
    .map((x) => x.c);
}

/**
 * Children whose parent is not in this batch: the loop asks the target about these and routes the ones whose
 * parent is missing there too to the retry topic.
 */
export function childrenNeedingParents(changes: readonly BlobChange[]): BlobChange[] {
  const inBatch = new Set(changes.map((c) => `${c.tenant}\u0000${c.pathLocator}`));
  return changes.filter((c) => c.parentPathLocator !== null && !inBatch.has(`${c.tenant}\u0000${c.parentPathLocator}`));
}
