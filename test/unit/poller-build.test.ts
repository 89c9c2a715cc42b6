/**
 * Pure decisions of the poller about one row (src/poller/build.ts): how its content travels (planContent) and
 * whether the registry already holds this exact version (isUnchanged), plus the change event built from it.
 */
import { describe, expect, it } from 'vitest';
import type { SourceRow } from '../../src/contract.js';
import { changeFromRow, isUnchanged, planContent, sha256 } from '../../src/poller/build.js';

const MiB = 1 << 20;

function row(over: Partial<SourceRow> = {}): SourceRow {
  return {
    key: 'k1', name: 'a.bin', pathLocator: '/1/2/', parentPathLocator: '/1/', isDirectory: false, contentLength: 3, content: Buffer.from('abc'),
    modifiedOn: 17_672_472_001_234_567n, businessUnit: 'bu1', attributes: { creationTime: 1n, lastWriteTime: 2n }, ...over,
  };
}

describe('planContent', () => {
  const INLINE = 64 * 1024;
  const MAX = 4 * MiB;

  it('has nothing to send for a directory or NULL content', () => {
    expect(planContent(row({ isDirectory: true, contentLength: null, content: null }), INLINE, MAX)).toBe('none');
    expect(planContent(row({ contentLength: null, content: null }), INLINE, MAX)).toBe('none');
  });

  it('sends content read in the page inline, including empty content', () => {
    expect(planContent(row(), INLINE, MAX)).toBe('inline');
    expect(planContent(row({ contentLength: 0, content: Buffer.alloc(0) }), INLINE, MAX)).toBe('inline');
  });

  it('fetches content not read in the page but small enough for one record', () => {
    expect(planContent(row({ contentLength: INLINE, content: null }), INLINE, MAX)).toBe('fetch-inline');
    expect(planContent(row({ contentLength: 1, content: null }), INLINE, MAX)).toBe('fetch-inline');
  });

  it('chunks content larger than the inline limit', () => {
    expect(planContent(row({ contentLength: INLINE + 1, content: null }), INLINE, MAX)).toBe('chunked');
    expect(planContent(row({ contentLength: 3 * MiB, content: null }), INLINE, MAX)).toBe('chunked');
  });

  it('accepts a blob of exactly the largest size and refuses one byte more, whether or not it was read', () => {
    expect(planContent(row({ contentLength: MAX, content: null }), INLINE, MAX)).toBe('chunked');
    expect(planContent(row({ contentLength: MAX + 1, content: null }), INLINE, MAX)).toBe('too-large');
    expect(planContent(row({ contentLength: 10, content: Buffer.alloc(10) }), INLINE, 9)).toBe('too-large');
  });
});

describe('isUnchanged', () => {
  const bytes = Buffer.from('abc');
  const hash = sha256(bytes);
  const published = (over: Partial<{ modifiedOn: bigint; contentSha256: Buffer | null; deleted: boolean }> = {}) => ({
    modifiedOn: row().modifiedOn, contentSha256: hash, deleted: false, ...over,
  });

  it('is false for a key never published', () => {
    expect(isUnchanged(row(), hash, undefined)).toBe(false);
  });

  it('is true for the same ModifiedOn and the same content hash', () => {
    expect(isUnchanged(row(), hash, published())).toBe(true);
    expect(isUnchanged(row(), sha256(Buffer.from('abc')), published())).toBe(true);
  });

  it('is false when ModifiedOn differs either way, even by one tick', () => {
    expect(isUnchanged(row({ modifiedOn: row().modifiedOn + 1n }), hash, published())).toBe(false);
    expect(isUnchanged(row({ modifiedOn: row().modifiedOn - 1n }), hash, published())).toBe(false);
  });

  it('is false when the content changed under the same ModifiedOn', () => {
    expect(isUnchanged(row(), sha256(Buffer.from('abd')), published())).toBe(false);
  });

  it('is false for a key whose last published event was a delete (the row came back)', () => {
    expect(isUnchanged(row(), hash, published({ deleted: true }))).toBe(false);
  });

  it('trusts ModifiedOn alone when either hash is unknown (content not read in the page, or none)', () => {
    expect(isUnchanged(row({ content: null }), null, published())).toBe(true);
    expect(isUnchanged(row({ isDirectory: true, content: null, contentLength: null }), null, published({ contentSha256: null }))).toBe(true);
    expect(isUnchanged(row(), hash, published({ contentSha256: null }))).toBe(true);
  });
});

describe('changeFromRow', () => {
  it('carries the row, the window and the run into the event, ticks untouched', () => {
    const r = row();
    const window = { start: -5n, end: 2n ** 60n };
    const change = changeFromRow(r, { table: 'T', tenant: 'gwent', runId: 'run', window }, { kind: 'inline', bytes: r.content! }, sha256(r.content!));
    expect(change).toEqual({
      table: 'T', tenant: 'gwent', key: 'k1', name: 'a.bin', pathLocator: '/1/2/', parentPathLocator: '/1/', isDirectory: false, size: 3,
      attributes: { creationTime: 1n, lastWriteTime: 2n }, modifiedOn: 17_672_472_001_234_567n, businessUnit: 'bu1',
      content: { kind: 'inline', bytes: r.content }, contentSha256: sha256(Buffer.from('abc')), runId: 'run', window,
    });
  });
});
