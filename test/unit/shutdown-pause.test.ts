import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { sleep } from '../../src/retry.js';

describe('the pause between polls', () => {
  // Regression (seen in the fault matrix's poller logs: MaxListenersExceededWarning after eleven polls): every
  // pause of `poll --every` and `run` left an abort listener on the shutdown signal, one more per poll, for ever.
  it('leaves no listener on the shutdown signal when it ends by its timer', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 20; i++) await sleep(1, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('ends at once when the signal is aborted', async () => {
    const controller = new AbortController();
    const paused = sleep(60_000, controller.signal);
    controller.abort();
    await paused;
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});
