import type { BenchContext } from '../context.js';
import { baseUs, createSourceSchema, createSourceTable, loadRows, sourceTable } from '../env/source.js';
import { contentBytes, flatRows } from '../rows.js';
import { runB1 } from '../systems/baselines.js';
import { dropTarget, endToEnd, prepare } from '../systems/hw-stages.js';
import { targetValues } from '../systems/target-table.js';

/** W6, per-topic overhead: many tables of a few thousand rows each, one configuration, one poller, one consumer. */
export async function runW6(ctx: BenchContext): Promise<void> {
  const { w6Tables, w6Rows } = ctx.options.sizes;
  await createSourceSchema(ctx.source, 'w6');
  const base = await baseUs(ctx.source, 3600);
  const tables = [];
  for (let i = 1; i <= w6Tables; i++) {
    const source = sourceTable('w6', `Attachment${String(i).padStart(2, '0')}`);
    const rows = flatRows(ctx.options.seed + 600 + i, w6Rows);
    await createSourceTable(ctx.source, source);
    await loadRows(ctx.source, source, rows, base);
    tables.push({ source, rows, values: rows.map((r, j) => targetValues(r, j, base)) });
  }
  const load = { rows: w6Tables * w6Rows, bytes: tables.reduce((s, t) => s + contentBytes(t.rows), 0) };
  ctx.log(`W6: ${w6Tables} tables × ${w6Rows} rows loaded`);
  for (let rep = 1; rep <= ctx.options.reps; rep++) {
    ctx.log(`W6 repetition ${rep}/${ctx.options.reps}`);
    if (ctx.options.systems.has('B1')) await runB1(ctx, 'W6', rep, tables.map((t) => ({ name: t.source.blob, values: t.values })), load);
    if (ctx.options.systems.has('highwater')) {
      const setup = await prepare(ctx, `w6_r${rep}`, tables.map((t) => t.source));
      await endToEnd(ctx, 'W6', rep, setup, load);
      await dropTarget(ctx, setup);
    }
  }
}
