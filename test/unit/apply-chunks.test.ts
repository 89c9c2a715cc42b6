import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { joinContent, orderedParts, planChunks, verifyParts } from '../../src/apply/sink/chunks.js';
import { CHUNK_HOLD_BYTES, CHUNK_HOLD_MS, trailingChunksToHold } from '../../src/apply/loop.js';
import { reduceBatch } from '../../src/apply/reduce.js';
import { stageRowValues } from '../../src/apply/sink/batch.js';
import { HEADERS, type BlobChange, type BlobChunk, type Ticks } from '../../src/contract.js';
import type { InRecord } from '../../src/events/records.js';

const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();

function chunked(key: string, modifiedOn: Ticks, content: Buffer, chunkSize: number, over: Partial<BlobChange> = {}): BlobChange {
  return {
    table: 'T', tenant: '', key, name: key, pathLocator: `/${key}/`, parentPathLocator: null, isDirectory: false,
    size: content.length, attributes: {}, modifiedOn, observed: modifiedOn, businessUnit: null,
    content: { kind: 'chunked', chunkCount: Math.ceil(content.length / chunkSize), chunkSize, totalSize: content.length },
    contentSha256: sha256(content), runId: 'r', window: { start: 0n, end: modifiedOn }, ...over,
  };
}

function chunksOf(key: string, content: Buffer, chunkSize: number, table = 'T'): BlobChunk[] {
  const count = Math.ceil(content.length / chunkSize);
  return Array.from({ length: count }, (_, index) => ({
    table, key, contentSha256: sha256(content), index, count, bytes: content.subarray(index * chunkSize, (index + 1) * chunkSize),
  }));
}

const inline = (key: string, modifiedOn: Ticks): BlobChange => {
  const bytes = Buffer.from(`${key}@${modifiedOn}`);
  return { ...chunked(key, modifiedOn, bytes, 1 << 20), content: { kind: 'inline', bytes }, size: bytes.length };
};

describe('orderedParts', () => {
  it('orders a complete set by index, keeps the first of a duplicated index, and refuses a gap', () => {
    const content = randomBytes(1000);
    const [a, b, c] = chunksOf('k', content, 400) as [BlobChunk, BlobChunk, BlobChunk];
    expect(Buffer.concat(orderedParts([c, a, b], 3)!)).toEqual(content);
    const other = { ...b, bytes: Buffer.alloc(b.bytes.length) };
    expect(orderedParts([a, other, b, c], 3)![1]).toBe(other.bytes);
    expect(orderedParts([a, c], 3)).toBeNull();
    expect(orderedParts([a, b, c, { ...a, index: 3 }], 3)).not.toBeNull();
    expect(orderedParts([a, b, c], 0)).toBeNull();
  });

  it('ignores chunks cut for another count', () => {
    const content = randomBytes(1000);
    expect(orderedParts([...chunksOf('k', content, 500)], 3)).toBeNull();
  });
});

describe('verifyParts', () => {
  it('checks the total length and the SHA-256 of the whole', () => {
    const content = randomBytes(1000);
    const parts = chunksOf('k', content, 300).map((c) => c.bytes);
    expect(verifyParts(parts, 1000, sha256(content))).toBe(true);
    expect(verifyParts(parts, 999, sha256(content))).toBe(false);
    const flipped = Buffer.from(parts[1]!);
    flipped[0] = flipped[0]! ^ 1;
    expect(verifyParts([parts[0]!, flipped, ...parts.slice(2)], 1000, sha256(content))).toBe(false);
    expect(verifyParts(parts.slice(0, 3), 900, sha256(content))).toBe(false);
  });
});

