import cliProgress from 'cli-progress';
import type { Logger } from '../logger.js';
import type { PollerListener } from '../poll/observer.js';
import type { GlobalOptions } from './context.js';

/**
 * Progress of long work (first load, rebuild, reconcile, back-fill): a bar with rows, bytes, rate and time left on
 * an interactive terminal; a plain log line every `intervalMs` otherwise (and never with --json, which owns stdout).
 */

export interface ProgressReporter {
  /** Sets the expected total when it becomes known (enables time left). */
  total(rows: number): void;
  add(rows: number, bytes: number): void;
  stop(): void;
}

export function createProgress(label: string, options: GlobalOptions, logger: Logger, intervalMs = 10_000, expected?: number): ProgressReporter {
  if (options.json) return silent();
  const reporter = process.stderr.isTTY ? terminalBar(label, expected) : periodicLog(label, logger, intervalMs);
  if (expected !== undefined) reporter.total(expected);
  return reporter;
}

function silent(): ProgressReporter {
  return { total: () => undefined, add: () => undefined, stop: () => undefined };
}

function formatBytes(bytes: number): string {
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(2)} GiB` : `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

/**
 * The bar's total: the rows counted in the window when known (rows read beyond it — missing parents, found while
 * reading — raise it), else the rows so far, shown as "?" with no time left rather than a made-up N/N and 0 s. Pure.
 */
export function progressTotal(expected: number | undefined, done: number): { total: number; text: string; known: boolean } {
  if (expected === undefined) return { total: Math.max(done, 1), text: '?', known: false };
  const total = Math.max(expected, done, 1);
  return { total, text: String(Math.max(expected, done)), known: true };
}

/** "ETA 1m 05s" once rows flow toward a counted total; says so when the total was not counted. Pure. */
export function timeLeft(t: { total: number; known: boolean }, done: number, rowsPerSecond: number): string {
  if (!t.known) return 'total not counted';
  if (rowsPerSecond <= 0) return 'ETA …';
  const seconds = Math.ceil(Math.max(0, t.total - done) / rowsPerSecond);
  return seconds >= 60 ? `ETA ${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, '0')}s` : `ETA ${seconds}s`;
}

function terminalBar(label: string, counted?: number): ProgressReporter {
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {value}/{totalText} rows | {bytes} | {rate} rows/s | {left}`,
    stream: process.stderr,
    hideCursor: true,
  }, cliProgress.Presets.shades_classic);
  const started = Date.now();
  let rows = 0;
  let bytes = 0;
  let expected: number | undefined = counted;
  const render = () => {
    const t = progressTotal(expected, rows);
    const rate = rows / Math.max(0.001, (Date.now() - started) / 1000);
    bar.setTotal(t.total);
    bar.update(rows, { totalText: t.text, bytes: formatBytes(bytes), rate: rate.toFixed(0), left: timeLeft(t, rows, rate) });
  };
  const first = progressTotal(expected, 0);
  bar.start(first.total, 0, { totalText: first.text, bytes: formatBytes(0), rate: '0', left: timeLeft(first, 0, 0) });
  return {
    total: (n) => {
      expected = n;
      render();
    },
    add: (r, b) => {
      rows += r;
      bytes += b;
      render();
    },
    stop: () => bar.stop(),
  };
}

function periodicLog(label: string, logger: Logger, intervalMs: number): ProgressReporter {
  const started = Date.now();
  let rows = 0;
  let bytes = 0;
  let expected: number | undefined;
  const timer = setInterval(() => {
    const seconds = Math.max(0.001, (Date.now() - started) / 1000);
    const rate = rows / seconds;
    const secondsLeft = expected !== undefined && rate > 0 ? Math.max(0, (expected - rows) / rate) : undefined;
    logger.info({ progress: label, rows, bytes, rowsPerSecond: Math.round(rate), expected, secondsLeft: secondsLeft === undefined ? undefined : Math.round(secondsLeft) }, 'progress');
  }, intervalMs);
  timer.unref();
  return {
    total: (n) => {
      expected = n;
    },
    add: (r, b) => {
      rows += r;
      bytes += b;
    },
    stop: () => clearInterval(timer),
  };
}

/** Adapts the poller's events to a progress reporter. */
export function pollerProgress(progress: ProgressReporter): PollerListener {
  return { batchPublished: (b) => progress.add(b.rows + b.skipped, b.bytes) };
}

/**
 * One progress reporter per table poll: created when its window is planned (with the window's row count as its
 * total, when the poller counted it) or on its first batch, stopped when its window completes or fails.
 */
export function progressListener(options: GlobalOptions, logger: Logger): PollerListener {
  const current = new Map<string, ProgressReporter>();
  const of = (table: string, expected?: number) => {
    let p = current.get(table);
    if (!p) {
      p = createProgress(`poll ${table}`, options, logger, 10_000, expected);
      current.set(table, p);
    }
    return p;
  };
  const finish = (table: string) => {
    current.get(table)?.stop();
    current.delete(table);
  };
  return {
    windowPlanned: (w) => {
      if (w.rowsInWindow !== null && w.rowsInWindow > 0) of(w.table, w.rowsInWindow);
    },
    batchPublished: (b) => of(b.table).add(b.rows + b.skipped, b.bytes),
    windowCompleted: (w) => finish(w.table),
    tableFailed: (f) => finish(f.table),
  };
}

/** Whether a command shows progress, and so whether the poller should count each window's rows for its total. */
export function showsProgress(options: GlobalOptions): boolean {
  return options.json !== true;
}
