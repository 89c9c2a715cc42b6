import { describe, expect, it } from 'vitest';
import { DEFAULT_TREE, blobRows, contentBytes, depthOf, flatRows, mixedSize, prng, randomContent, treeRows, uuidFrom } from '../bench/rows.js';

describe('bench row generation', () => {
  it('replays exactly from a seed and differs between seeds', () => {
    const a = flatRows(42, 50);
    expect(flatRows(42, 50)).toEqual(a);
    expect(flatRows(43, 50)[0]!.key).not.toBe(a[0]!.key);
  });

  it('makes version-4-shaped, distinct GUID keys', () => {
    const next = prng(7);
    const keys = Array.from({ length: 1000 }, () => uuidFrom(next));
    for (const k of keys) expect(k).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('gives W1 rows of about 200 bytes, no hierarchy, distinct paths', () => {
    const rows = flatRows(1, 500);
    for (const r of rows) {
      expect(r.content!.length).toBeGreaterThanOrEqual(150);
      expect(r.content!.length).toBeLessThanOrEqual(250);
      expect(r.parent).toBeNull();
    }
    expect(new Set(rows.map((r) => r.path)).size).toBe(500);
  });

  it('makes incompressible content that is the same for the same label', () => {
    const c = randomContent(5, 'x', 4096);
    expect(randomContent(5, 'x', 4096).equals(c)).toBe(true);
    expect(randomContent(5, 'y', 4096).equals(c)).toBe(false);
    const distinct = new Set(c).size;
    expect(distinct).toBeGreaterThan(200);
  });

  it('builds trees of depth 1..6 whose every parent is a folder among the rows', () => {
    const rows = treeRows(9, { count: 3000, ...DEFAULT_TREE });
    const folders = new Set(rows.filter((r) => r.isDirectory).map((r) => r.path));
    const depths = rows.map((r) => depthOf(r.path));
    expect(Math.min(...depths)).toBe(1);
    expect(Math.max(...depths)).toBeLessThanOrEqual(6);
    expect(Math.max(...depths)).toBeGreaterThanOrEqual(4);
    for (const r of rows) {
      if (r.parent !== null) expect(folders.has(r.parent)).toBe(true);
      if (r.isDirectory) expect(r.content).toBeNull();
    }
    expect(new Set(rows.map((r) => r.path)).size).toBe(rows.length);
  });

  it('shuffles tree ModifiedOn so children can come before their parents', () => {
    const rows = treeRows(9, { count: 2000, ...DEFAULT_TREE });
    const byPath = new Map(rows.map((r) => [r.path, r]));
    const earlierChildren = rows.filter((r) => r.parent !== null && r.modifiedOffsetUs < byPath.get(r.parent)!.modifiedOffsetUs);
    expect(earlierChildren.length).toBeGreaterThan(0);
    expect(new Set(rows.map((r) => r.modifiedOffsetUs)).size).toBe(rows.length);
  });

  it('sizes W2 blobs and the mixed variant as specified', () => {
    expect(contentBytes(blobRows(3, 4, () => 1 << 20))).toBe(4 << 20);
    const sizes = Array.from({ length: 100 }, (_, i) => mixedSize(i));
    expect(sizes.filter((s) => s === 1 << 20)).toHaveLength(10);
    expect(sizes.filter((s) => s === 4096)).toHaveLength(90);
  });
});