describe('planChunks', () => {
  it('completes a row whose chunks are all in the batch, stages none of them, and stages it as inline content', () => {
    const content = randomBytes(2500);
    const row = { change: chunked('big', 5n, content, 1000) };
    const plan = planChunks([row], chunksOf('big', content, 1000).reverse());
    expect(plan.chunks).toEqual([]);
    expect(plan.assembled).toBe(1);
    expect(plan.released.map((r) => r.change)).toEqual([row.change]);
    const staged = plan.rows[0]!;
    expect(staged.assembled?.length).toBe(2500);
    expect(joinContent(staged.assembled!)).toEqual(content);
    // Staged as inline content with the row's hash, no chunk count: the engines' SQL assembly leaves it alone.
    const values = stageRowValues(staged);
    expect(values[7]).toEqual(content);
    expect(values[8]).toBe('inline');
    expect(values[9]).toEqual(sha256(content));
    expect(values[10]).toBeNull();
  });

  it('stages the chunks of rows that are not in the batch, and of rows whose set is incomplete in the batch', () => {
    const a = randomBytes(2500);
    const b = randomBytes(2500);
    const rowB = { change: chunked('b', 5n, b, 1000) };
    const chunksB = chunksOf('b', b, 1000);
    const plan = planChunks([rowB], [...chunksOf('a', a, 1000), chunksB[0]!, chunksB[2]!]);
    expect(plan.rows).toEqual([rowB]);
    expect(plan.chunks).toHaveLength(5);
    expect(plan.assembled).toBe(0);
    expect(plan.released).toEqual([]);
  });

  it('leaves a complete set that does not verify to the SQL path: row chunked, chunks staged', () => {
    const content = randomBytes(2500);
    const row = { change: chunked('big', 5n, content, 1000) };
    const chunks = chunksOf('big', content, 1000);
    const corrupt = { ...chunks[1]!, bytes: Buffer.from(chunks[1]!.bytes) };
    corrupt.bytes[7] = corrupt.bytes[7]! ^ 0xff;
    const plan = planChunks([row], [chunks[0]!, corrupt, chunks[2]!]);
    expect(plan.rows).toEqual([row]);
    expect(plan.rows[0]!.assembled).toBeUndefined();
    expect(plan.chunks).toEqual([chunks[0], corrupt, chunks[2]]);
    expect(plan.mismatched).toBe(1);
    expect(plan.released).toEqual([]);
    // A row whose size disagrees with its chunks (same hash) does not verify either.
    const liar = { change: chunked('big', 5n, content, 1000, { content: { kind: 'chunked', chunkCount: 3, chunkSize: 1000, totalSize: 2400 } }) };
    expect(planChunks([liar], chunks).rows[0]!.assembled).toBeUndefined();
  });

  it('matches chunks by table, key, hash and count: the same content under another key is not used', () => {
    const content = randomBytes(2500);
    const row = { change: chunked('a', 5n, content, 1000) };
    const plan = planChunks([row], chunksOf('b', content, 1000));
    expect(plan.rows[0]!.assembled).toBeUndefined();
    expect(plan.chunks).toHaveLength(3);
    expect(planChunks([row], chunksOf('a', content, 1000, 'U')).rows[0]!.assembled).toBeUndefined();
  });

  it('does not stage the chunks of versions superseded in the batch, and releases their earlier copies', () => {
    const old = randomBytes(2500);
    const now = randomBytes(2500);
    const oldChange = chunked('k', 1n, old, 1000);
    const newChange = chunked('k', 2n, now, 1000);
    const events = [...chunksOf('k', old, 1000), oldChange, ...chunksOf('k', now, 1000), newChange];
    const reduced = reduceBatch(events.map((e) => ('index' in e ? { type: 'chunk' as const, chunk: e } : { type: 'change' as const, change: e })));
    expect(reduced.changes).toEqual([newChange]);
    expect(reduced.dropped).toEqual([oldChange]);
    const plan = planChunks(reduced.changes.map((change) => ({ change })), reduced.chunks, reduced.dropped);
    expect(plan.chunks).toEqual([]);
    expect(plan.assembled).toBe(1);
    expect(plan.released.map((r) => r.change)).toEqual([newChange, oldChange]);
    // Even when the winner's chunks are not all here: the loser's are not staged, the winner's are.
    const partial = planChunks([{ change: newChange }], [...chunksOf('k', old, 1000), chunksOf('k', now, 1000)[0]!], [oldChange]);
    expect(partial.chunks).toEqual([chunksOf('k', now, 1000)[0]]);
    expect(partial.released.map((r) => r.change)).toEqual([oldChange]);
  });

  it('keeps a superseded set that the winning version needs too (same content, newer metadata)', () => {
    const content = randomBytes(2500);
    const older = chunked('k', 1n, content, 1000);
    const newer = chunked('k', 2n, content, 1000, { name: 'renamed' });
    const chunks = chunksOf('k', content, 1000);
    const plan = planChunks([{ change: newer }], chunks.slice(0, 2), [older]);
    expect(plan.chunks).toEqual(chunks.slice(0, 2));
    expect(plan.released).toEqual([]);
  });

  it('leaves inline rows and batches without chunks as they are', () => {
    const rows = [{ change: inline('a', 1n) }, { change: chunked('b', 1n, randomBytes(10), 4) }];
    const plan = planChunks(rows, []);
    expect(plan.rows).toEqual(rows);
    expect(plan.chunks).toEqual([]);
    expect(plan.released).toEqual([]);
  });
});

