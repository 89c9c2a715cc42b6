/**
 * The invariants of ../shared/RELIABILITY.md (I1–I4), checked with the test's own SQL, never with the product's
 * `reconcile`: a defect shared by the product and its own checker would pass unseen.
 *
 * - I1 No loss: a full outer join on the key of the source's replicated set (blob ⋈ metadata ⋈ BU map, minus the
 *   excluded keys — the set SPEC.md says is replicated) and the target table; every source row must be in the
 *   target with the same ModifiedOn (NULL included: rows with a NULL ModifiedOn are replicated) and the same
 *   sha256 of content. Strict: IS DISTINCT FROM, so NULL against a value is a difference.
 * - I2 No regression: an audit trigger installed on the target table before its first write records every write;
 *   an UPDATE to an older version (contract v2 order: ModifiedOn with NULL first, then the observation) counts.
 * - I3 No phantoms: a target row whose key is not in the source's replicated set.
 * - I4 Duplicates: writes applied (inserts and updates) minus the distinct versions written, printed, not failed.
 *
 * Source and target are separate databases, so the source's replicated set is copied into a temporary table on
 * the target connection (keys, ticks and hashes only) and joined there in one statement.
 *
 * Usage: `installAuditTrigger(target, table)` once the target table exists and before any consumer starts, then
 * `checkInvariants({ source, target, table })` after the pipeline drained, and `formatReport(report)` to print it.
 */
import type pg from 'pg';
import { quotePg } from '../../src/sql/ident.js';

export interface QualifiedName {
  readonly schema: string;
  readonly table: string;
}

/** Where the replicated set lives in a PostgreSQL source and where its copy lives in a PostgreSQL target. */
export interface ReplicatedTable {
  readonly source: {
    readonly blob: QualifiedName;
    readonly metadata: QualifiedName & { readonly joinColumn: string };
    /** Key column of the blob table (default stream_id). */
    readonly keyColumn?: string;
    /** Content column of the blob table (default file_stream). */
    readonly contentColumn?: string;
    /** ModifiedOn column of the metadata table (default ModifiedOn). */
    readonly modifiedOnColumn?: string;
    /** The BU mapping: only rows whose BU is in the map table are replicated. Omit when the table has none. */
    readonly businessUnit?: { readonly column: string; readonly mapTable: QualifiedName & { readonly idColumn: string } };
    /** Keys never replicated (compared case-insensitively, as the poller does). */
    readonly excludedKeys?: readonly string[];
  };
  /** The target table written by the consumers (columns of schema/target-postgres/blob-table.sql). */
  readonly target: QualifiedName;
  /** Tenant of this source in the target (default ''). */
  readonly tenant?: string;
}

/** One divergent key: what the source and the target hold (null side = no row). */
export interface KeyDiff {
  readonly key: string;
  readonly source: { readonly ticks: string | null; readonly sha256: string | null } | null;
  readonly target: { readonly ticks: string | null; readonly sha256: string | null; readonly observed: string | null } | null;
  /** missing: source only; modified-on / content: both sides, different; phantom: target only. */
  readonly kind: 'missing' | 'modified-on' | 'content' | 'phantom';
}

export interface Regression {
  readonly key: string;
  readonly oldTicks: string | null;
  readonly oldObserved: string | null;
  readonly newTicks: string | null;
  readonly newObserved: string | null;
  readonly at: string;
}

export interface InvariantReport {
  readonly sourceRows: number;
  readonly targetRows: number;
  /** I1: source rows missing from the target or held there with another ModifiedOn or content. */
  readonly i1: { readonly count: number; readonly missing: number; readonly modifiedOn: number; readonly content: number; readonly samples: readonly KeyDiff[] };
  /** I2: updates to an older version recorded by the audit trigger; null when no trigger was installed. */
  readonly i2: { readonly count: number; readonly samples: readonly Regression[] } | null;
  /** I3: target rows without a source row. */
  readonly i3: { readonly count: number; readonly samples: readonly KeyDiff[] };
  /** I4: writes applied minus distinct versions written (harmless, reported); null without the trigger. */
  readonly i4: { readonly writes: number; readonly distinctVersions: number; readonly duplicates: number; readonly deletes: number } | null;
  /** I1, I2 and I3 hold. */
  readonly ok: boolean;
}

