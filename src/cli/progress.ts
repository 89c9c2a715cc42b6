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

export function createProgress(label: string, options: GlobalOptions, logger: Logger, intervalMs = 10_000): ProgressReporter {
  if (options.json) return silent();
  return process.stderr.isTTY ? terminalBar(label) : periodicLog(label, logger, intervalMs);
}

function silent(): ProgressReporter {
  return { total: () => undefined, add: () => undefined, stop: () => undefined };
}

function formatBytes(bytes: number): string {
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(2)} GiB` : `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

function terminalBar(label: string): ProgressReporter {
  const bar = new cliProgress.SingleBar({
    format: `${label} [{bar}] {value}/{total} rows | {bytes} | {rate} rows/s | ETA {eta_formatted}`,
    stream: process.stderr,
    hideCursor: true,
    etaBuffer: 50,
  }, cliProgress.Presets.shades_classic);
  const started = Date.now();
  let rows = 0;
  let bytes = 0;
  let known = false;
  bar.start(1, 0, { bytes: formatBytes(0), rate: '0' });
  return {
    total: (n) => {
      known = true;
      bar.setTotal(Math.max(n, rows, 1));
    },
    add: (r, b) => {
      rows += r;
      bytes += b;
      if (!known) bar.setTotal(Math.max(rows, 1));
      bar.update(rows, { bytes: formatBytes(bytes), rate: (rows / Math.max(0.001, (Date.now() - started) / 1000)).toFixed(0) });
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

/** One progress reporter per table poll: created on its first batch, stopped when its window completes or fails. */
export function progressListener(options: GlobalOptions, logger: Logger): PollerListener {
  const current = new Map<string, ProgressReporter>();
  const of = (table: string) => {
    let p = current.get(table);
    if (!p) {
      p = createProgress(`poll ${table}`, options, logger);
      current.set(table, p);
    }
    return p;
  };
  const finish = (table: string) => {
    current.get(table)?.stop();
    current.delete(table);
  };
  return {
    batchPublished: (b) => of(b.table).add(b.rows + b.skipped, b.bytes),
    windowCompleted: (w) => finish(w.table),
    tableFailed: (f) => finish(f.table),
  };
}
