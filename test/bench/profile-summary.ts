import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * Where a process spent its time, from a V8 `.cpuprofile` (node --cpu-prof, as `npm run bench -- --profile`
 * writes them): self time per category (idle, GC, kafkajs, pg, Avro, zod, highwater's own files, …) and the top
 * functions. Pure apart from the small CLI at the end:
 *
 *   npx tsx test/bench/profile-summary.ts <file.cpuprofile>...
 */

export interface CpuProfile {
  readonly nodes: readonly { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface Share {
  readonly name: string;
  readonly ms: number;
  readonly share: number;
}

const CATEGORIES: readonly [RegExp, string][] = [
  [/^\(idle\)$/, 'idle (waiting on I/O)'],
  [/^\(garbage collector\)$/, 'garbage collector'],
  [/^\(program\)$/, 'V8/native (program)'],
  [/node_modules\/kafkajs\//, 'kafkajs'],
  [/node_modules\/(pg|pg-protocol|pg-copy-streams|pg-pool|pg-types)\//, 'pg driver'],
  [/node_modules\/avsc\//, 'avsc (Avro)'],
  [/node_modules\/zod\//, 'zod'],
  [/node_modules\/pino/, 'pino (logging)'],
  [/node_modules\/(tsx|esbuild|get-tsconfig)\//, 'tsx (TypeScript loading)'],
  [/node_modules\//, 'other packages'],
  [/^node:|^internal\//, 'node internals (loader, buffers, streams)'],
];

/** The category of a call frame: one of CATEGORIES, or the repository path of a highwater file. */
export function categoryOf(functionName: string, url: string): string {
  const key = url === '' ? functionName : url;
  for (const [pattern, name] of CATEGORIES) if (pattern.test(key)) return name;
  if (url === '') return 'native built-ins (socket writes, buffer copies)';
  const repo = /\/(src|connectors|consumers)\/(.+)$/.exec(url);
  return repo === null ? 'other' : `highwater ${repo[1]}/${repo[2]}`;
}

/** Self time per node id, in ms. */
function selfTimes(profile: CpuProfile): Map<number, number> {
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000));
  return self;
}

function shares(totals: Map<string, number>, total: number, top: number): Share[] {
  return [...totals.entries()].map(([name, ms]) => ({ name, ms, share: total > 0 ? ms / total : 0 }))
    .sort((a, b) => b.ms - a.ms).slice(0, top);
}

export function summarizeProfile(profile: CpuProfile, top = 15): { totalMs: number; categories: Share[]; functions: Share[] } {
  const self = selfTimes(profile);
  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const ms = self.get(node.id) ?? 0;
    if (ms === 0) continue;
    total += ms;
    const { functionName, url, lineNumber } = node.callFrame;
    const category = categoryOf(functionName, url);
    byCategory.set(category, (byCategory.get(category) ?? 0) + ms);
    const fn = `${functionName || '(anonymous)'} ${url === '' ? '' : `${basename(url)}:${lineNumber + 1}`}`.trim();
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + ms);
  }
  return { totalMs: total, categories: shares(byCategory, total, top), functions: shares(byFunction, total, top) };
}

export function renderProfileSummary(name: string, s: ReturnType<typeof summarizeProfile>): string {
  const line = (x: Share): string => `  ${(x.share * 100).toFixed(1).padStart(5)} %  ${x.ms.toFixed(0).padStart(7)} ms  ${x.name}`;
  return [`${name}: ${(s.totalMs / 1000).toFixed(1)} s sampled`, ' by category', ...s.categories.map(line), ' top functions (self time)', ...s.functions.map(line)].join('\n');
}

async function cli(files: readonly string[]): Promise<void> {
  for (const file of files) {
    const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
    process.stdout.write(`${renderProfileSummary(basename(file), summarizeProfile(profile))}\n\n`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) void cli(process.argv.slice(2));
