import { createHash } from 'node:crypto';
import type { BlobChange, ContentRef, SourceRow, Window } from '../contract.js';

/** Turns source rows into change events. Pure apart from hashing. */

export interface EventContext {
  readonly table: string;
  readonly tenant: string;
  readonly runId: string;
  readonly window: Window;
}

export function sha256(bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest();
}

export function changeFromRow(row: SourceRow, ctx: EventContext, content: ContentRef, contentSha256: Buffer | null): BlobChange {
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
    businessUnit: row.businessUnit,
    content,
    contentSha256,
    runId: ctx.runId,
    window: ctx.window,
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

/** Whether the registry already holds this exact version, so republishing it would only duplicate. */
export function isUnchanged(
  row: SourceRow,
  rowSha256: Buffer | null,
  published: { modifiedOn: bigint; contentSha256: Buffer | null; deleted: boolean } | undefined,
): boolean {
  if (!published || published.deleted || published.modifiedOn !== row.modifiedOn) return false;
  if (rowSha256 === null || published.contentSha256 === null) return true;
  return rowSha256.equals(published.contentSha256);
}
