/**
 * Regression (issue 9, R13 clock skew of the poller host): the poller measured its own intervals — when to renew a
 * table's lease during a long poll, which back-fill requests were served moments ago, how long its loop has been
 * silent for /healthz — on the wall clock. A step
 * back of the host clock (NTP, a misset clock corrected) postponed the lease renewal by the size of the step, so the
 * lease expired under a running poll, and kept every served request "recent" for as long. Elapsed time now comes
 * from the monotonic clock; these tests step the wall clock back and move the monotonic one forward.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Liveness } from '../../src/metrics/liveness.js';
import { RecentIds, RenewalTimer } from '../../src/poll/elapsed.js';

const HOUR = 3_600_000;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date', 'performance'] });
});

afterEach(() => {
  vi.useRealTimers();
});

/** The host clock steps back an hour while `ms` really pass. */
function stepBackAndWait(ms: number): void {
  vi.setSystemTime(Date.now() - HOUR);
  vi.advanceTimersByTime(ms);
}

describe('the lease renewal timer', () => {
  it('is due a period after the last renewal', () => {
    const timer = new RenewalTimer(5000);
    expect(timer.due()).toBe(false);
    vi.advanceTimersByTime(5000);
    expect(timer.due()).toBe(true);
    timer.renewed();
    expect(timer.due()).toBe(false);
  });

  it('is still due a period later when the wall clock stepped back an hour in between', () => {
    const timer = new RenewalTimer(5000);
    stepBackAndWait(5000);
    expect(timer.due()).toBe(true);
  });
});

describe('the recently served back-fill requests', () => {
  it('forget a request once the window passed, even when the wall clock stepped back an hour in between', () => {
    const recent = new RecentIds(10_000);
    recent.add('parent /1/');
    expect(recent.has('parent /1/')).toBe(true);
    stepBackAndWait(10_000);
    expect(recent.has('parent /1/')).toBe(false);
  });
});

describe('the liveness of a loop (/healthz)', () => {
  it('is not stale after a step forward of the wall clock, and goes stale on time after a step back', () => {
    const liveness = new Liveness();
    liveness.expect('poller', 10_000);
    vi.setSystemTime(Date.now() + HOUR);
    vi.advanceTimersByTime(1000);
    expect(liveness.stale()).toEqual([]);
    stepBackAndWait(11_000);
    expect(liveness.stale().map((s) => s.loop)).toEqual(['poller']);
  });
});
