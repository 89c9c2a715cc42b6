import type { InvariantReport } from './invariants.js';
import type { SeedResult } from './scenario.js';

/** One row per seed and a totals line: what the closing note of a run quotes. */
export function summaryTable(results: readonly SeedResult[]): string {
  const header = ['seed', 'size', 'result', 'secs', 'ops', 'kills p/c', 'rows', 'I1', 'I2', 'I3', 'I4 dup', 'fresh I1/I2/I3', 'gaps'];
  const rows = results.map((r) => [
    String(r.seed), r.size, r.ok ? 'ok' : 'FAILED', r.seconds.toFixed(0), String(r.ops), `${r.kills.poller}/${r.kills.consumer}`,
    String(r.live?.sourceRows ?? '-'), count(r.live, 'i1'), count(r.live, 'i2'), count(r.live, 'i3'), String(r.live?.i4?.duplicates ?? '-'),
    r.rebuild ? `${count(r.rebuild, 'i1')}/${count(r.rebuild, 'i2')}/${count(r.rebuild, 'i3')}` : '-', String(r.missingOffsets ?? '-'),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  const passed = results.filter((r) => r.ok).length;
  const seconds = results.reduce((n, r) => n + r.seconds, 0);
  const total = `${passed}/${results.length} seeds converged; ${seconds.toFixed(0)} s in all, ${(seconds / Math.max(1, results.length)).toFixed(0)} s per seed`;
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line), '', total].join('\n');
}

function count(report: InvariantReport | null, which: 'i1' | 'i2' | 'i3'): string {
  if (!report) return '-';
  const part = report[which];
  return part === null ? '-' : String(part.count);
}
