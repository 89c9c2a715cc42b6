import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';

/**
 * Child processes of the benchmark (highwater's CLI, the Connect worker): output to a log file, peak RSS sampled
 * from /proc (VmHWM, the kernel's own high-water mark of the resident set), a wait for a line of output, and a
 * stop that signals and waits.
 */

const SAMPLE_MS = 200;

export interface Proc {
  readonly name: string;
  readonly pid: number;
  /** Peak resident set seen so far, bytes. */
  peakRss(): number;
  /** Resolves when a line of stdout/stderr matches. Rejects if the process exits first or the time runs out. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<string>;
  /** Exit code (null when signalled). */
  readonly exited: Promise<number | null>;
  /** SIGTERM (or the given signal), then SIGKILL after `graceMs`; resolves on exit. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
  /** The last lines of its output, for error messages. */
  tail(): string;
}

export interface SpawnOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly logFile: string;
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** A separate process group, so that a signal reaches a JVM and its children together. */
  readonly group?: boolean;
}

export function startProc(options: SpawnOptions): Proc {
  const child = spawn(options.command, [...options.args], {
    cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: options.group ?? false,
  });
  if (child.pid === undefined) throw new Error(`cannot start ${options.name} (${options.command})`);
  const log = createWriteStream(options.logFile, { flags: 'a' });
  const lines = new LineWatch();
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (chunk: Buffer) => {
      log.write(chunk);
      lines.push(chunk.toString('utf8'));
    });
  }
  let peak = 0;
  const sampler = setInterval(() => void sampleHwm(child.pid!).then((v) => { peak = Math.max(peak, v); }), SAMPLE_MS);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      clearInterval(sampler);
      lines.close();
      log.end();
      resolve(code);
    });
  });
  return {
    name: options.name, pid: child.pid,
    peakRss: () => peak,
    waitForLine: (pattern, timeoutMs) => lines.waitFor(pattern, timeoutMs, options.name),
    exited,
    stop: (signal = 'SIGTERM', graceMs = 20_000) => stopChild(child, exited, signal, graceMs, options.group ?? false),
    tail: () => lines.tail(),
  };
}

/** VmHWM of a live process in bytes; 0 once it is gone. */
export async function sampleHwm(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return match === null ? 0 : Number(match[1]) * 1024;
  } catch {
    // The process has exited between two samples: the last sample stands.
    return 0;
  }
}

async function stopChild(child: ChildProcess, exited: Promise<number | null>, signal: NodeJS.Signals, graceMs: number, group: boolean): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return exited;
  const send = (s: NodeJS.Signals): void => {
    try {
      if (group) process.kill(-child.pid!, s);
      else child.kill(s);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  send(signal);
  const timer = setTimeout(() => send('SIGKILL'), graceMs);
  try {
    return await exited;
  } finally {
    clearTimeout(timer);
  }
}

const TAIL_LINES = 30;

/** Output lines with waiters on patterns. */
class LineWatch {
  private partial = '';
  private readonly recent: string[] = [];
  private waiters: { pattern: RegExp; resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  private closed = false;

  push(text: string): void {
    const parts = (this.partial + text).split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) this.line(line);
  }

  private line(line: string): void {
    this.recent.push(line);
    if (this.recent.length > TAIL_LINES) this.recent.shift();
    const matched = this.waiters.filter((w) => w.pattern.test(line));
    this.waiters = this.waiters.filter((w) => !matched.includes(w));
    for (const w of matched) w.resolve(line);
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters) w.reject(new Error(`the process exited before printing ${w.pattern}; last output:\n${this.tail()}`));
    this.waiters = [];
  }

  tail(): string {
    return this.recent.join('\n');
  }

  waitFor(pattern: RegExp, timeoutMs: number, name: string): Promise<string> {
    const seen = this.recent.find((l) => pattern.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.closed) return Promise.reject(new Error(`${name} has exited; last output:\n${this.tail()}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} did not print ${pattern} within ${timeoutMs / 1000} s; last output:\n${this.tail()}`)), timeoutMs);
      this.waiters.push({ pattern, resolve: (l) => { clearTimeout(timer); resolve(l); }, reject: (e) => { clearTimeout(timer); reject(e); } });
    });
  }
}
