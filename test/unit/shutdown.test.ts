import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { installShutdown } from '../../src/cli/shutdown.js';
import { createLogger } from '../../src/logger.js';

describe('graceful shutdown', () => {
  it('says at once, at warn level, that it stops after the current batch', async () => {
    const lines: string[] = [];
    const destination = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } });
    const existing = { SIGINT: process.listeners('SIGINT'), SIGTERM: process.listeners('SIGTERM') };
    const controller = installShutdown(createLogger({ level: 'warn', destination }));
    process.emit('SIGTERM', 'SIGTERM');
    await new Promise((r) => setImmediate(r));
    // Remove only what installShutdown added.
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      for (const l of process.listeners(signal)) if (!existing[signal].includes(l)) process.removeListener(signal, l);
    }
    expect(controller.signal.aborted).toBe(true);
    expect(lines.join('')).toContain('stopping after the current batch');
  });
});
