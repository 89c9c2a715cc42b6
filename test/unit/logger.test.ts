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

  it.each([
    ['an unencoded @', 'postgres://app:p@ss@db:5432/x', 'postgres://app:[redacted]@db:5432/x'],
    ['two @ and a /', 'mssql://sa:a@b/c@d@host:1433/db', 'mssql://sa:[redacted]@host:1433/db'],
    ['a /', 'postgresql://app:ab/cd@db/x?sslmode=require', 'postgresql://app:[redacted]@db/x?sslmode=require'],
    ['a space in a URL', 'connecting to postgres://app:correct horse@db/x now', 'connecting to postgres://app:[redacted]@db/x now'],
    ['a space in key=value', 'Server=db;User Id=sa;Password=correct horse;Encrypt=true', 'Server=db;User Id=sa;Password=[redacted];Encrypt=true'],
    ['a double-quoted value with ;', 'Server=db;Password="a;b";Database=x', 'Server=db;Password=[redacted];Database=x'],
    ['a doubled quote inside', 'Server=db;Password="a"";b";Database=x', 'Server=db;Password=[redacted];Database=x'],
    ['a single-quoted value', "Server=db;Pwd='a;b c';Database=x", 'Server=db;Pwd=[redacted];Database=x'],
    ['an ODBC braced value', 'Driver={ODBC};Server=db;PWD={a;b}};c};Database=x', 'Driver={ODBC};Server=db;PWD=[redacted];Database=x'],
    ['spaces around =', 'Server=db; password = s3cret ;x=1', 'Server=db; password = [redacted];x=1'],
    ['the end of the line', 'Server=db;Password=s3cret', 'Server=db;Password=[redacted]'],
  ])('scrubs a password with %s', (_what, text, expected) => {
    expect(scrubSecrets(text)).toBe(expected);
  });

  it('leaves URLs without a password alone', () => {
    expect(scrubSecrets('postgres://app@db:5432/x')).toBe('postgres://app@db:5432/x');
    expect(scrubSecrets('brokers 127.0.0.1:9092, registry http://registry:8081/subjects')).toBe('brokers 127.0.0.1:9092, registry http://registry:8081/subjects');
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

  // Seen in the fault matrix: pg's error for a failed idle client carries the client, whose connection parameters
  // hold the password; pino's error serializer prints every enumerable property.
  it('leaves out objects a driver hangs on an error, keeping its message, code and cause', async () => {
    const { lines, stream } = capture();
    const log = createLogger({ level: 'info', destination: stream });
    const err = Object.assign(new Error('Connection terminated unexpectedly', { cause: new Error('socket hang up') }), {
      code: 'ECONNRESET',
      client: { connectionParameters: { user: 'u', password: 'hunter2', host: 'h' } },
    });
    log.warn({ err }, 'idle PostgreSQL connection failed');
    await new Promise((r) => setImmediate(r));
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain('hunter2');
    const logged = JSON.parse(lines[0]!) as { err: Record<string, unknown> };
    expect(logged.err).toMatchObject({ message: expect.stringContaining('Connection terminated unexpectedly') as unknown, code: 'ECONNRESET', client: '[omitted]' });
    expect(JSON.stringify(logged.err)).toContain('socket hang up');
  });
});
