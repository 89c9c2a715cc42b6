import type { BlobChange, BlobChunk, Deletion, Ticks, WatermarkMarker } from '../contract.js';
import { hierarchyDepth } from '../poller/window.js';

/**
 * Reduces a batch to what must be written: the latest version of each key (by ModifiedOn, ties broken by the
 * greater content hash — the same order the target's upsert guard uses, so reduction never changes the result),
 * with a delete winning over any change it is not older than. Parents are ordered before children. Pure.
 */

export type Version = { readonly modifiedOn: Ticks; readonly contentSha256: Buffer | null };

/** Negative when a is older than b, positive when newer, 0 when the same version. */
export function compareVersions(a: Version, b: Version): number {
  if (a.modifiedOn !== b.modifiedOn) return a.modifiedOn < b.modifiedOn ? -1 : 1;
  const ah = a.contentSha256 ?? Buffer.alloc(0);
  const bh = b.contentSha256 ?? Buffer.alloc(0);
  return Buffer.compare(ah, bh);
}

export interface ReducedBatch {
  readonly changes: BlobChange[];
  readonly deletes: Deletion[];
  readonly chunks: BlobChunk[];
  /** Latest marker per (table, scope) seen in the batch. */
  readonly markers: WatermarkMarker[];
  /** Events that were superseded inside the batch (for the duplicates metric). */
  readonly superseded: number;
}

export type BatchEvent =
  | { readonly type: 'change'; readonly change: BlobChange }
  | { readonly type: 'delete'; readonly deletion: Deletion }
  | { readonly type: 'chunk'; readonly chunk: BlobChunk }
  | { readonly type: 'marker'; readonly marker: WatermarkMarker };

export function reduceBatch(events: readonly BatchEvent[]): ReducedBatch {
  const latest = new Map<string, { type: 'change'; change: BlobChange } | { type: 'delete'; deletion: Deletion }>();
  const chunks: BlobChunk[] = [];
  const markers = new Map<string, WatermarkMarker>();
  let superseded = 0;
  for (const e of events) {
    if (e.type === 'chunk') chunks.push(e.chunk);
    else if (e.type === 'marker') markers.set(`${e.marker.table}\u0000${e.marker.scope}`, e.marker);
    else {
      const key = keyOf(e);
      const current = latest.get(key);
      if (current) superseded++;
      if (!current || wins(e, current)) latest.set(key, e);
    }
  }
  const changes: BlobChange[] = [];
  const deletes: Deletion[] = [];
  for (const e of latest.values()) {
    if (e.type === 'change') changes.push(e.change);
    else deletes.push(e.deletion);
  }
  return { changes: parentsFirst(changes), deletes, chunks, markers: [...markers.values()], superseded };
}

function keyOf(e: { type: 'change'; change: BlobChange } | { type: 'delete'; deletion: Deletion }): string {
  return e.type === 'change' ? `${e.change.tenant}\u0000${e.change.key}` : `${e.deletion.tenant}\u0000${e.deletion.key}`;
}

/** Whether `next` replaces `current` for the same key. A delete wins over a change of the same or an older version. */
function wins(
  next: { type: 'change'; change: BlobChange } | { type: 'delete'; deletion: Deletion },
  current: { type: 'change'; change: BlobChange } | { type: 'delete'; deletion: Deletion },
): boolean {
  const nv = versionOf(next);
  const cv = versionOf(current);
  if (next.type === 'delete' && current.type === 'change') return nv.modifiedOn >= cv.modifiedOn;
  if (next.type === 'change' && current.type === 'delete') return nv.modifiedOn > cv.modifiedOn;
  return compareVersions(nv, cv) > 0;
}

function versionOf(e: { type: 'change'; change: BlobChange } | { type: 'delete'; deletion: Deletion }): Version {
  return e.type === 'change' ? e.change : { modifiedOn: e.deletion.modifiedOn, contentSha256: null };
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
