import { hash } from 'node:crypto';
import type { BlobChange, ContentRef, SourceRow, Ticks, Window } from '../contract.js';
import { compareModifiedOn } from '../events/version.js';

/** Turns source rows into change events, and decides what the registry already holds. Pure apart from hashing. */

export interface EventContext {
  readonly table: string;
  readonly tenant: string;
  readonly runId: string;
  readonly window: Window;
}

/** A source row and the observation that read it. */
export interface ObservedRow {
  readonly row: SourceRow;
  readonly observed: Ticks;
  /** Set when the poller deletes the key just before publishing this state (its ModifiedOn moved backwards). */
  readonly deletedBefore?: Ticks;
}

/** SHA-256 in one call (crypto.hash): about half the cost of a Hash object for the small inputs of every row. */
export function sha256(bytes: Buffer): Buffer {
  return hash('sha256', bytes, 'buffer');
}

export function changeFromRow(observed: ObservedRow, ctx: EventContext, content: ContentRef, contentSha256: Buffer | null): BlobChange {
  const row = observed.row;
  return {
    table: ctx.table,
    tenant: ctx.tenant,
    key: row.key,
    name: row.name,
    pathLocator: row.pathLocator,
    parentPathLocator: row.parentPathLocator,
    isDirectory: row.isDirectory,
    size: row.contentLength,
    attributes: row.attributes,
    modifiedOn: row.modifiedOn,
    observed: observed.observed,
    businessUnit: row.businessUnit,
    content,
    contentSha256,
    runId: ctx.runId,
    window: ctx.window,
    ...(observed.deletedBefore !== undefined ? { deletedBefore: observed.deletedBefore } : {}),
  };
}

/** How a row's content travels, decided from its length alone. */
export type ContentPlan = 'none' | 'inline' | 'fetch-inline' | 'chunked' | 'too-large';

export function planContent(row: SourceRow, inlineLimit: number, maxBlobBytes: number): ContentPlan {
  if (row.contentLength === null) return 'none';
  if (row.contentLength > maxBlobBytes) return 'too-large';
  if (row.content !== null) return 'inline';
  return row.contentLength <= inlineLimit ? 'fetch-inline' : 'chunked';
}

/**
 * SHA-256 of everything a target stores of a row except its version: content (by its hash), name, place in the
 * tree, directory flag, size, business unit and file attributes. Two observations with the same ModifiedOn and the
 * same digest are the same state; any other difference — a rename, a move, new content — is a change to publish,
 * even when ModifiedOn did not move.
 */
export function rowDigest(row: SourceRow, contentSha256: Buffer | null): Buffer {
  const a = row.attributes;
  const canonical = JSON.stringify([
    row.name, row.pathLocator, row.parentPathLocator, row.isDirectory, row.contentLength,
    contentSha256?.toString('hex') ?? null, row.businessUnit,
    [a.creationTime, a.lastWriteTime, a.lastAccessTime].map((t) => t?.toString() ?? null),
    [a.isReadonly, a.isHidden, a.isSystem, a.isArchive].map((f) => f ?? null),
  ]);
  // crypto.hash takes the string as UTF-8 itself: no Buffer per row.
  return hash('sha256', canonical, 'buffer');
}

/** The content hash of a row when it can be known without reading its content again: inline content only. */
export function inlineContentSha256(row: SourceRow): Buffer | null | undefined {
  if (row.contentLength === null) return null;
  return row.content === null ? undefined : sha256(row.content);
}

/** What the registry holds for a key, as far as skipping and ordering need it. */
export interface Registered {
  readonly modifiedOn: Ticks | null;
  readonly digest: Buffer | null;
  readonly deleted: boolean;
  readonly acked: boolean;
  readonly maxSentModifiedOn: Ticks | null;
  /** The observation of the registered version, or of the delete once deleted; null before contract v2. */
  readonly observed: Ticks | null;
}

/**
 * Whether the registry already holds this exact state, acknowledged, so republishing it would only duplicate.
 * `digest` is undefined when the content's hash is unknown: then the state is never taken as unchanged.
 */
export function isUnchanged(row: SourceRow, digest: Buffer | undefined, registered: Registered | undefined): boolean {
  if (!registered || registered.deleted || !registered.acked || digest === undefined || registered.digest === null) return false;
  return compareModifiedOn(row.modifiedOn, registered.modifiedOn) === 0 && digest.equals(registered.digest);
}

/**
 * The delete a change must name (contract v2.1, `deletedBefore`) because compaction may remove its tombstone, which
 * shares the change's key, before a lagging reader gets there: a tombstone published now, just before the row, when
 * its ModifiedOn moved backwards; or the key's registered delete when the row comes back after one (an undelete,
 * which may also carry an older ModifiedOn than the version the reader still holds). Undefined otherwise.
 */
export function deleteToName(observed: ObservedRow, registered: Registered | undefined): Ticks | undefined {
  if (movedBackwards(observed.row, registered)) return observed.observed - 1n;
  // A deleted entry's observation is its delete's. So is a pending one's that still has an observation: a re-life of
  // the key was registered before its send, and the poller stopped before the acknowledgement (the registry's
  // pending registration clears `deleted` but keeps the delete's observation; a new key has none).
  const afterDelete = registered !== undefined && (registered.deleted || !registered.acked);
  if (afterDelete && registered.observed !== null && registered.observed < observed.observed) return registered.observed;
  return undefined;
}

/** The row with the delete it must name, if any (see deleteToName). */
export function withDeleteNamed(row: ObservedRow, registered: Registered | undefined): ObservedRow {
  const deletedBefore = deleteToName(row, registered);
  return deletedBefore === undefined ? row : { ...row, deletedBefore };
}

/**
 * Whether the row's ModifiedOn is older than one already sent for its key since the key's last delete (a restore
 * from backup, a ModifiedOn set back or to NULL): targets would keep the newer version, so the poller deletes the
 * key first (a tombstone) and then publishes the row as a new life of the key.
 */
export function movedBackwards(row: SourceRow, registered: Registered | undefined): boolean {
  if (!registered || registered.deleted) return false;
  const sent = registered.maxSentModifiedOn ?? registered.modifiedOn;
  return sent !== null && compareModifiedOn(row.modifiedOn, sent) < 0;
}
