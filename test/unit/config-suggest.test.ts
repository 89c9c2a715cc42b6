import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { closestMatch, editDistance, knownKeysAt, unknownKeyMessage } from '../../src/config/suggest.js';

describe('did you mean', () => {
  it('measures edits, counting a swap of neighbours as one', () => {
    expect(editDistance('safetyBuferMinutes', 'safetyBufferMinutes')).toBe(1);
    expect(editDistance('bacthSize', 'batchSize')).toBe(1);
    expect(editDistance('Topic', 'topic')).toBe(0);
    expect(editDistance('', 'abc')).toBe(3);
  });

  it('suggests the closest option only when it is a plausible typo', () => {
    const known = ['safetyBufferMinutes', 'batchSize', 'topic', 'enabled'];
    expect(closestMatch('safetyBuferMinutes', known)).toBe('safetyBufferMinutes');
    expect(closestMatch('topc', known)).toBe('topic');
    expect(closestMatch('colour', known)).toBeUndefined();
    expect(unknownKeyMessage('colour', ['a', 'b'])).toBe('unknown option "colour"; known options here: a, b');
  });

  it('finds the options of the object at a path through arrays, optionals, defaults and extensions', () => {
    const inner = z.strictObject({ a: z.string() });
    const schema = z.strictObject({
      list: z.array(inner.extend({ b: z.number() })).default([]),
      opt: z.strictObject({ c: z.string().nullable() }).optional(),
    });
    expect(knownKeysAt(schema, [])).toEqual(['list', 'opt']);
    expect(knownKeysAt(schema, ['list', 3])).toEqual(['a', 'b']);
    expect(knownKeysAt(schema, ['opt'])).toEqual(['c']);
    expect(knownKeysAt(schema, ['nothing', 'here'])).toEqual([]);
  });
});
