import { createHash } from 'node:crypto';
import type { Ticks } from '../../contract.js';
import type { Logger } from '../../logger.js';
import { isoFromTicks } from '../../time/ticks.js';
import { TOP_PREFIX_LENGTH, type Cell, type ContentScope, type OrphanRow, type RowVersion, type RowsRequest, type SideQueries, type SummaryRequest } from './side/contract.js';

export { TOP_PREFIX_LENGTH, type Cell, type ContentScope, type OrphanRow, type RowVersion, type RowsRequest, type SideQueries, type SummaryRequest };

/**
 * Reconciliation of one target table with its source, set-based: no blob ever leaves a database.
 *
 * - **bucket**: the rows whose canonical key text (lower-case GUID text, as events carry it) starts with one prefix.
 *   Both engines cut the same prefix from the same text, so a bucket holds the same keys on both sides.
 * - **cell**: one bucket of one business unit on one side: row count, latest ModifiedOn and a digest.
 * - **line**: a row as digests see it, `key:ticks` — or `key:ticks:sha256` (hex, `-` for no content) when its
 *   content is checked. A **digest** is the SHA-256 (hex) of a cell's lines in byte order of the key, joined by `,`.
 * - **content scope**: which rows have their content hashed: every row (`--all`), or those of a contiguous range of
 *   two-hex-character key prefixes (`--sample f`: a key range, evaluated identically by both engines). Every row's
 *   key and ModifiedOn are compared either way; a sample only limits the blobs read.
 *
 * The comparison runs top-down: cells of 256 buckets on both sides; a bucket whose cells differ is either pulled —
 * the (key, BU, ticks, content hash) lists of both sides, diffed here — or, when it holds more than `maxBucketRows`,
 * cut into 16 sub-buckets one character longer and compared again. Orphans (children whose parent path matches no
 * row's path) are found by one anti-join per side.
 */

/** The first group of a GUID's text: a bucket is never cut finer. */
export const MAX_PREFIX_LENGTH = 8;
const HEX = '0123456789abcdef';
/** The 256 two-character prefixes of lower-case hex keys, in order. */
export const HEX_PREFIXES: readonly string[] = Array.from({ length: 256 }, (_, i) => `${HEX[i >> 4]}${HEX[i & 15]}`);

/** One side, connected: the engine's queries run by an executor the caller picks (pool, snapshot transaction). */
export interface ReconcileSide {
  summarize(request: SummaryRequest): Promise<Cell[]>;
  rows(request: RowsRequest): Promise<RowVersion[]>;
  orphans(examples: number): Promise<OrphanRow[]>;
}

export function sideOf<S>(queries: SideQueries<S>, exec: (what: string, statement: S) => Promise<Record<string, unknown>[]>): ReconcileSide {
  return {
    summarize: async (r) => (await exec(`${queries.describe}: bucket digests`, queries.summary(r))).map((x) => queries.toCell(x)),
    rows: async (r) => (await exec(`${queries.describe}: row versions`, queries.rows(r))).map((x) => queries.toRow(x)),
    orphans: async (n) => (await exec(`${queries.describe}: orphans`, queries.orphans(n))).map((x) => queries.toOrphan(x)),
  };
}

// ---------------------------------------------------------------------------------------------------- sampling

/**
 * The content scope of `--sample fraction`: `ceil(fraction × 256)` consecutive two-hex-character prefixes starting
 * at `start` (wrapping after `ff`) — a key range; 0 checks no content, 1 every hex key.
 */
export function sampleScope(fraction: number, start = 0): ContentScope {
  if (!Number.isFinite(fraction) || fraction < 0 || fraction > 1) throw new RangeError(`the sample fraction must be a number from 0 to 1, not ${fraction}`);
  if (!Number.isInteger(start) || start < 0 || start > 255) throw new RangeError(`the sample start must be a bucket from 0 to 255, not ${start}`);
  const count = Math.ceil(fraction * HEX_PREFIXES.length);
  const prefixes = Array.from({ length: count }, (_, i) => HEX_PREFIXES[(start + i) % HEX_PREFIXES.length]!);
  return { kind: 'sample', fraction, prefixes };
}

