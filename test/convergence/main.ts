/**
 * `npm run test:convergence -- [options]`: seeded histories on the real pipeline, one seed after another, then a
 * summary table. Exits 1 when any seed diverged (or could not drain), 0 when every one converged.
 *
 *   --seeds N      run N seeds: --from, --from+1, … (default 1 seed)
 *   --from S       first seed of --seeds (default 1)
 *   --seed S       run this one seed (HIGHWATER_SEED=S does the same)
 *   --size small|large   history size (default large)
 *   --no-rebuild   skip the fresh target filled from the compacted topic
 *   --rebuild-every K   fill a fresh target only for every K-th seed (it takes as long as the rest of a seed)
 *   --keep-going   do not stop at the first failing seed (the default with --seeds)
 *
 * PostgreSQL: HIGHWATER_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres). Kafka: a broker started
 * here with the dev runtime (src/dev/kafka), or HIGHWATER_TEST_KAFKA_BROKERS.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureKafkaRuntime, KAFKA_VERSION, startKafka, type KafkaBroker } from '../../src/dev/kafka/kafka.js';
import { SHAPES, type SizeName } from './history.js';
import { killAllChildren } from './processes.js';
import { runSeed, type SeedResult } from './scenario.js';
import { summaryTable } from './summary.js';

const DEFAULT_PG_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

interface Options {
  readonly seeds: readonly number[];
  readonly size: SizeName;
  readonly rebuild: boolean;
  readonly rebuildEvery: number;
}

function parseOptions(argv: readonly string[]): Options {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      seeds: { type: 'string' }, from: { type: 'string' }, seed: { type: 'string' }, size: { type: 'string', default: 'large' },
      'no-rebuild': { type: 'boolean', default: false }, 'rebuild-every': { type: 'string', default: '1' },
    },
  });
  const size = values.size as SizeName;
  if (!(size in SHAPES)) throw new Error(`--size must be one of ${Object.keys(SHAPES).join(', ')}`);
  const one = values.seed ?? process.env.HIGHWATER_SEED;
  let seeds: number[];
  if (one !== undefined && values.seeds === undefined) seeds = [integer(one, '--seed')];
  else if (values.seeds !== undefined) {
    const from = integer(values.from ?? '1', '--from');
    seeds = Array.from({ length: integer(values.seeds, '--seeds') }, (_, i) => from + i);
  } else seeds = [Math.floor(Math.random() * 1_000_000)];
  const rebuildEvery = integer(values['rebuild-every'] ?? '1', '--rebuild-every');
  return { seeds, size, rebuild: !values['no-rebuild'], rebuildEvery: Math.max(1, rebuildEvery) };
}

function integer(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${what} must be a non-negative integer, not ${JSON.stringify(text)}`);
  return n;
}

const log = (line: string): void => console.log(`${new Date().toISOString().slice(11, 19)} ${line}`);

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  const workDir = await mkdtemp(join(tmpdir(), 'highwater-convergence-'));
  const external = (process.env.HIGHWATER_TEST_KAFKA_BROKERS ?? '').split(',').map((b) => b.trim()).filter((b) => b !== '');
  let broker: KafkaBroker | undefined;
  if (external.length === 0) {
    broker = await startKafka({ runtime: await ensureKafkaRuntime(), dataDir: join(workDir, 'kafka'), logFile: join(workDir, 'kafka.log'), heapMb: 768 });
    log(`Kafka ${KAFKA_VERSION} on ${broker.bootstrap}; work directory ${workDir}`);
  }
  const brokers = external.length > 0 ? external : [broker!.bootstrap];
  const stop = async () => {
    await broker?.stop();
  };
  const results: SeedResult[] = [];
  process.once('exit', killAllChildren);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      killAllChildren();
      // Interrupted: the seeds that finished still get their table.
      console.log(`\ninterrupted by ${signal}\n${summaryTable(results)}`);
      void stop().then(() => process.exit(130));
    });
  }
  try {
    log(`${options.seeds.length} seed(s), ${options.size} histories: ${options.seeds.length <= 10 ? options.seeds.join(', ') : `${options.seeds[0]}…${options.seeds.at(-1)}`}`);
    for (const [i, seed] of options.seeds.entries()) {
      const rebuild = options.rebuild && i % options.rebuildEvery === 0;
      log(`seed ${seed} (replay: HIGHWATER_SEED=${seed} npm run test:convergence -- --size ${options.size})`);
      const result = await runSeed({ pgUrl: process.env.HIGHWATER_TEST_PG_URL || DEFAULT_PG_URL, brokers, workDir, log }, { seed, size: options.size, rebuild });
      results.push(result);
      log(`seed ${seed}: ${result.ok ? 'converged' : 'FAILED'} in ${result.seconds.toFixed(0)} s`);
    }
  } finally {
    await stop();
  }
  console.log(`\n${summaryTable(results)}`);
  const failed = results.filter((r) => !r.ok);
  if (failed.length === 0) await rm(workDir, { recursive: true, force: true });
  else console.log(`\nfailing seeds: ${failed.map((r) => r.seed).join(', ')} (work directory kept: ${workDir})`);
  return failed.length === 0 ? 0 : 1;
}

main().then((code) => {
  process.exitCode = code;
}, (err: unknown) => {
  console.error(err);
  process.exitCode = 2;
});
