import { SYSTEMS, WORKLOADS, type SystemId, type WorkloadId } from './model.js';

/** Command-line options of `npm run bench` and the workload sizes they select. Pure. */

export interface Sizes {
  readonly w1Rows: number;
  readonly treeRows: number;
  readonly w2Blobs: number;
  readonly w2MixedRows: number;
  readonly w3Keys: number;
  readonly w3Versions: number;
  readonly w5Seconds: number;
  readonly w5Rates: readonly number[];
  readonly w6Tables: number;
  readonly w6Rows: number;
}

/** About 15 minutes on a 2-core machine. */
export const DEFAULT_SIZES: Sizes = {
  w1Rows: 20_000, treeRows: 10_000, w2Blobs: 100, w2MixedRows: 300, w3Keys: 1000, w3Versions: 10,
  w5Seconds: 20, w5Rates: [200, 2000], w6Tables: 20, w6Rows: 1000,
};

/** The sizes of shared/BENCHMARKS.md. */
export const FULL_SIZES: Sizes = {
  w1Rows: 100_000, treeRows: 100_000, w2Blobs: 1000, w2MixedRows: 1000, w3Keys: 1000, w3Versions: 100,
  w5Seconds: 180, w5Rates: [200, 2000], w6Tables: 20, w6Rows: 5000,
};

export interface BenchOptions {
  readonly full: boolean;
  readonly sizes: Sizes;
  readonly reps: number;
  readonly seed: number;
  readonly workloads: ReadonlySet<WorkloadId>;
  readonly systems: ReadonlySet<SystemId>;
  readonly jsonFile: string | undefined;
  readonly svgFile: string | undefined;
  /** Only re-render the table and chart from this results file. */
  readonly renderFrom: string | undefined;
  readonly profile: boolean;
  /** Keep the work directory (configurations, process logs, profiles). */
  readonly keep: boolean;
  readonly help: boolean;
}

export const USAGE = `npm run bench -- [options]
  --full              the sizes of shared/BENCHMARKS.md (default: smaller, about 15 minutes)
  --only <list>       comma-separated workloads and/or systems, e.g. W1,B1 or W1-tree,highwater
                      (workloads: ${WORKLOADS.join(', ')}; systems: ${SYSTEMS.join(', ')})
  --reps <n>          interleaved repetitions per workload (default 3); medians are reported
  --seed <n>          seed of the generated rows (default: random, printed)
  --json <file>       write the results as JSON
  --svg <file>        write the chart (default: next to --json, same name with .svg)
  --scale <x>         multiply every row count by x (e.g. 0.1 for a quick try; W5's rates stay)
  --render <file>     do not measure: print the table and write the chart from a results JSON
  --profile           run highwater's processes with --cpu-prof (profiles under the run's work directory; implies --keep)
  --keep              keep the work directory: configurations, logs of every process`;

export function parseOptions(argv: readonly string[], randomSeed: () => number): BenchOptions {
  const args = [...argv];
  const flags = new Map<string, string | true>();
  while (args.length > 0) {
    const arg = args.shift()!;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${JSON.stringify(arg)}\n${USAGE}`);
    const name = arg.slice(2);
    if (['full', 'profile', 'keep', 'help'].includes(name)) flags.set(name, true);
    else if (['only', 'reps', 'seed', 'json', 'svg', 'render', 'scale'].includes(name)) flags.set(name, valueOf(name, args.shift()));
    else throw new Error(`unknown option ${arg}\n${USAGE}`);
  }
  const full = flags.get('full') === true;
  const { workloads, systems } = parseOnly(stringFlag(flags, 'only'));
  const json = stringFlag(flags, 'json');
  return {
    full,
    sizes: scaled(full ? FULL_SIZES : DEFAULT_SIZES, scaleOf(stringFlag(flags, 'scale'))),
    reps: positiveInt('reps', stringFlag(flags, 'reps') ?? '3'),
    seed: flags.has('seed') ? positiveInt('seed', stringFlag(flags, 'seed')!) : randomSeed(),
    workloads, systems,
    jsonFile: json,
    svgFile: stringFlag(flags, 'svg') ?? (json === undefined ? undefined : json.replace(/(\.json)?$/, '.svg')),
    renderFrom: stringFlag(flags, 'render'),
    profile: flags.get('profile') === true,
    keep: flags.get('keep') === true || flags.get('profile') === true,
    help: flags.get('help') === true,
  };
}

function scaleOf(text: string | undefined): number {
  if (text === undefined) return 1;
  const x = Number(text);
  if (!Number.isFinite(x) || x <= 0) throw new Error(`--scale must be a positive number, got ${JSON.stringify(text)}`);
  return x;
}

/** Row counts times `x` (at least 1 each); rates, durations and the number of tables stay. */
export function scaled(sizes: Sizes, x: number): Sizes {
  if (x === 1) return sizes;
  const n = (v: number): number => Math.max(1, Math.round(v * x));
  return { ...sizes, w1Rows: n(sizes.w1Rows), treeRows: n(sizes.treeRows), w2Blobs: n(sizes.w2Blobs), w2MixedRows: n(sizes.w2MixedRows), w3Keys: n(sizes.w3Keys), w6Rows: n(sizes.w6Rows) };
}

function valueOf(name: string, value: string | undefined): string {
  if (value === undefined || value.startsWith('--')) throw new Error(`--${name} needs a value\n${USAGE}`);
  return value;
}

function stringFlag(flags: ReadonlyMap<string, string | true>, name: string): string | undefined {
  const v = flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

function positiveInt(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  if (name === 'reps' && n === 0) throw new Error('--reps must be at least 1');
  return n;
}

/** `W1,B1` → workloads {W1}, systems {B1}; a missing half means all of that half. */
export function parseOnly(only: string | undefined): { workloads: ReadonlySet<WorkloadId>; systems: ReadonlySet<SystemId> } {
  const items = (only ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const workloads = new Set<WorkloadId>();
  const systems = new Set<SystemId>();
  for (const item of items) {
    const w = WORKLOADS.find((x) => x.toLowerCase() === item.toLowerCase());
    const s = SYSTEMS.find((x) => x.toLowerCase() === item.toLowerCase());
    if (w !== undefined) workloads.add(w);
    else if (s !== undefined) systems.add(s);
    else throw new Error(`--only: unknown workload or system ${JSON.stringify(item)} (workloads: ${WORKLOADS.join(', ')}; systems: ${SYSTEMS.join(', ')})`);
  }
  return {
    workloads: workloads.size > 0 ? workloads : new Set(WORKLOADS),
    systems: systems.size > 0 ? systems : new Set(SYSTEMS),
  };
}