export function contentChecked(scope: ContentScope, key: string): boolean {
  return scope.kind === 'all' || scope.prefixes.includes(key.slice(0, TOP_PREFIX_LENGTH));
}

/** A sample as a person reads it: `40..7f (64 of 256 key prefixes)`. */
export function describeScope(scope: ContentScope): string {
  if (scope.kind === 'all') return 'content of every row';
  if (scope.prefixes.length === 0) return 'no content (sample 0)';
  return `content of keys ${scope.prefixes[0]}..${scope.prefixes.at(-1)} (${scope.prefixes.length} of ${HEX_PREFIXES.length} key prefixes)`;
}

// ---------------------------------------------------------------------------------------------------- digests

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export function lineOf(row: RowVersion): string {
  return row.contentSha256 === null ? `${row.key}:${row.modifiedOn}` : `${row.key}:${row.modifiedOn}:${row.contentSha256}`;
}

/** The digest of a cell, as the databases compute it: the reference the SQL of both engines must match. */
export function digestOf(rows: readonly RowVersion[]): string {
  const lines = [...rows].sort((a, b) => compareBytes(a.key, b.key)).map(lineOf);
  return createHash('sha256').update(lines.join(','), 'utf8').digest('hex');
}

/** Cells of rows, as a side's summary returns them (used by tests and in-memory sides). */
export function cellsOf(rows: readonly RowVersion[], prefixLength: number): Cell[] {
  const groups = new Map<string, RowVersion[]>();
  for (const r of rows) {
    const id = JSON.stringify([r.businessUnit, r.key.slice(0, prefixLength)]);
    groups.set(id, [...(groups.get(id) ?? []), r]);
  }
  return [...groups.values()].map((g) => ({
    businessUnit: g[0]!.businessUnit,
    bucket: g[0]!.key.slice(0, prefixLength),
    rows: g.length,
    latest: g.reduce<Ticks | null>((m, r) => (m === null || r.modifiedOn > m ? r.modifiedOn : m), null),
    digest: digestOf(g),
  }));
}

// ---------------------------------------------------------------------------------------------------- buckets

export interface BucketDelta {
  readonly bucket: string;
  readonly sourceRows: number;
  readonly targetRows: number;
}

function byBucket(cells: readonly Cell[]): Map<string, Cell[]> {
  const out = new Map<string, Cell[]>();
  for (const c of cells) out.set(c.bucket, [...(out.get(c.bucket) ?? []), c]);
  return out;
}

function sameCells(a: readonly Cell[], b: readonly Cell[]): boolean {
  if (a.length !== b.length) return false;
  const other = new Map(b.map((c) => [c.businessUnit, c]));
  return a.every((c) => {
    const o = other.get(c.businessUnit);
    return o !== undefined && o.rows === c.rows && o.digest === c.digest;
  });
}

const sum = (cells: readonly Cell[] | undefined): number => (cells ?? []).reduce((n, c) => n + c.rows, 0);

/** Buckets whose cells differ between the sides (any business unit, count or digest), in key byte order. */
export function differingBuckets(source: readonly Cell[], target: readonly Cell[]): BucketDelta[] {
  const s = byBucket(source);
  const t = byBucket(target);
  const buckets = [...new Set([...s.keys(), ...t.keys()])].sort(compareBytes);
  return buckets
    .filter((b) => !sameCells(s.get(b) ?? [], t.get(b) ?? []))
    .map((bucket) => ({ bucket, sourceRows: sum(s.get(bucket)), targetRows: sum(t.get(bucket)) }));
}

export type BucketWork =
  | { readonly kind: 'pull'; readonly buckets: readonly string[]; readonly rows: number }
  | { readonly kind: 'drill'; readonly bucket: string; readonly rows: number };

/**
 * What to do with differing buckets, in key order: consecutive buckets are pulled together while both sides'
 * rows add up to at most `maxRows`; a bucket larger than that is cut finer (drilled), unless it is already
 * `MAX_PREFIX_LENGTH` long, or cannot be cut because its prefix is shorter than the prefix length (short keys).
 */
