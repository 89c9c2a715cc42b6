import { createCipheriv, createHash } from 'node:crypto';
import { seeded as prng } from '../support/seeded.js';

/**
 * The benchmark's rows, generated from a seed: the same seed gives the same keys, tree shapes and bytes, so every
 * system of one run sees the same rows and a run can be replayed. Pure: no I/O, no clock.
 */

export interface BenchRow {
  readonly key: string;
  readonly name: string;
  readonly path: string;
  readonly parent: string | null;
  readonly isDirectory: boolean;
  readonly content: Buffer | null;
  /** Microseconds after the workload's base time: the row's ModifiedOn at the source. */
  readonly modifiedOffsetUs: number;
}

/** mulberry32 (test/support/seeded.ts): a seedable generator that shapes the rows, so a run replays from its seed. */
export { prng };

/** A version-4-shaped UUID from the generator. */
export function uuidFrom(next: () => number): string {
  const hex = Array.from({ length: 32 }, () => Math.floor(next() * 16).toString(16));
  hex[12] = '4';
  hex[16] = ((Number.parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  const s = hex.join('');
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

/** Incompressible bytes, the same for the same (seed, label): AES-128-CTR over zeros, keyed by both. */
export function randomContent(seed: number, label: string, size: number): Buffer {
  const key = createHash('sha256').update(`${seed}/${label}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

function smallSize(next: () => number): number {
  return 150 + Math.floor(next() * 101);
}

/** W1: `count` new files of ~200 B, no hierarchy between them (each its own root), ModifiedOn spread 1 µs apart. */
export function flatRows(seed: number, count: number): BenchRow[] {
  const next = prng(seed);
  return Array.from({ length: count }, (_, i) => ({
    key: uuidFrom(next),
    name: `file-${i}.txt`,
    path: `/${i + 1}/`,
    parent: null,
    isDirectory: false,
    content: randomContent(seed, `w1/${i}`, smallSize(next)),
    modifiedOffsetUs: i,
  }));
}

export interface TreeShape {
  readonly count: number;
  readonly maxDepth: number;
  /** Share of non-root rows that are folders. */
  readonly folderShare: number;
  /** Rows per root folder, on average. */
  readonly rowsPerRoot: number;
}

export const DEFAULT_TREE: Omit<TreeShape, 'count'> = { maxDepth: 6, folderShare: 0.15, rowsPerRoot: 200 };

interface Folder {
  readonly path: string;
  readonly depth: number;
  children: number;
}

/**
 * W1-tree: the W1 rows as folders and files, depth 1 (roots) to `maxDepth`. Every row's parent is generated before
 * it, but ModifiedOn is shuffled, so within the window children and parents come in any order.
 */
export function treeRows(seed: number, shape: TreeShape): BenchRow[] {
  const next = prng(seed);
  const roots = Math.max(1, Math.round(shape.count / shape.rowsPerRoot));
  const folders: Folder[] = [];
  const rows: BenchRow[] = [];
  for (let i = 0; i < shape.count; i++) {
    const parent = i < roots ? undefined : pickFolder(folders, next);
    const depth = parent === undefined ? 1 : parent.depth + 1;
    const isDirectory = parent === undefined || (depth < shape.maxDepth && next() < shape.folderShare);
    const path = parent === undefined ? `/${i + 1}/` : `${parent.path}${++parent.children}/`;
    if (isDirectory) folders.push({ path, depth, children: 0 });
    rows.push({
      key: uuidFrom(next),
      name: isDirectory ? `folder-${i}` : `file-${i}.txt`,
      path,
      parent: parent?.path ?? null,
      isDirectory,
      content: isDirectory ? null : randomContent(seed, `tree/${i}`, smallSize(next)),
      modifiedOffsetUs: 0,
    });
  }
  return withShuffledTimes(rows, next);
}

function pickFolder(folders: readonly Folder[], next: () => number): Folder {
  return folders[Math.floor(next() * folders.length)]!;
}

function withShuffledTimes(rows: BenchRow[], next: () => number): BenchRow[] {
  const offsets = rows.map((_, i) => i);
  for (let i = offsets.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [offsets[i], offsets[j]] = [offsets[j]!, offsets[i]!];
  }
  return rows.map((r, i) => ({ ...r, modifiedOffsetUs: offsets[i]! }));
}

/** W2: `count` files of `sizes(i)` incompressible bytes each. */
export function blobRows(seed: number, count: number, sizeOf: (i: number) => number, label = 'w2'): BenchRow[] {
  const next = prng(seed);
  return Array.from({ length: count }, (_, i) => ({
    key: uuidFrom(next),
    name: `blob-${i}.bin`,
    path: `/${i + 1}/`,
    parent: null,
    isDirectory: false,
    content: randomContent(seed, `${label}/${i}`, sizeOf(i)),
    modifiedOffsetUs: i,
  }));
}

export const MIB = 1 << 20;

/** The mixed W2 variant: 90 % 4 KiB, 10 % (every tenth row) 1 MiB. */
export function mixedSize(i: number): number {
  return i % 10 === 9 ? MIB : 4096;
}

/** Total content bytes of some rows. */
export function contentBytes(rows: readonly BenchRow[]): number {
  return rows.reduce((sum, r) => sum + (r.content?.length ?? 0), 0);
}

/** Depth of a path such as `/1/4/2/` (3). */
export function depthOf(path: string): number {
  return path.split('/').length - 2;
}
