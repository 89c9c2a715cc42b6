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

export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/**
 * Waits `ms`, or less if the signal is aborted first. Both the timer and the abort listener are removed when it
 * ends, so a loop that pauses between polls does not pile up one listener per poll.
 */
export function pauseUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
