import type { Message } from 'kafkajs';
import type { BenchContext } from '../context.js';
import type { SystemId, WorkloadId } from '../model.js';
import { schemaBytes } from '../env/pgdb.js';
import { baseUs, createSourceSchema, createSourceTable, loadRows, sourceTable, type SourceTable } from '../env/source.js';
import { contentBytes, type BenchRow } from '../rows.js';
import { runB1, runB2, runB3, slug, type Load } from '../systems/baselines.js';
import { runB4 } from '../systems/b4-debezium.js';
import { applyAlone, dropTarget, endToEnd, pollAlone, prepare, rebuild } from '../systems/hw-stages.js';
import { encodeRow } from '../systems/payload.js';
import { targetValues } from '../systems/target-table.js';

/**
 * The first-load workloads (W1, W1-tree, W2, W2-mixed, and W4 on the tree): rows loaded once into a source
 * schema, then per repetition every selected system in turn on the same rows.
 */

export interface BulkSpec {
  readonly id: WorkloadId;
  readonly schema: string;
  readonly rows: () => BenchRow[];
  /** Systems that make sense for this workload. */
  readonly systems: readonly SystemId[];
  /** Also run W4 (a rebuild of the poll-alone topic) in each repetition. */
  readonly rebuildToo?: boolean;
  /** Record this workload's own measurements (false when only W4 needs its rows). */
  readonly measure?: boolean;
}

const TABLE = 'ReferralAttachment';

interface Prepared {
  readonly source: SourceTable;
  readonly base: number;
  readonly rows: readonly BenchRow[];
  readonly load: Load;
}

async function prepareSource(ctx: BenchContext, spec: BulkSpec): Promise<Prepared> {
  const rows = spec.rows();
  const source = sourceTable(spec.schema, TABLE);
  await createSourceSchema(ctx.source, spec.schema);
  await createSourceTable(ctx.source, source);
  const base = await baseUs(ctx.source, 3600);
  await loadRows(ctx.source, source, rows, base);
  ctx.log(`${spec.id}: ${rows.length} rows, ${(contentBytes(rows) / 1e6).toFixed(1)} MB of content loaded into the source (seed ${ctx.options.seed})`);
  return { source, base, rows, load: { rows: rows.length, bytes: contentBytes(rows) } };
}

export async function runBulk(ctx: BenchContext, spec: BulkSpec): Promise<void> {
  const p = await prepareSource(ctx, spec);
  const wants = (s: SystemId): boolean => spec.measure !== false && spec.systems.includes(s) && ctx.options.systems.has(s);
  const values = p.rows.map((r, i) => targetValues(r, i, p.base));
  const messages: Message[] = wants('B2') ? p.rows.map((r, i) => ({ key: r.key, value: encodeRow(r, i, p.base, TABLE) })) : [];
  for (let rep = 1; rep <= ctx.options.reps; rep++) {
    ctx.log(`${spec.id} repetition ${rep}/${ctx.options.reps}`);
    if (wants('B1')) await runB1(ctx, spec.id, rep, [{ name: TABLE, values }], p.load);
    if (spec.rebuildToo && ctx.options.systems.has('B1')) await runB1(ctx, 'W4', rep, [{ name: TABLE, values }], p.load);
    if (wants('B2')) await runB2(ctx, spec.id, rep, messages, p.load);
    if (wants('B3')) await runB3(ctx, spec.id, rep, p.source, p.base, p.load);
    if (ctx.options.systems.has('highwater')) await highwaterRep(ctx, spec, rep, p);
    if (wants('B4')) await runB4(ctx, spec.id, rep, p);
  }
}

async function highwaterRep(ctx: BenchContext, spec: BulkSpec, rep: number, p: Prepared): Promise<void> {
  const measure = spec.measure !== false;
  const expect = { rows: p.load.rows, bytes: p.load.bytes };
  const a = await prepare(ctx, `${slug(spec.id)}_r${rep}a`, [p.source]);
  await pollAlone(ctx, spec.id, rep, a, expect, measure);
  if (measure) await applyAlone(ctx, spec.id, rep, a, expect);
  if (spec.rebuildToo) await rebuild(ctx, 'W4', rep, a, expect);
  await dropTarget(ctx, a);
  if (!measure) return;
  const b = await prepare(ctx, `${slug(spec.id)}_r${rep}b`, [p.source]);
  const complete = await endToEnd(ctx, spec.id, rep, b, expect);
  // Storage of a target that did not receive every row would flatter it (staged chunks without their rows).
  if (spec.id.startsWith('W2') && complete) await observeStorage(ctx, spec.id, rep, b.targetSchema, p.load.bytes);
  await dropTarget(ctx, b);
}

async function observeStorage(ctx: BenchContext, w: WorkloadId, rep: number, schema: string, content: number): Promise<void> {
  const bytes = await schemaBytes(ctx.target, schema);
  ctx.collect.observe(w, 'highwater', rep, 'target storage', bytes / 1e6, 'MB');
  ctx.collect.observe(w, 'highwater', rep, 'storage/content', bytes / content, 'x');
}

export type { Prepared };
