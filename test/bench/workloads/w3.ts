import { loadConfigFile } from '../../../src/config/load.js';
import { createLogger } from '../../../src/logger.js';
import { Runtime } from '../../../src/wiring.js';
import type { BenchContext } from '../context.js';
import { baseUs, createSourceTable, createSourceSchema, loadRows, qualified, sourceTable, type SourceTable } from '../env/source.js';
import { flatRows, type BenchRow } from '../rows.js';
import { runB1 } from '../systems/baselines.js';
import type { HwSetup } from '../systems/highwater.js';
import { applyAlone, dropTarget, prepare } from '../systems/hw-stages.js';
import { targetValues } from '../systems/target-table.js';

/**
 * W3, the update storm: `keys` rows, each updated `versions - 1` times after a first poll, with one poll per round
 * (in process, through the Runtime), so the topic holds keys × versions change events, several versions of a key in
 * every apply batch. Measured: apply alone (a new group and an empty target replaying the topic), in versions/s,
 * against B1 = binary COPY of every version into the target's table shape without its key.
 */

const TABLE = 'ReferralAttachment';

export async function runW3(ctx: BenchContext): Promise<void> {
  const { w3Keys: keys, w3Versions: versions } = ctx.options.sizes;
  const rows = flatRows(ctx.options.seed + 3, keys).map((r) => ({ ...r, name: 'v0' }));
  const source = sourceTable('w3', TABLE);
  await createSourceSchema(ctx.source, 'w3');
  await createSourceTable(ctx.source, source);
  const base = await baseUs(ctx.source, 3600);
  await loadRows(ctx.source, source, rows, base);
  const producedMs = await publishVersions(ctx, source, versions);
  ctx.log(`W3: ${keys} keys × ${versions} versions published in ${(producedMs / 1000).toFixed(1)} s (${versions} polls in one process)`);
  const all = allVersions(rows, versions);
  const load = { rows: all.length, bytes: all.reduce((s, r) => s + (r.content?.length ?? 0), 0) };
  const values = all.map((r, i) => targetValues(r, i % keys, base));
  for (let rep = 1; rep <= ctx.options.reps; rep++) {
    ctx.log(`W3 repetition ${rep}/${ctx.options.reps}`);
    if (ctx.options.systems.has('B1')) await runB1(ctx, 'W3', rep, [{ name: TABLE, values }], load, false);
    if (ctx.options.systems.has('highwater')) {
      const setup = await prepare(ctx, `w3_r${rep}`, [source], { topicTag: 'w3v' });
      await applyAlone(ctx, 'W3', rep, setup, { rows: keys, units: all.length, bytes: load.bytes, where: `name = 'v${versions - 1}'` });
      ctx.collect.note(`W3 apply rows/s counts every version in the topic (${all.length}), the time is until every key shows its last version`);
      await dropTarget(ctx, setup);
    }
  }
}

/** The versions as the source held them: version v has its round number in the first 4 content bytes. */
function allVersions(rows: readonly BenchRow[], versions: number): BenchRow[] {
  const out: BenchRow[] = [];
  for (let v = 0; v < versions; v++) {
    for (const r of rows) out.push({ ...r, name: `v${v}`, content: v === 0 ? r.content : withRound(r.content!, v), modifiedOffsetUs: r.modifiedOffsetUs + v * 1_000_000 });
  }
  return out;
}

function withRound(content: Buffer, v: number): Buffer {
  const copy = Buffer.from(content);
  copy.writeInt32BE(v, 0);
  return copy;
}

/** First poll publishes version 0; each further round updates every key and polls again. */
async function publishVersions(ctx: BenchContext, source: SourceTable, versions: number): Promise<number> {
  const setup: HwSetup = await prepare(ctx, 'w3v', [source], { topicTag: 'w3v' });
  const config = await loadConfigFile(setup.configFile);
  const rt = new Runtime(config, createLogger({ level: 'warn', pretty: false }));
  const started = performance.now();
  try {
    const poller = await rt.poller();
    for (let v = 0; v < versions; v++) {
      if (v > 0) await updateRound(ctx, source, v);
      const summary = await poller.run({ requestedBy: 'bench' });
      if (summary.status !== 'completed') throw new Error(`W3 poll of round ${v} ${summary.status}: ${JSON.stringify(summary.tables.map((t) => t.error))}`);
    }
  } finally {
    await rt.close();
  }
  return performance.now() - started;
}

async function updateRound(ctx: BenchContext, t: SourceTable, v: number): Promise<void> {
  const client = await ctx.source.connect();
  try {
    await client.query('BEGIN');
    await client.query(`UPDATE ${qualified(t.schema, t.blob)} SET file_stream = overlay(file_stream PLACING int4send($1::int) FROM 1), name = $2`, [v, `v${v}`]);
    await client.query(`UPDATE ${qualified(t.schema, t.meta)} SET "ModifiedOn" = clock_timestamp()`);
    await client.query('COMMIT');
  } finally {
    client.release();
  }
}