describe('trailingChunksToHold', () => {
  const record = (offset: bigint, kind: 'chunk' | 'change' | 'marker', bytes = 100, value: Buffer | null = Buffer.alloc(bytes)): InRecord => ({
    topic: 't', partition: 0, offset, key: Buffer.from(`k${offset}`), value, headers: { [HEADERS.kind]: kind },
  });

  it('holds the chunks that end a batch, for the next fetch, and nothing when a row or marker ends it', () => {
    const records = [record(0n, 'chunk'), record(1n, 'chunk'), record(2n, 'change'), record(3n, 'chunk'), record(4n, 'chunk')];
    expect(trailingChunksToHold(records, true, undefined, 1000)).toEqual({ count: 2, held: { from: 3n, since: 1000 } });
    expect(trailingChunksToHold(records, false, undefined, 1000)).toEqual({ count: 2, held: { from: 3n, since: 1000 } });
    expect(trailingChunksToHold(records.slice(0, 3), true, undefined, 1000)).toEqual({ count: 0, held: undefined });
    expect(trailingChunksToHold([...records, record(5n, 'marker')], true, undefined, 1000).count).toBe(0);
    // A chunk's tombstone (null value) is not held: it is dropped anyway.
    expect(trailingChunksToHold([record(0n, 'change'), record(1n, 'chunk', 0, null)], true, undefined, 1000).count).toBe(0);
  });

  it('at the end of the log, holds the same run only for CHUNK_HOLD_MS, then lets it be staged; a new run starts a new wait', () => {
    const records = [record(3n, 'chunk'), record(4n, 'chunk')];
    const first = trailingChunksToHold(records, true, undefined, 1000);
    const again = trailingChunksToHold([...records, record(5n, 'chunk')], true, first.held, 1000 + CHUNK_HOLD_MS - 1);
    expect(again).toEqual({ count: 3, held: { from: 3n, since: 1000 } });
    expect(trailingChunksToHold(records, true, again.held, 1000 + CHUNK_HOLD_MS)).toEqual({ count: 0, held: undefined });
    expect(trailingChunksToHold([record(6n, 'chunk')], true, again.held, 1000 + CHUNK_HOLD_MS)).toEqual({ count: 1, held: { from: 6n, since: 1000 + CHUNK_HOLD_MS } });
  });

  it('before the end of the log (a fetch cut by its size limit), holds a run once only', () => {
    const records = [record(3n, 'chunk'), record(4n, 'chunk')];
    const first = trailingChunksToHold(records, false, undefined, 1000);
    expect(first.count).toBe(2);
    expect(trailingChunksToHold(records, false, first.held, 1001)).toEqual({ count: 0, held: undefined });
  });

  it('does not hold a run larger than CHUNK_HOLD_BYTES', () => {
    const big = [record(0n, 'chunk', CHUNK_HOLD_BYTES / 2), record(1n, 'chunk', CHUNK_HOLD_BYTES / 2 + 1)];
    expect(trailingChunksToHold(big, true, undefined, 0).count).toBe(0);
    expect(trailingChunksToHold(big.slice(1), true, undefined, 0).count).toBe(1);
  });
});
