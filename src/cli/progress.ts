import type { PollerListener } from '../poller/observer.js';
import type { GlobalOptions } from './context.js';

/**
 * Progress of long work: a live line on a terminal, nothing extra otherwise (the structured log already has a line
 * per batch). Kept tiny on purpose; the CLI issue replaces it with cli-progress bars.
 */
export function progressListener(options: GlobalOptions): PollerListener {
  if (options.json || !process.stderr.isTTY) return {};
  let rows = 0;
  let bytes = 0;
  const started = Date.now();
  return {
    batchPublished: (b) => {
      rows += b.rows;
      bytes += b.bytes;
      const secs = Math.max(0.001, (Date.now() - started) / 1000);
      process.stderr.write(`\r${b.table} ${b.step} batch ${b.batchNo}: ${rows} rows, ${(bytes / 1048576).toFixed(1)} MiB, ${(rows / secs).toFixed(0)} rows/s   `);
    },
    windowCompleted: () => process.stderr.write('\n'),
  };
}
