import { describe, expect, it } from 'vitest';
import { parseMachineBusy, parseProcStat, postgresTicks, valueAt, type ProcStat } from '../bench/env/cpu.js';
import { cpuObservations } from '../bench/systems/cpu-split.js';

/** A /proc/<pid>/stat line with the given fields (the others zero). */
function statLine(pid: number, comm: string, ppid: number, utime: number, stime: number, cutime = 0, cstime = 0): string {
  const fields = ['S', ppid, ...Array(9).fill(0), utime, stime, cutime, cstime, ...Array(35).fill(0)];
  return `${pid} (${comm}) ${fields.join(' ')}\n`;
}

describe('bench CPU accounting', () => {
  it('parses a stat line, counting fields from the last parenthesis of the command name', () => {
    expect(parseProcStat(statLine(42, 'postgres', 7, 150, 25, 3, 4))).toEqual({ pid: 42, comm: 'postgres', ppid: 7, utime: 150, stime: 25, cutime: 3, cstime: 4 });
    expect(parseProcStat(statLine(43, 'a) (b c', 1, 9, 8))).toMatchObject({ pid: 43, comm: 'a) (b c', ppid: 1, utime: 9, stime: 8 });
    expect(parseProcStat('garbage')).toBeNull();
    expect(parseProcStat('12 (x) S')).toBeNull();
  });

  it('counts user, nice, system, irq, softirq and steal as busy, not idle or iowait', () => {
    expect(parseMachineBusy('cpu  100 2 30 5000 70 4 5 6 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n')).toEqual({ busy: 100 + 2 + 30 + 4 + 5 + 6, interrupts: 4 + 5 });
    expect(() => parseMachineBusy('intr 1 2 3')).toThrow(/unexpected/);
  });

  it("counts PostgreSQL's backends and what the postmaster reaped of ended ones, once", () => {
    const stats: ProcStat[] = [
      { pid: 10, comm: 'postgres', ppid: 1, utime: 100, stime: 10, cutime: 500, cstime: 50 },
      // A backend's own reaped children are not counted again: they are its time's, not the postmaster's.
      { pid: 11, comm: 'postgres', ppid: 10, utime: 20, stime: 2, cutime: 999, cstime: 999 },
      { pid: 12, comm: 'node', ppid: 1, utime: 1000, stime: 1000, cutime: 0, cstime: 0 },
    ];
    expect(postgresTicks(stats)).toBe(100 + 10 + 500 + 50 + 20 + 2);
  });

  it('interpolates a counter between samples and holds it at the nearest sample outside them', () => {
    const samples = [{ atMs: 1000, value: 1 }, { atMs: 2000, value: 3 }, { atMs: 4000, value: 4 }];
    expect(valueAt(samples, 500)).toBe(1);
    expect(valueAt(samples, 1500)).toBe(2);
    expect(valueAt(samples, 2000)).toBe(3);
    expect(valueAt(samples, 3000)).toBe(3.5);
    expect(valueAt(samples, 9000)).toBe(4);
    expect(valueAt([], 1)).toBe(0);
  });

  it('reports the busy share of the cores and each party’s µs of CPU per row', () => {
    const split = { seconds: 10, cores: 2, machine: 15, interrupts: 0.2, postgres: 6, broker: 3, bench: 0.5, children: new Map([[7, 4], [8, 1]]) };
    const got = cpuObservations(split, 'e2e', { startMs: 0, endMs: 10_000, rows: 100_000, processes: [{ name: 'poll', pid: 7 }, { name: 'consume', pid: 8 }, { name: 'gone', pid: 9 }] });
    expect(Object.fromEntries(got.map((o) => [o.name, o.value]))).toEqual({
      'cpu (e2e): machine busy': 75,
      'cpu/row (e2e): all processes': 150,
      'cpu/row (e2e): postgres': 60,
      'cpu/row (e2e): kafka broker': 30,
      'cpu/row (e2e): poll process': 40,
      'cpu/row (e2e): consume process': 10,
      'cpu/row (e2e): gone process': 0,
      'cpu/row (e2e): bench process': 5,
      'cpu/row (e2e): kernel interrupts': 2,
      'cpu/row (e2e): other processes': 3,
    });
  });
});