export function planBuckets(deltas: readonly BucketDelta[], prefixLength: number, maxRows: number): BucketWork[] {
  const work: BucketWork[] = [];
  let group: string[] = [];
  let groupRows = 0;
  const flush = (): void => {
    if (group.length > 0) work.push({ kind: 'pull', buckets: group, rows: groupRows });
    group = [];
    groupRows = 0;
  };
  for (const d of deltas) {
    const rows = d.sourceRows + d.targetRows;
    if (rows > maxRows && prefixLength < MAX_PREFIX_LENGTH && d.bucket.length === prefixLength) {
      flush();
      work.push({ kind: 'drill', bucket: d.bucket, rows });
      continue;
    }
    if (groupRows + rows > maxRows) flush();
    group.push(d.bucket);
    groupRows += rows;
  }
  flush();
  return work;
}

// ---------------------------------------------------------------------------------------------------- row diffs

export type DiffReason = 'modifiedOn' | 'content' | 'businessUnit';

export interface Differing {
  readonly key: string;
  readonly reasons: readonly DiffReason[];
  readonly source: RowVersion;
  readonly target: RowVersion;
}

export interface RowsDiff {
  /** In the source, not in the target. */
  readonly missing: RowVersion[];
  /** In the target, not in the source. */
  readonly extra: RowVersion[];
  readonly differing: Differing[];
}

function reasonsOf(s: RowVersion, t: RowVersion): DiffReason[] {
  const reasons: DiffReason[] = [];
  if (s.modifiedOn !== t.modifiedOn) reasons.push('modifiedOn');
  if (s.contentSha256 !== null && t.contentSha256 !== null && s.contentSha256 !== t.contentSha256) reasons.push('content');
  if (s.businessUnit !== t.businessUnit) reasons.push('businessUnit');
  return reasons;
}

/** Keys and versions of the same buckets on both sides, compared by key; every list comes out in key order. */
export function diffRows(source: readonly RowVersion[], target: readonly RowVersion[]): RowsDiff {
  const targetByKey = new Map(target.map((r) => [r.key, r]));
  const sourceKeys = new Set<string>();
  const missing: RowVersion[] = [];
  const differing: Differing[] = [];
  for (const s of source) {
    sourceKeys.add(s.key);
    const t = targetByKey.get(s.key);
    if (t === undefined) {
      missing.push(s);
      continue;
    }
    const reasons = reasonsOf(s, t);
    if (reasons.length > 0) differing.push({ key: s.key, reasons, source: s, target: t });
  }
  const extra = target.filter((t) => !sourceKeys.has(t.key));
  const order = <T extends { key: string }>(list: T[]): T[] => list.sort((a, b) => compareBytes(a.key, b.key));
  return { missing: order(missing), extra: order(extra), differing: order(differing) };
}

// ---------------------------------------------------------------------------------------------------- results

export interface KeyList<T> {
  count: number;
  examples: T[];
}

export interface VersionView {
  readonly businessUnit: string | null;
  readonly modifiedOnTicks: Ticks;
  readonly modifiedOn: string;
  readonly contentSha256: string | null;
}

export interface DifferingExample {
  readonly key: string;
  readonly reasons: readonly DiffReason[];
  readonly source: VersionView;
  readonly target: VersionView;
}

export type ChecksumStatus = 'equal' | 'different' | 'not-checked';

export interface SideTotals {
  readonly rows: number;
  readonly latestModifiedOnTicks: Ticks | null;
  readonly latestModifiedOn: string | null;
}

/** One table, tenant and business unit. */
export interface ScopeComparison {
  readonly businessUnit: string | null;
  readonly source: SideTotals;
  readonly target: SideTotals;
  /** Over the buckets in the content scope: digests of (bucket, count, cell digest) per side. */
  readonly checksum: { readonly status: ChecksumStatus; readonly buckets: number; readonly source: string | null; readonly target: string | null };
  readonly missing: KeyList<string>;
  readonly extra: KeyList<string>;
  readonly differing: KeyList<DifferingExample>;
  readonly orphans: { readonly source: KeyList<string>; readonly target: KeyList<string> };
  readonly equal: boolean;
}

export interface TableComparison {
  readonly equal: boolean;
  readonly scopes: ScopeComparison[];
  readonly buckets: { readonly compared: number; readonly differing: number; readonly drilled: number; readonly rowsPulled: number };
}

