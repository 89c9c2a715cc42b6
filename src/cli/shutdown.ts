import { once } from 'node:events';
import type { Logger } from '../logger.js';

/**
 * Graceful shutdown: the first SIGINT/SIGTERM aborts the signal (no new batch is taken; the one in flight finishes
 * or is abandoned before its commit), the second exits at once — safe, because nothing is committed before it is
 * durable, so an abrupt exit only means some records are read again.
 */
export function installShutdown(logger: Logger): AbortController {
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      logger.warn({ signal }, 'second signal: exiting now; uncommitted work will be read again on restart');
      process.exit(130);
    }
    logger.info({ signal }, 'stopping: finishing the batch in flight (send the signal again to exit at once)');
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
