import { describe, expect, it } from 'vitest';
import { sliced } from '../../src/apply/loop.js';

describe('slices of a partition batch', () => {
  it('keeps every record once, in order, at most `size` a slice', () => {
    const records = Array.from({ length: 11 }, (_, i) => i);
    expect(sliced(records, 4)).toEqual([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]);
    expect(sliced(records, 11)).toEqual([records]);
    expect(sliced(records, 100)).toEqual([records]);
    expect(sliced([], 5)).toEqual([]);
  });
});
