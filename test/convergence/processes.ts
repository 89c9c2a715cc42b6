/**
 * The processes under test: the real CLI (`node src/cli/bin.js …`) as child processes with their own config files,
 * so a SIGKILL is a real crash (no finally blocks, no shutdown hooks) and a restart is a fresh process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const REPO_DIR = new URL('../../', import.meta.url).pathname;
const BIN = join(REPO_DIR, 'src/cli/bin.js');

/** The environment of the children: no HIGHWATER_* overrides from the caller's shell, only the config file. */
function childEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HIGHWATER_')));
}

/** Runs one CLI command to its end; rejects with its output when the exit code is not 0. */
export async function runCli(args: readonly string[], logFile: string): Promise<void> {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_DIR, stdio: ['ignore', fd, fd], env: childEnv() });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`highwater ${args.join(' ')} exited with ${code} (log ${logFile})`);
  } finally {
    closeSync(fd);
  }
}

const live = new Set<ChildProcess>();

/** SIGKILLs every CLI child still running (the script was interrupted). */
export function killAllChildren(): void {
  for (const child of live) child.kill('SIGKILL');
}

/** A long-running CLI process that can be killed and started again; unexpected exits are counted. */
export class CliProcess {
  private child: ChildProcess | null = null;
  private stopping = false;
  /** Exits nobody asked for (a crash of the product itself), with their codes. */
  readonly unexpectedExits: string[] = [];
  kills = 0;

  constructor(readonly name: string, private readonly args: readonly string[], private readonly logFile: string) {}

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  start(): void {
    if (this.running) return;
    const fd = openSync(this.logFile, 'a');
    const child = spawn(process.execPath, [BIN, ...this.args], { cwd: REPO_DIR, stdio: ['ignore', fd, fd], env: childEnv() });
    closeSync(fd);
    this.stopping = false;
    live.add(child);
    child.once('exit', (code, signal) => {
      live.delete(child);
      if (this.child === child) this.child = null;
      if (!this.stopping && signal !== 'SIGKILL') this.unexpectedExits.push(`${this.name} pid ${child.pid} exited with ${code ?? signal}`);
    });
    this.child = child;
  }

  /** SIGKILL, resolved once the process is gone. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    this.kills++;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** SIGTERM (a graceful stop), then SIGKILL if it is still there after `graceMs`. */
  async stop(graceMs = 8_000): Promise<void> {
    const child = this.child;
    this.stopping = true;
    if (!child || !this.running) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }

  /** Starts it again if it died by itself (the crash is recorded), so the history can go on. */
  reviveIfDead(): void {
    if (!this.running && !this.stopping) this.start();
  }
}

/** Schedules kills and restarts without blocking the history; `settled()` waits for all of them. */
export class CrashSchedule {
  private readonly pending: Promise<void>[] = [];

  constructor(private readonly processes: Readonly<Record<'poller' | 'consumer', CliProcess>>, private readonly log: (line: string) => void) {}

  killLater(who: 'poller' | 'consumer', afterMs: number, restartAfterMs: number): void {
    const p = this.processes[who];
    this.pending.push((async () => {
      await sleep(afterMs);
      await p.kill();
      this.log(`SIGKILL ${who}; restart in ${restartAfterMs} ms`);
      await sleep(restartAfterMs);
      p.start();
    })());
  }

  async settled(): Promise<void> {
    await Promise.all(this.pending);
  }
}