export interface CheckOptions {
  readonly source: pg.Pool;
  readonly target: pg.Pool;
  readonly table: ReplicatedTable;
  /** Divergent keys listed per invariant (default 20). */
  readonly samples?: number;
}

/** Name of the audit table created next to the target table. */
export function auditTableOf(table: ReplicatedTable): QualifiedName {
  return { schema: table.target.schema, table: `${table.target.table}_hw_audit`.slice(0, 63) };
}

const qualified = (n: QualifiedName): string => `${quotePg(n.schema)}.${quotePg(n.table)}`;

/**
 * Creates the audit table and an AFTER trigger on the target table recording every insert, update and delete with
 * the old and new versions. Call it after the target table exists (`highwater init`) and before any consumer
 * writes; it is idempotent.
 */
export async function installAuditTrigger(target: pg.Pool | pg.ClientBase, table: ReplicatedTable): Promise<void> {
  const audit = qualified(auditTableOf(table));
  const fn = `${quotePg(table.target.schema)}.${quotePg(`${table.target.table}_hw_audit_fn`.slice(0, 63))}`;
  await target.query(`
CREATE TABLE IF NOT EXISTS ${audit} (
  id            bigserial   PRIMARY KEY,
  op            text        NOT NULL,
  tenant        text        NOT NULL,
  key           text        NOT NULL,
  old_ticks     bigint,
  old_observed  bigint,
  new_ticks     bigint,
  new_observed  bigint,
  new_sha256    bytea,
  at            timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO ${audit} (op, tenant, key, new_ticks, new_observed, new_sha256)
      VALUES ('I', NEW.tenant, NEW.key, NEW.modified_on_ticks, NEW.observed_ticks, sha256(NEW.content));
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO ${audit} (op, tenant, key, old_ticks, old_observed, new_ticks, new_observed, new_sha256)
      VALUES ('U', NEW.tenant, NEW.key, OLD.modified_on_ticks, OLD.observed_ticks, NEW.modified_on_ticks, NEW.observed_ticks, sha256(NEW.content));
  ELSE
    INSERT INTO ${audit} (op, tenant, key, old_ticks, old_observed) VALUES ('D', OLD.tenant, OLD.key, OLD.modified_on_ticks, OLD.observed_ticks);
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS hw_audit ON ${qualified(table.target)};
CREATE TRIGGER hw_audit AFTER INSERT OR UPDATE OR DELETE ON ${qualified(table.target)} FOR EACH ROW EXECUTE FUNCTION ${fn}();`);
}

/** The source's replicated set as (key, ModifiedOn in 100 ns ticks since 1970, sha256 hex of content). */
export function replicatedSetQuery(table: ReplicatedTable): { text: string; values: unknown[] } {
  const s = table.source;
  const key = quotePg(s.keyColumn ?? 'stream_id');
  const modifiedOn = quotePg(s.modifiedOnColumn ?? 'ModifiedOn');
  const content = quotePg(s.contentColumn ?? 'file_stream');
  const bu = s.businessUnit
    ? `JOIN ${qualified(s.businessUnit.mapTable)} u ON u.${quotePg(s.businessUnit.mapTable.idColumn)} = m.${quotePg(s.businessUnit.column)}`
    : '';
  // extract(epoch …) is numeric on PostgreSQL 14+, so microseconds convert to ticks exactly.
  return {
    text: `SELECT b.${key}::text AS key, (extract(epoch FROM m.${modifiedOn}) * 10000000)::bigint::text AS ticks,
        encode(sha256(b.${content}), 'hex') AS sha256
      FROM ${qualified(s.blob)} b
      JOIN ${qualified(s.metadata)} m ON m.${quotePg(s.metadata.joinColumn)} = b.${key}
      ${bu}
      WHERE NOT (lower(b.${key}::text) = ANY($1::text[]))`,
    values: [(s.excludedKeys ?? []).map((k) => k.toLowerCase())],
  };
}

