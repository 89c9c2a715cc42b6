import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * Who spent the machine's CPU during a timed stage. Every process of a stage shares the same cores (highwater's
 * poller and consumer, PostgreSQL, the broker, this process), so a rate alone does not say whether a stage waited or
 * ran out of CPU, nor who used it. A sampler reads /proc every SAMPLE_MS (3–5 ms of CPU a sample, under 1 % of a core) from the start of the run: the machine's
 * busy time (/proc/stat), PostgreSQL's (every `postgres` process, plus what the postmaster reaped of backends that
 * ended), the broker's JVM, this process, and each of this process's children by pid. `between` gives each one's
 * CPU seconds over a window, interpolated between samples. Parsing and interpolation are pure.
 */

const SAMPLE_MS = 500;

/** One line of /proc/<pid>/stat, the fields used here (times in clock ticks). */
export interface ProcStat {
  readonly pid: number;
  readonly comm: string;
  readonly ppid: number;
  readonly utime: number;
  readonly stime: number;
  /** Times of the children it waited for (a postmaster's reaped backends). */
  readonly cutime: number;
  readonly cstime: number;
}

/** Parses /proc/<pid>/stat; the command name may hold spaces and parentheses, so fields count from the last ')'. */
export function parseProcStat(line: string): ProcStat | null {
  const open = line.indexOf('(');
  const close = line.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const rest = line.slice(close + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
  const field = (n: number): number => Number(rest[n - 3]);
  const stat = { pid: Number(line.slice(0, open).trim()), comm: line.slice(open + 1, close), ppid: field(4), utime: field(14), stime: field(15), cutime: field(16), cstime: field(17) };
  return [stat.pid, stat.ppid, stat.utime, stat.stime, stat.cutime, stat.cstime].every(Number.isFinite) ? stat : null;
}

/**
 * Clock ticks of all cores from /proc/stat's first line: busy (user, nice, system, irq, softirq, steal), and of it
 * the interrupts (irq, softirq), which no process is charged with — on this machine mostly the loopback network
 * stack carrying every byte between the broker, its clients and PostgreSQL.
 */
export function parseMachineBusy(procStat: string): { busy: number; interrupts: number } {
  const first = procStat.split('\n', 1)[0] ?? '';
  const [label, ...values] = first.trim().split(/\s+/);
  if (label !== 'cpu') throw new Error(`unexpected /proc/stat: ${first}`);
  const n = values.map(Number);
  const interrupts = n[5]! + n[6]!;
  return { busy: n[0]! + n[1]! + n[2]! + interrupts + (n[7] ?? 0), interrupts };
}

/**
 * PostgreSQL's CPU ticks in one snapshot of the process table: every `postgres` process's own time, plus the reaped
 * children's time of the postmaster (the one whose parent is not `postgres`), so a backend that ended keeps counting.
 */
export function postgresTicks(stats: readonly ProcStat[]): number {
  const pg = stats.filter((s) => s.comm === 'postgres');
  const pids = new Set(pg.map((s) => s.pid));
  return pg.reduce((sum, s) => sum + s.utime + s.stime + (pids.has(s.ppid) ? 0 : s.cutime + s.cstime), 0);
}

/** A counter's value at `t` from samples in time order: linear between neighbours, the nearest one outside them. */
export function valueAt(samples: readonly { readonly atMs: number; readonly value: number }[], t: number): number {
  if (samples.length === 0) return 0;
  if (t <= samples[0]!.atMs) return samples[0]!.value;
  const last = samples[samples.length - 1]!;
  if (t >= last.atMs) return last.value;
  let lo = 0;
  let hi = samples.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (samples[mid]!.atMs <= t) lo = mid;
    else hi = mid;
  }
  const a = samples[lo]!;
  const b = samples[hi]!;
  return a.value + ((b.value - a.value) * (t - a.atMs)) / (b.atMs - a.atMs);
}

