import { describe, expect, it } from 'vitest';
import { verdictLine } from '../../src/dev/demo/demo.js';

describe('the demo verdict', () => {
  it('says all tables are equal, or what differs', () => {
    expect(verdictLine('T', { equal: true, source: { rows: 3, checksum: 'a' }, target: { rows: 3, checksum: 'a' } })).toBe('verdict: all tables equal — T: 3 rows, the same content checksum in source and target');
    expect(verdictLine('T', { equal: false, source: { rows: 3, checksum: 'a' }, target: { rows: 2, checksum: 'b' } })).toBe('verdict: DIFFERENT — T: source 3 rows, target 2; content checksums differ');
    expect(verdictLine('T', { equal: false, source: { rows: 3, checksum: 'a' }, target: { rows: 3, checksum: 'b' } })).toBe('verdict: DIFFERENT — T: both 3 rows; content checksums differ');
  });
});