export async function checkInvariants(options: CheckOptions): Promise<InvariantReport> {
  const limit = options.samples ?? 20;
  const { rows: sourceRows } = await options.source.query<{ key: string; ticks: string | null; sha256: string | null }>(replicatedSetQuery(options.table));
  const client = await options.target.connect();
  try {
    await client.query('BEGIN');
    await client.query('CREATE TEMPORARY TABLE hw_inv_source (key text PRIMARY KEY, ticks bigint, sha256 text) ON COMMIT DROP');
    await client.query('INSERT INTO hw_inv_source SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])',
      [sourceRows.map((r) => r.key), sourceRows.map((r) => r.ticks), sourceRows.map((r) => r.sha256)]);
    const diffs = await fullOuterJoin(client, options.table);
    const targetCount = await countTarget(client, options.table);
    const audit = await auditFindings(client, options.table, limit);
    await client.query('COMMIT');
    return assemble(sourceRows.length, targetCount, diffs, audit, limit);
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

async function fullOuterJoin(client: pg.ClientBase, table: ReplicatedTable): Promise<KeyDiff[]> {
  const { rows } = await client.query<{ key: string; s_key: string | null; s_ticks: string | null; s_sha: string | null; t_key: string | null; t_ticks: string | null; t_sha: string | null; t_observed: string | null }>(
    `SELECT coalesce(s.key, t.key) AS key, s.key AS s_key, s.ticks::text AS s_ticks, s.sha256 AS s_sha,
        t.key AS t_key, t.modified_on_ticks::text AS t_ticks, encode(sha256(t.content), 'hex') AS t_sha, t.observed_ticks::text AS t_observed
      FROM hw_inv_source s
      FULL OUTER JOIN (SELECT * FROM ${qualified(table.target)} WHERE tenant = $1) t ON t.key = s.key
      WHERE s.key IS NULL OR t.key IS NULL
         OR s.ticks IS DISTINCT FROM t.modified_on_ticks
         OR s.sha256 IS DISTINCT FROM encode(sha256(t.content), 'hex')
      ORDER BY 1`,
    [table.tenant ?? '']);
  return rows.map((r) => ({
    key: r.key,
    source: r.s_key === null ? null : { ticks: r.s_ticks, sha256: r.s_sha },
    target: r.t_key === null ? null : { ticks: r.t_ticks, sha256: r.t_sha, observed: r.t_observed },
    kind: r.t_key === null ? 'missing' : r.s_key === null ? 'phantom' : r.s_ticks !== r.t_ticks ? 'modified-on' : 'content',
  }));
}

async function countTarget(client: pg.ClientBase, table: ReplicatedTable): Promise<number> {
  const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${qualified(table.target)} WHERE tenant = $1`, [table.tenant ?? '']);
  return rows[0]!.n;
}

interface AuditFindings {
  readonly regressions: number;
  readonly samples: Regression[];
  readonly writes: number;
  readonly distinctVersions: number;
  readonly deletes: number;
}

async function auditFindings(client: pg.ClientBase, table: ReplicatedTable, limit: number): Promise<AuditFindings | null> {
  const audit = qualified(auditTableOf(table));
  const { rows: exists } = await client.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [audit]);
  if (!exists[0]!.present) return null;
  const min = '(-9223372036854775808)::bigint';
  const older = `(coalesce(new_ticks, ${min}), coalesce(new_observed, ${min})) < (coalesce(old_ticks, ${min}), coalesce(old_observed, ${min}))`;
  const { rows: regressions } = await client.query<{ key: string; old_ticks: string | null; old_observed: string | null; new_ticks: string | null; new_observed: string | null; at: Date; total: number }>(
    `SELECT key, old_ticks::text, old_observed::text, new_ticks::text, new_observed::text, at, count(*) OVER ()::int AS total
       FROM ${audit} WHERE op = 'U' AND tenant = $1 AND ${older} ORDER BY id LIMIT $2`, [table.tenant ?? '', limit]);
  const { rows: counts } = await client.query<{ writes: number; versions: number; deletes: number }>(
    `SELECT count(*) FILTER (WHERE op <> 'D')::int AS writes,
        count(DISTINCT (key, new_ticks, new_observed, new_sha256)) FILTER (WHERE op <> 'D')::int AS versions,
        count(*) FILTER (WHERE op = 'D')::int AS deletes
       FROM ${audit} WHERE tenant = $1`, [table.tenant ?? '']);
  return {
    regressions: regressions[0]?.total ?? 0,
    samples: regressions.map((r) => ({ key: r.key, oldTicks: r.old_ticks, oldObserved: r.old_observed, newTicks: r.new_ticks, newObserved: r.new_observed, at: r.at.toISOString() })),
    writes: counts[0]!.writes,
    distinctVersions: counts[0]!.versions,
    deletes: counts[0]!.deletes,
  };
}

function assemble(sourceRows: number, targetRows: number, diffs: readonly KeyDiff[], audit: AuditFindings | null, limit: number): InvariantReport {
  const lost = diffs.filter((d) => d.kind !== 'phantom');
  const phantoms = diffs.filter((d) => d.kind === 'phantom');
  const i1 = {
    count: lost.length,
    missing: lost.filter((d) => d.kind === 'missing').length,
    modifiedOn: lost.filter((d) => d.kind === 'modified-on').length,
    content: lost.filter((d) => d.kind === 'content').length,
    samples: lost.slice(0, limit),
  };
  const i3 = { count: phantoms.length, samples: phantoms.slice(0, limit) };
  const i2 = audit === null ? null : { count: audit.regressions, samples: audit.samples };
  const i4 = audit === null ? null : { writes: audit.writes, distinctVersions: audit.distinctVersions, duplicates: audit.writes - audit.distinctVersions, deletes: audit.deletes };
  return { sourceRows, targetRows, i1, i2, i3, i4, ok: i1.count === 0 && i3.count === 0 && (i2?.count ?? 0) === 0 };
}

/** A readable report: counts per invariant, then every sampled divergent key with both sides. */
export function formatReport(report: InvariantReport, label = ''): string {
  const lines = [
    `${label ? `${label}: ` : ''}${report.ok ? 'converged' : 'DIVERGED'} — source ${report.sourceRows} rows, target ${report.targetRows} rows`,
    `  I1 no loss:       ${report.i1.count} (missing ${report.i1.missing}, ModifiedOn ${report.i1.modifiedOn}, content ${report.i1.content})`,
    `  I2 no regression: ${report.i2 === null ? 'not checked (no audit trigger)' : report.i2.count}`,
    `  I3 no phantoms:   ${report.i3.count}`,
    `  I4 duplicates:    ${report.i4 === null ? 'not counted (no audit trigger)' : `${report.i4.duplicates} (${report.i4.writes} writes, ${report.i4.distinctVersions} distinct versions, ${report.i4.deletes} deletes)`}`,
  ];
  for (const d of [...report.i1.samples, ...report.i3.samples]) lines.push(`    ${d.kind.padEnd(11)} ${d.key}  source ${side(d.source)}  target ${side(d.target)}`);
  for (const r of report.i2?.samples ?? []) lines.push(`    regression  ${r.key}  (${r.oldTicks}, ${r.oldObserved}) -> (${r.newTicks}, ${r.newObserved}) at ${r.at}`);
  return lines.join('\n');
}

function side(v: { ticks: string | null; sha256: string | null; observed?: string | null } | null): string {
  if (v === null) return '(none)';
  const observed = v.observed !== undefined ? ` observed ${v.observed ?? 'NULL'}` : '';
  return `ModifiedOn ${v.ticks ?? 'NULL'} sha ${v.sha256 === null ? 'NULL' : v.sha256.slice(0, 12)}${observed}`;
}
