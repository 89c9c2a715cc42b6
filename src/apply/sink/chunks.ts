import { createHash } from 'node:crypto';
import type { BlobChange, BlobChunk } from '../../contract.js';
import type { StageInput } from './dialect.js';
import type { RowToApply } from './writer.js';

/**
 * Chunked content put together in the batch, before anything reaches the target. Pure, engine-neutral: every
 * target writer (sql-writer.ts) plans a batch's chunks this way.
 *
 * A chunked row of the batch whose chunks are all in the batch too (same key, SHA-256 and chunk count, indexes
 * 0..count-1) is staged as inline content, verified here (total length and SHA-256), and its chunks never go to
 * hw_chunks: no second copy of the content is written. Everything else stays as before: chunks whose row is not
 * in the batch are staged, and a row whose chunks are not all in the batch is assembled from hw_chunks by the
 * engine's SQL. A set that is complete but does not verify (a length or hash mismatch) is not used here: its
 * chunks are staged and its row left chunked, so the engine's SQL assembly decides about it exactly as it always
 * did (content NULL, the row held back as incomplete and routed to the retry topic, the chunks kept).
 *
 * Memory: nothing is copied here. The assembled content stays a list of the batch's decoded chunk buffers (they
 * are held by the batch anyway) until the engine stages the row: joinContent makes one contiguous value then, one
 * row at a time where the engine streams its rows.
 */

/** A chunked row's content, complete and verified: the chunk buffers in index order. */
export interface AssembledContent {
  readonly parts: readonly Buffer[];
  readonly length: number;
}

export interface ChunkPlan {
  /** The rows to stage: those whose content was completed in the batch carry `assembled`. */
  readonly rows: StageInput[];
  /** The chunks still to stage in hw_chunks (their row is elsewhere, or their set is incomplete or does not verify). */
  readonly chunks: BlobChunk[];
  /**
   * Chunked versions whose staged chunks, if any earlier batch left some, are no longer needed: the rows whose
   * content was completed in the batch, and the superseded versions. For the engine's deleteUsedChunks.
   */
  readonly released: RowToApply[];
  /** Rows completed in the batch, and chunk sets complete in the batch that did not verify (for metrics, tests). */
  readonly assembled: number;
  readonly mismatched: number;
}

/** Which chunks make up a change's content: (table, key, SHA-256, chunk count), as hw_chunks keys them. */
function setId(table: string, key: string, sha256: Buffer, count: number): string {
  return `${table}\u0000${key}\u0000${sha256.toString('hex')}\u0000${count}`;
}

function setOfChange(c: BlobChange): string | null {
  if (c.content.kind !== 'chunked' || c.contentSha256 === null) return null;
  return setId(c.table, c.key, c.contentSha256, c.content.chunkCount);
}

function setOfChunk(c: BlobChunk): string {
  return setId(c.table, c.key, c.contentSha256, c.count);
}

/**
 * The chunk buffers of a set in index order when every index 0..count-1 is there (the first chunk of an index wins,
 * as the target's ON CONFLICT DO NOTHING keeps the first); null when one is missing.
 */
export function orderedParts(chunks: readonly BlobChunk[], count: number): Buffer[] | null {
  if (!Number.isInteger(count) || count < 1) return null;
  const parts: (Buffer | undefined)[] = new Array<Buffer | undefined>(count);
  for (const c of chunks) {
    if (c.count !== count || !Number.isInteger(c.index) || c.index < 0 || c.index >= count) continue;
    if (parts[c.index] === undefined) parts[c.index] = c.bytes;
  }
  for (let i = 0; i < count; i++) if (parts[i] === undefined) return null;
  return parts as Buffer[];
}

/** Whether parts make up content of exactly `totalSize` bytes whose SHA-256 is `sha256`. Hashes without copying. */
export function verifyParts(parts: readonly Buffer[], totalSize: number, sha256: Buffer): boolean {
  let length = 0;
  for (const p of parts) length += p.length;
  if (length !== totalSize) return false;
  const hash = createHash('sha256');
  for (const p of parts) hash.update(p);
  return hash.digest().equals(sha256);
}

/**
 * Plans a batch's chunks (see the top of this file). `rows` are the versions the writer stages; `superseded` are
 * versions of the batch's records that lost to another version in the batch (the loop's reduction): they are never
 * written, so their chunks are not staged, and copies earlier batches staged are released — unless a row of the
 * batch needs the same set.
 */
export function planChunks<R extends StageInput>(rows: readonly R[], chunks: readonly BlobChunk[], superseded: readonly BlobChange[] = []): ChunkPlan {
  if (chunks.length === 0 && superseded.length === 0) return { rows: [...rows], chunks: [], released: [], assembled: 0, mismatched: 0 };
  const bySet = new Map<string, BlobChunk[]>();
  for (const c of chunks) {
    const id = setOfChunk(c);
    const list = bySet.get(id);
    if (list === undefined) bySet.set(id, [c]);
    else list.push(c);
  }
  const needed = new Set<string>();
  for (const r of rows) {
    const id = setOfChange(r.change);
    if (id !== null) needed.add(id);
  }
  const consumed = new Set<string>();
  const released: RowToApply[] = [];
  let assembled = 0;
  let mismatched = 0;
  const planned = rows.map((row): R | (R & { assembled: AssembledContent }) => {
    const c = row.change;
    const id = setOfChange(c);
    if (id === null || c.content.kind !== 'chunked') return row;
    const parts = orderedParts(bySet.get(id) ?? [], c.content.chunkCount);
    if (parts === null) return row;
    if (!verifyParts(parts, c.content.totalSize, c.contentSha256!)) {
      mismatched++;
      return row;
    }
    assembled++;
    consumed.add(id);
    released.push({ change: c });
    return { ...row, assembled: { parts, length: c.content.totalSize } };
  });
  // A set the batch completed for one row but that another row of the batch (a second version with the same
  // content, left chunked) still needs from hw_chunks is staged after all.
  const stillNeeded = new Set<string>();
  for (const r of planned) {
    if ('assembled' in r && r.assembled !== undefined) continue;
    const id = setOfChange(r.change);
    if (id !== null) stillNeeded.add(id);
  }
  const dropped = new Set<string>();
  for (const s of superseded) {
    const id = setOfChange(s);
    if (id === null || needed.has(id)) continue;
    dropped.add(id);
    released.push({ change: s });
  }
  const staged = chunks.filter((c) => {
    const id = setOfChunk(c);
    if (stillNeeded.has(id)) return true;
    return !consumed.has(id) && !dropped.has(id);
  });
  return { rows: planned, chunks: staged, released, assembled, mismatched };
}

/** The assembled content as one value, for an engine's bulk load: made when the row is staged, not before. */
export function joinContent(a: AssembledContent): Buffer {
  return a.parts.length === 1 ? a.parts[0]! : Buffer.concat(a.parts as Buffer[], a.length);
}