/** CPU seconds spent in a window, by whom. */
export interface CpuSplit {
  readonly seconds: number;
  readonly cores: number;
  /** Busy time of all cores. */
  readonly machine: number;
  /** Interrupt handling of all cores (irq, softirq): charged to no process. */
  readonly interrupts: number;
  readonly postgres: number;
  readonly broker: number;
  /** This process (the benchmark: B1's COPY client, B2's clients, the progress probes). */
  readonly bench: number;
  /** Each child of this process that was sampled, by pid. */
  readonly children: ReadonlyMap<number, number>;
}

type Series = { atMs: number; value: number }[];

export class CpuSampler {
  private readonly machine: Series = [];
  private readonly interrupts: Series = [];
  private readonly postgres: Series = [];
  private readonly broker: Series = [];
  private readonly bench: Series = [];
  private readonly children = new Map<number, Series>();
  private timer: NodeJS.Timeout | undefined;

  private constructor(private readonly ticksPerSecond: number, private readonly cores: number, private readonly brokerPid: () => number) {}

  /** Starts sampling; null where /proc cannot be read (not Linux): the run then reports no CPU split. */
  static start(cores: number, brokerPid: () => number): CpuSampler | null {
    try {
      readFileSync('/proc/stat', 'utf8');
    } catch {
      return null;
    }
    const sampler = new CpuSampler(clockTicksPerSecond(), cores, brokerPid);
    sampler.sample();
    sampler.timer = setInterval(() => sampler.sample(), SAMPLE_MS);
    sampler.timer.unref();
    return sampler;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Takes a sample now (the end of a window is sampled before it is read, so no window ends past the last sample). */
  now(): number {
    this.sample();
    return Date.now();
  }

  between(startMs: number, endMs: number): CpuSplit {
    const over = (s: Series): number => Math.max(0, valueAt(s, endMs) - valueAt(s, startMs));
    return {
      seconds: (endMs - startMs) / 1000,
      cores: this.cores,
      machine: over(this.machine),
      interrupts: over(this.interrupts),
      postgres: over(this.postgres),
      broker: over(this.broker),
      bench: over(this.bench),
      children: new Map([...this.children].map(([pid, s]) => [pid, over(s)])),
    };
  }

  private sample(): void {
    const atMs = Date.now();
    const machine = readFileSync('/proc/stat', 'utf8');
    const stats = processTable();
    const seconds = (ticks: number): number => ticks / this.ticksPerSecond;
    const ticks = parseMachineBusy(machine);
    this.machine.push({ atMs, value: seconds(ticks.busy) });
    this.interrupts.push({ atMs, value: seconds(ticks.interrupts) });
    this.postgres.push({ atMs, value: seconds(postgresTicks(stats)) });
    const brokerPid = this.brokerPid();
    const broker = stats.find((s) => s.pid === brokerPid);
    if (broker) this.broker.push({ atMs, value: seconds(broker.utime + broker.stime + broker.cutime + broker.cstime) });
    const own = process.cpuUsage();
    this.bench.push({ atMs, value: (own.user + own.system) / 1e6 });
    for (const s of stats) {
      if (s.ppid !== process.pid || s.pid === brokerPid) continue;
      const series = this.children.get(s.pid) ?? [];
      series.push({ atMs, value: seconds(s.utime + s.stime + s.cutime + s.cstime) });
      this.children.set(s.pid, series);
    }
  }
}

/**
 * Every process's stat line. Read synchronously: a hundred small /proc reads take about a millisecond this way, and
 * twenty through the thread pool (the sampler's CPU is the benchmark's, on the cores it measures).
 */
function processTable(): ProcStat[] {
  const stats: ProcStat[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let line: string;
    try {
      line = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // ended between the listing and the read
    }
    const stat = parseProcStat(line);
    if (stat !== null) stats.push(stat);
  }
  return stats;
}

function clockTicksPerSecond(): number {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(ticks) && ticks > 0 ? ticks : 100;
  } catch {
    return 100; // USER_HZ on every Linux the bench runs on
  }
}
