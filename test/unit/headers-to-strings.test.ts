import { describe, expect, it } from 'vitest';
import { headersToStrings } from '../../src/kafka/consumer.js';

describe('headersToStrings', () => {
  it('gives one string per header, the first of a repeated one, from strings or Buffers alike', () => {
    expect(headersToStrings({ a: 'x', b: Buffer.from('é'), c: [Buffer.from('1'), Buffer.from('2')], d: ['s', 't'] })).toEqual({ a: 'x', b: 'é', c: '1', d: 's' });
    expect(headersToStrings(undefined)).toEqual({});
  });

  it('leaves out a header whose value is null or missing instead of failing the batch', () => {
    const headers = { kind: 'change', empty: null, none: undefined, list: [] } as unknown as Parameters<typeof headersToStrings>[0];
    expect(headersToStrings(headers)).toEqual({ kind: 'change' });
  });

  it("reads only the object's own headers, including ones named like Object.prototype's members", () => {
    const inherited = Object.create({ injected: 'no' }) as Record<string, unknown>;
    Object.defineProperty(inherited, 'toString', { value: 'yes', enumerable: true });
    expect(headersToStrings(inherited as Parameters<typeof headersToStrings>[0])).toEqual({ toString: 'yes' });
  });
});
