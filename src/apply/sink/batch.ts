import { createHash } from 'node:crypto';
import { HighwaterError, coerceError } from '../../errors.js';
import { candidatesToWin } from '../../events/version.js';
import { assertIdentifier } from '../../sql/ident.js';
import { joinContent } from './chunks.js';
import type { StageInput } from './dialect.js';
import type { ApplyBatch, RowToApply, StoredOffset, WatermarkToRecord } from './writer.js';

/** Checks and mappings every target writer makes the same way, whatever its engine. */

export function isEmptyBatch(batch: ApplyBatch): boolean {
  return batch.rows.length + batch.deletes.length + batch.chunks.length + batch.watermarks.length + batch.offsets.length === 0;
}

/** A batch is about one table; rows or deletes of another table would be written to the wrong place. */
export function assertOneTable(batch: ApplyBatch): void {
  const stray = [...batch.rows.map((r) => r.change.table), ...batch.deletes.map((d) => d.table)].find((name) => name !== batch.table);
  if (stray !== undefined) throw new HighwaterError('INTERNAL', `a batch of ${batch.table} holds a record of ${stray}`);
}

/**
 * Maps configured table names to their target tables, refusing two names that land on one SQL table (the
 * dialect's naming folds case and punctuation).
 */
export function mapTargetTables<T extends { readonly table: string }>(schema: string, tables: readonly { readonly name: string }[], targetTable: (schema: string, name: string) => T): Map<string, T> {
  const byName = new Map<string, T>();
  const bySqlName = new Map<string, string>();
  for (const { name } of tables) {
    const t = targetTable(schema, name);
    const other = bySqlName.get(t.table);
    if (other !== undefined && other !== name) {
      throw new TypeError(`tables ${JSON.stringify(other)} and ${JSON.stringify(name)} both map to target table ${t.table}; rename one`);
    }
    bySqlName.set(t.table, name);
    byName.set(name, t);
  }
  return byName;
}

/** Runs a constructor-time check and reports its failure as a configuration error of that target. */
export function configured<T>(target: string, build: () => T): T {
  try {
    return build();
  } catch (thrown) {
    throw new HighwaterError('CONFIG_INVALID', `${target}: ${coerceError(thrown).message}`, { cause: thrown });
  }
}

/**
 * Keeps, per (tenant, key), the versions that can still win in the target (candidatesToWin: normally only the
 * greatest; more when a ModifiedOn moved backwards across a delete, the target's tombstones deciding). The upsert
 * picks one per key among them, so it (or a MERGE, which refuses to meet a key twice) writes each key once. The
 * others are `superseded` (counted as stale, their staged chunks released).
 */
export function reduceLatest<T extends RowToApply>(rows: readonly T[]): { latest: T[]; superseded: T[] } {
  const byKey = new Map<string, T[]>();
  for (const row of rows) {
    const id = `${row.change.tenant}\u0000${row.change.key}`;
    byKey.set(id, [...(byKey.get(id) ?? []), row]);
  }
  const latest = [...byKey.values()].flatMap((versions) => candidatesToWin(versions.map((r) => ({ ...r.change, row: r }))).map((c) => c.row));
  const kept = new Set(latest);
  return { latest, superseded: rows.filter((r) => !kept.has(r)) };
}

const RESERVED_PREFIX = 'hw_';

/**
 * The SQL name of a configured table (`name` may hold `.`, `-` and upper case), the same rule for every engine:
 * lower-cased, every character other than a-z, 0-9 and `_` turned into `_`, prefixed with `t_` when it would not
 * start with a letter or `_` or would start with `hw_` (bookkeeping tables), and cut to `maxLength` characters
 * (the last 9 being `_` and 8 hex digits of its SHA-256) when longer. Different names can map to one table
 * (`a.b`, `a_b`); the writer refuses that at construction.
 */
export function sqlTableName(name: string, maxLength: number): string {
  if (name.length === 0) throw new TypeError('a table name must not be empty');
  let base = name.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  if (!/^[a-z_]/.test(base) || base.startsWith(RESERVED_PREFIX)) base = `t_${base}`;
  if (base.length > maxLength) {
    const hash = createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 8);
    base = `${base.slice(0, maxLength - 9)}_${hash}`;
  }
  return assertIdentifier(base, 'target table name');
}

/** The greatest watermark of a batch per (topic, partition, scope): what every dialect stores. Pure. */
export function latestWatermarks(marks: readonly WatermarkToRecord[]): WatermarkToRecord[] {
  const latest = new Map<string, WatermarkToRecord>();
  for (const m of marks) {
    const id = JSON.stringify([m.topic, m.partition, m.scope]);
    const held = latest.get(id);
    if (held === undefined || m.watermark > held.watermark) latest.set(id, m);
  }
  return [...latest.values()];
}

/** The last next-offset of a batch per (topic, partition), as given. Pure. */
export function lastOffsets(offsets: readonly StoredOffset[]): StoredOffset[] {
  const last = new Map<string, StoredOffset>();
  for (const o of offsets) last.set(JSON.stringify([o.topic, o.partition]), o);
  return [...last.values()];
}

/** A staged value as the engines' bulk loads take it (binary COPY, TDS bulk load). */
export type StageValue = string | number | bigint | boolean | Buffer | null;

/**
 * One row's staging values, in the column order both dialects' STAGE_COLUMNS declare; content only when inline or
 * assembled in the batch (then staged as inline, joined here: one row at a time where the engine streams rows).
 * `size` converts the byte size for the engine's bulk load: PostgreSQL's COPY encoder takes the number as it is
 * (and refuses a fraction itself), SQL Server's bulk load wants a bigint.
 */
export function stageRowValues(row: StageInput, size: (bytes: number) => number | bigint = (n) => n): StageValue[] {
  const c = row.change;
  const a = c.attributes;
  const content = c.content;
  const assembled = row.assembled;
  return [
    c.tenant, c.key, c.name, c.pathLocator, c.parentPathLocator, c.isDirectory,
    c.size === null ? null : size(c.size),
    assembled !== undefined ? joinContent(assembled) : content.kind === 'inline' ? content.bytes : null,
    assembled !== undefined ? 'inline' : content.kind,
    c.contentSha256,
    assembled === undefined && content.kind === 'chunked' ? content.chunkCount : null,
    c.modifiedOn, c.observed, c.businessUnit,
    a.creationTime ?? null, a.lastWriteTime ?? null, a.lastAccessTime ?? null,
    a.isReadonly ?? null, a.isHidden ?? null, a.isSystem ?? null, a.isArchive ?? null,
    c.runId,
    row.sourcePartition ?? null,
    row.sourceOffset ?? null,
  ];
}