export interface ReconcileOptions {
  readonly content: ContentScope;
  /** Example keys kept per list and business unit. */
  readonly examples: number;
  /** Most rows (both sides together) pulled into the service at once; larger differing buckets are cut finer. */
  readonly maxBucketRows: number;
  readonly logger?: Logger;
}

export const DEFAULT_MAX_BUCKET_ROWS = 100_000;

/** Per business unit: counts and examples of the row-level differences found so far. */
class Tally {
  readonly missing = new Map<string | null, KeyList<string>>();
  readonly extra = new Map<string | null, KeyList<string>>();
  readonly differing = new Map<string | null, KeyList<DifferingExample>>();
  rowsPulled = 0;
  drilled = 0;
  differingBuckets = 0;

  constructor(private readonly examples: number) {}

  add(diff: RowsDiff): void {
    for (const r of diff.missing) this.push(this.missing, r.businessUnit, r.key);
    for (const r of diff.extra) this.push(this.extra, r.businessUnit, r.key);
    for (const d of diff.differing) this.push(this.differing, d.source.businessUnit, { key: d.key, reasons: d.reasons, source: view(d.source), target: view(d.target) });
  }

  private push<T>(map: Map<string | null, KeyList<T>>, bu: string | null, example: T): void {
    let list = map.get(bu);
    if (list === undefined) map.set(bu, (list = { count: 0, examples: [] }));
    list.count += 1;
    if (list.examples.length < this.examples) list.examples.push(example);
  }
}

function view(r: RowVersion): VersionView {
  return { businessUnit: r.businessUnit, modifiedOnTicks: r.modifiedOn, modifiedOn: isoFromTicks(r.modifiedOn), contentSha256: r.contentSha256 };
}

/** Compares one table on two sides; the sides decide how statements run (the caller owns connections). */
export async function reconcileTable(source: ReconcileSide, target: ReconcileSide, options: ReconcileOptions): Promise<TableComparison> {
  const top: SummaryRequest = { prefixLength: TOP_PREFIX_LENGTH, within: null, content: options.content };
  const [sourceCells, targetCells, sourceOrphans, targetOrphans] = await Promise.all([
    source.summarize(top), target.summarize(top), source.orphans(options.examples), target.orphans(options.examples),
  ]);
  const tally = new Tally(options.examples);
  const deltas = differingBuckets(sourceCells, targetCells);
  await compareBuckets(source, target, deltas, TOP_PREFIX_LENGTH, options, tally);
  const scopes = scopeComparisons({ sourceCells, targetCells, sourceOrphans, targetOrphans, tally, options });
  const compared = new Set([...sourceCells, ...targetCells].map((c) => c.bucket)).size;
  return {
    equal: scopes.every((s) => s.equal),
    scopes,
    buckets: { compared, differing: deltas.length, drilled: tally.drilled, rowsPulled: tally.rowsPulled },
  };
}

async function compareBuckets(source: ReconcileSide, target: ReconcileSide, deltas: readonly BucketDelta[], prefixLength: number, options: ReconcileOptions, tally: Tally): Promise<void> {
  for (const work of planBuckets(deltas, prefixLength, options.maxBucketRows)) {
    if (work.kind === 'pull') {
      const request: RowsRequest = { prefixLength, buckets: work.buckets, content: options.content };
      const [s, t] = await Promise.all([source.rows(request), target.rows(request)]);
      options.logger?.debug({ buckets: work.buckets.length, prefixLength, source: s.length, target: t.length }, 'pulled row versions of differing buckets');
      tally.rowsPulled += s.length + t.length;
      tally.add(diffRows(s, t));
      continue;
    }
    tally.drilled += 1;
    const request: SummaryRequest = { prefixLength: prefixLength + 1, within: [work.bucket], content: options.content };
    const [s, t] = await Promise.all([source.summarize(request), target.summarize(request)]);
    options.logger?.debug({ bucket: work.bucket, rows: work.rows }, 'bucket too large to pull: comparing its sub-buckets');
    await compareBuckets(source, target, differingBuckets(s, t), prefixLength + 1, options, tally);
  }
}

// ---------------------------------------------------------------------------------------------------- per business unit

