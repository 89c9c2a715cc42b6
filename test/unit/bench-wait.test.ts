import { describe, expect, it } from 'vitest';
import { waitForRows, type Progress } from '../bench/systems/highwater.js';

/** A probe over a counter that the test advances; counts how often the exact (expensive) probe ran. */
function fakeTarget() {
  const state = { rows: 0, offsets: 0, exactProbes: 0 };
  const probe = async (): Promise<Progress> => {
    state.exactProbes++;
    return { rows: state.rows, lastCommitMs: 1000 + state.rows, firstCommitMs: 1000 };
  };
  return { state, probe };
}

describe('waiting for the rows of a bench stage', () => {
  it('counts the target only once the cheap gate holds, and reports the exact count then', async () => {
    const { state, probe } = fakeTarget();
    const timer = setInterval(() => {
      // A second to reach 100 rows: ungated, the 250 ms steps would count four or five times.
      state.offsets += 10;
      state.rows = Math.min(100, state.rows + 10);
    }, 100);
    try {
      const done = await waitForRows(probe, 100, 10_000, undefined, async () => state.offsets >= 100);
      expect(done).toMatchObject({ rows: 100, complete: true, lastCommitMs: 1100 });
      // Gated: no count while the offsets were short of the rows expected.
      expect(state.exactProbes).toBeLessThanOrEqual(2);
    } finally {
      clearInterval(timer);
    }
  });

  it('still counts exactly once when it gives up with the gate never holding', async () => {
    const { state, probe } = fakeTarget();
    state.rows = 7;
    const done = await waitForRows(probe, 100, 300, undefined, async () => false);
    expect(done).toMatchObject({ rows: 7, complete: false });
    expect(state.exactProbes).toBe(1);
  });

  it('without a gate, counts every step as before', async () => {
    const { state, probe } = fakeTarget();
    let alive = 3;
    const done = await waitForRows(probe, 100, 10_000, () => alive-- > 0);
    expect(done.complete).toBe(false);
    expect(state.exactProbes).toBe(4);
  });
});
