import { once } from 'node:events';
import type { Logger } from '../logger.js';

/**
 * Graceful shutdown: the first SIGINT/SIGTERM aborts the signal (no new batch is taken; the one in flight finishes
 * or is abandoned before its commit), the second exits at once — safe, because nothing is committed before it is
 * durable, so an abrupt exit only means some records are read again.
 */
export function installShutdown(logger: Logger, stopping = 'stopping after the current batch'): AbortController {
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      logger.warn({ signal }, 'second signal: exiting now; uncommitted work will be read again on restart');
      process.exit(130);
    }
    // Said at once and at warn, so it shows at every usual log level: the batch in flight can take several seconds
    // to finish, and silence after Ctrl-C reads as a hang. At a terminal it is a plain line, not a JSON record.
    if (process.stderr.isTTY) process.stderr.write(`\nhighwater: ${stopping} (Ctrl-C again to exit at once)\n`);
    else logger.warn({ signal }, `${stopping} (send the signal again to exit at once)`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return controller;
}

/** Resolves when `signal` aborts. Use it once per signal; to wait between rounds use sleep(ms, signal) (src/retry.ts). */
export async function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  await once(signal, 'abort');
}
