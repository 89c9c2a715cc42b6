import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, scrubSecrets } from '../../src/logger.js';

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } });
  return { lines, stream };
}

describe('logs never carry secrets', () => {
  it('scrubs passwords from URL and key=value connection strings', () => {
    expect(scrubSecrets('postgres://app:s3cret@db:5432/x')).toBe('postgres://app:[redacted]@db:5432/x');
    expect(scrubSecrets('Server=db;User Id=sa;Password=s3cret;Encrypt=true')).toBe('Server=db;User Id=sa;Password=[redacted];Encrypt=true');
    expect(scrubSecrets('mssql://sa:p%40ss@host/db pwd=abc')).not.toMatch(/p%40ss|abc/);
  });

  it('redacts secret fields, messages and error messages in every log line', async () => {
    const { lines, stream } = capture();
    const log = createLogger({ level: 'info', destination: stream });
    log.info({ connectionString: 'postgres://u:hunter2@h/db', sasl: { password: 'hunter2' }, database: { password: 'hunter2' } }, 'connecting');
    log.warn('failed to reach postgres://u:hunter2@h/db');
    log.error({ err: new Error('login failed for Server=h;Password=hunter2') }, 'boom');
    log.child({ table: 't' }).info({ detail: 'url=postgres://x:hunter2@y/z' }, 'child');
    await new Promise((r) => setImmediate(r));
    expect(lines.length).toBe(4);
    for (const line of lines) expect(line).not.toContain('hunter2');
  });
});
