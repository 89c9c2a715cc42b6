import type { ContentScope, DifferingExample, KeyList, ScopeComparison, TableComparison } from './reconcile.js';
import { describeScope } from './reconcile.js';

/**
 * The reconcile report: one entry per table and target, with one line per tenant and business unit. `--json`
 * prints it as it is (bigints as strings); `renderReport` makes the table a person reads.
 */

export interface TableReport extends TableComparison {
  readonly table: string;
  readonly target: string;
  readonly tenant: string;
  readonly source: { readonly database: string; readonly kind: 'postgres' | 'sqlserver' };
  readonly targetTable: { readonly database: string; readonly kind: 'postgres' | 'sqlserver'; readonly name: string };
}

export interface ReconcileReport {
  readonly equal: boolean;
  readonly content: { readonly mode: 'all' | 'sample'; readonly fraction: number; readonly prefixes: readonly string[]; readonly description: string };
  readonly examples: number;
  readonly tables: readonly TableReport[];
}

export function buildReport(content: ContentScope, examples: number, tables: readonly TableReport[]): ReconcileReport {
  return {
    equal: tables.every((t) => t.equal),
    content: content.kind === 'all'
      ? { mode: 'all', fraction: 1, prefixes: [], description: describeScope(content) }
      : { mode: 'sample', fraction: content.fraction, prefixes: content.prefixes, description: describeScope(content) },
    examples,
    tables,
  };
}

/** JSON for scripts: bigints (ticks) as strings, everything else as is. */
export function reportJson(report: ReconcileReport): string {
  return JSON.stringify(report, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2);
}

// ---------------------------------------------------------------------------------------------------- text

const COLUMNS = ['business unit', 'rows src/tgt', 'latest ModifiedOn src', 'latest ModifiedOn tgt', 'checksum', 'missing', 'extra', 'differing', 'orphans src/tgt', 'result'] as const;
/** Columns right-aligned: the counts. */
const NUMERIC = new Set([1, 5, 6, 7, 8]);

function cells(s: ScopeComparison): string[] {
  const latestTarget = s.target.latestModifiedOnTicks === s.source.latestModifiedOnTicks && s.source.latestModifiedOn !== null ? 'same' : s.target.latestModifiedOn ?? '-';
  return [
    s.businessUnit ?? '(none)',
    `${s.source.rows}/${s.target.rows}`,
    s.source.latestModifiedOn ?? '-', latestTarget,
    s.checksum.status,
    String(s.missing.count), String(s.extra.count), String(s.differing.count),
    `${s.orphans.source.count}/${s.orphans.target.count}`,
    s.equal ? 'equal' : 'DIFFERENT',
  ];
}

/** Columns padded to their widest cell; counts right-aligned. */
export function renderTable(header: readonly string[], rows: readonly string[][], numeric: ReadonlySet<number> = new Set()): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) => r.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

function differingText(d: DifferingExample): string {
  const why = d.reasons.map((r) => {
    if (r === 'modifiedOn') return `ModifiedOn ${d.source.modifiedOn} at the source, ${d.target.modifiedOn} in the target`;
    if (r === 'content') return 'content differs';
    return `business unit ${d.source.businessUnit ?? '(none)'} at the source, ${d.target.businessUnit ?? '(none)'} in the target`;
  });
  return `${d.key} (${why.join('; ')})`;
}

function exampleLines<T>(label: string, list: KeyList<T>, render: (e: T) => string): string[] {
  if (list.count === 0) return [];
  const rest = list.count - list.examples.length;
  return [
    `    ${label}: ${list.count}`,
    ...list.examples.map((e) => `      ${render(e)}`),
    ...(rest > 0 && list.examples.length > 0 ? [`      … and ${rest} more`] : []),
  ];
}

function scopeDetails(s: ScopeComparison): string[] {
  const key = (k: string): string => k;
  const lines = [
    ...exampleLines('missing in the target', s.missing, key),
    ...exampleLines('only in the target', s.extra, key),
    ...exampleLines('differing', s.differing, differingText),
    ...exampleLines('orphans in the source', s.orphans.source, key),
    ...exampleLines('orphans in the target', s.orphans.target, key),
  ];
  if (s.checksum.status === 'different') lines.push(`    checksum over ${s.checksum.buckets} buckets: source ${s.checksum.source?.slice(0, 16) ?? '-'}…, target ${s.checksum.target?.slice(0, 16) ?? '-'}…`);
  return lines.length === 0 ? [] : [`  business unit ${s.businessUnit ?? '(none)'}:`, ...lines];
}

function tableText(t: TableReport): string[] {
  const head = `${t.table} → ${t.target} (tenant ${t.tenant === '' ? "''" : t.tenant}; source ${t.source.database}, target ${t.targetTable.database} ${t.targetTable.name}): ${t.equal ? 'EQUAL' : 'DIFFERENT'}`;
  const stats = `  ${t.buckets.compared} buckets compared, ${t.buckets.differing} differing${t.buckets.drilled ? ` (${t.buckets.drilled} cut finer)` : ''}, ${t.buckets.rowsPulled} row versions pulled`;
  if (t.scopes.length === 0) return [head, '  no rows on either side', stats];
  const table = renderTable(COLUMNS, t.scopes.map(cells), NUMERIC).map((l) => `  ${l}`);
  return [head, ...table, ...t.scopes.flatMap(scopeDetails), stats];
}

export function renderReport(report: ReconcileReport): string {
  const lines = [`reconcile: keys and ModifiedOn of every row; ${report.content.description}`, ''];
  for (const t of report.tables) lines.push(...tableText(t), '');
  lines.push(report.equal ? 'result: EQUAL' : 'result: DIFFERENT (exit code 3)');
  return lines.join('\n');
}