function totals(cells: readonly Cell[]): SideTotals {
  const rows = cells.reduce((n, c) => n + c.rows, 0);
  const latest = cells.reduce<Ticks | null>((m, c) => (c.latest !== null && (m === null || c.latest > m) ? c.latest : m), null);
  return { rows, latestModifiedOnTicks: latest, latestModifiedOn: latest === null ? null : isoFromTicks(latest) };
}

/** The digest of a business unit's cells in the content scope, or null when it has none there. */
export function scopeChecksum(cells: readonly Cell[], content: ContentScope): { digest: string | null; buckets: number } {
  const inScope = cells
    .filter((c) => content.kind === 'all' || content.prefixes.includes(c.bucket))
    .sort((a, b) => compareBytes(a.bucket, b.bucket));
  if (inScope.length === 0) return { digest: null, buckets: 0 };
  const text = inScope.map((c) => `${c.bucket}:${c.rows}:${c.digest}`).join('\n');
  return { digest: createHash('sha256').update(text, 'utf8').digest('hex'), buckets: inScope.length };
}

function checksumOf(s: readonly Cell[], t: readonly Cell[], content: ContentScope): ScopeComparison['checksum'] {
  const a = scopeChecksum(s, content);
  const b = scopeChecksum(t, content);
  const status: ChecksumStatus = a.digest === null && b.digest === null ? 'not-checked' : a.digest === b.digest ? 'equal' : 'different';
  return { status, buckets: Math.max(a.buckets, b.buckets), source: a.digest, target: b.digest };
}

function orphanList(rows: readonly OrphanRow[], bu: string | null, examples: number): KeyList<string> {
  const mine = rows.filter((r) => r.businessUnit === bu);
  return { count: mine[0]?.total ?? 0, examples: mine.map((r) => r.key).sort(compareBytes).slice(0, examples) };
}

interface ScopeInputs {
  readonly sourceCells: readonly Cell[];
  readonly targetCells: readonly Cell[];
  readonly sourceOrphans: readonly OrphanRow[];
  readonly targetOrphans: readonly OrphanRow[];
  readonly tally: Tally;
  readonly options: ReconcileOptions;
}

function businessUnits(i: ScopeInputs): (string | null)[] {
  const all = new Set<string | null>([
    ...i.sourceCells.map((c) => c.businessUnit), ...i.targetCells.map((c) => c.businessUnit),
    ...i.sourceOrphans.map((o) => o.businessUnit), ...i.targetOrphans.map((o) => o.businessUnit),
    ...i.tally.missing.keys(), ...i.tally.extra.keys(), ...i.tally.differing.keys(),
  ]);
  return [...all].sort((a, b) => (a === null ? -1 : b === null ? 1 : compareBytes(a, b)));
}

function scopeComparisons(i: ScopeInputs): ScopeComparison[] {
  const none = <T>(): KeyList<T> => ({ count: 0, examples: [] });
  return businessUnits(i).map((bu) => {
    const s = i.sourceCells.filter((c) => c.businessUnit === bu);
    const t = i.targetCells.filter((c) => c.businessUnit === bu);
    const scope = {
      businessUnit: bu,
      source: totals(s),
      target: totals(t),
      checksum: checksumOf(s, t, i.options.content),
      missing: i.tally.missing.get(bu) ?? none<string>(),
      extra: i.tally.extra.get(bu) ?? none<string>(),
      differing: i.tally.differing.get(bu) ?? none<DifferingExample>(),
      orphans: { source: orphanList(i.sourceOrphans, bu, i.options.examples), target: orphanList(i.targetOrphans, bu, i.options.examples) },
    };
    return { ...scope, equal: scopeEqual(scope) };
  });
}

/**
 * Equal: same counts and latest ModifiedOn, no checksum difference, no missing, extra or differing row, and no
 * orphan in the target. Orphans of the source are reported but are no difference by themselves (the target
 * cannot hold their children either, which shows as missing rows).
 */
export function scopeEqual(s: Omit<ScopeComparison, 'equal'>): boolean {
  return s.source.rows === s.target.rows
    && s.source.latestModifiedOnTicks === s.target.latestModifiedOnTicks
    && s.checksum.status !== 'different'
    && s.missing.count === 0 && s.extra.count === 0 && s.differing.count === 0
    && s.orphans.target.count === 0;
}
