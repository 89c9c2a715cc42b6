/**
 * PublishedPaths (src/poll/published-paths.ts): the bounded set of paths a run knows published. What must hold:
 * it never answers "published" for a path whose key moved or was deleted, and it never holds more than its limit.
 */
import { describe, expect, it } from 'vitest';
import { PublishedPaths, PUBLISHED_PATHS_LIMIT } from '../../src/poll/published-paths.js';

describe('PublishedPaths', () => {
  it('knows nothing at first: every path is left to the registry', () => {
    const paths = new PublishedPaths(10);
    expect(paths.has('/1/')).toBe(false);
    expect(paths.size).toBe(0);
  });

  it('knows a path once a key is added at it', () => {
    const paths = new PublishedPaths(10);
    paths.add('k1', '/1/');
    expect(paths.has('/1/')).toBe(true);
    expect(paths.has('/2/')).toBe(false);
  });

  it('forgets the path of a deleted key (a tombstone), and only that one', () => {
    const paths = new PublishedPaths(10);
    paths.add('k1', '/1/');
    paths.add('k2', '/2/');
    paths.deleted(['k1', 'unknown']);
    expect(paths.has('/1/')).toBe(false);
    expect(paths.has('/2/')).toBe(true);
  });

  it('forgets the old path of a key written at another path (a move), and does not learn the new one from a write', () => {
    const paths = new PublishedPaths(10);
    paths.add('k1', '/1/');
    paths.written([{ key: 'k1', pathLocator: '/9/' }]);
    expect(paths.has('/1/')).toBe(false);
    expect(paths.has('/9/')).toBe(false);
    paths.add('k2', '/2/');
    paths.written([{ key: 'k2', pathLocator: null }]);
    expect(paths.has('/2/')).toBe(false);
  });

  it('keeps a path whose key is written again at the same path', () => {
    const paths = new PublishedPaths(10);
    paths.add('k1', '/1/');
    paths.written([{ key: 'k1', pathLocator: '/1/' }, { key: 'other', pathLocator: '/1/' }]);
    expect(paths.has('/1/')).toBe(true);
  });

  it('a parent deleted and re-created at the same path under a new key: the delete of the old key does not forget the new one', () => {
    const paths = new PublishedPaths(10);
    paths.add('old', '/1/');
    paths.deleted(['old']);
    expect(paths.has('/1/')).toBe(false);
    paths.add('new', '/1/');
    expect(paths.has('/1/')).toBe(true);
    paths.deleted(['old']);
    expect(paths.has('/1/')).toBe(true);
    paths.deleted(['new']);
    expect(paths.has('/1/')).toBe(false);
  });

  it('two keys at one path: the newest stands for it, and its delete or move forgets the path (conservative: the registry is asked)', () => {
    const paths = new PublishedPaths(10);
    paths.add('a', '/1/');
    paths.add('b', '/1/');
    expect(paths.size).toBe(1);
    paths.deleted(['a']);
    expect(paths.has('/1/')).toBe(true);
    paths.written([{ key: 'b', pathLocator: '/2/' }]);
    expect(paths.has('/1/')).toBe(false);
  });

  it('a key added at a new path drops its entry at the old one', () => {
    const paths = new PublishedPaths(10);
    paths.add('k1', '/1/');
    paths.add('k1', '/2/');
    expect(paths.has('/1/')).toBe(false);
    expect(paths.has('/2/')).toBe(true);
    expect(paths.size).toBe(1);
    paths.deleted(['k1']);
    expect(paths.size).toBe(0);
  });

  it('never holds more than its limit: the least recently used path goes first', () => {
    const paths = new PublishedPaths(3);
    paths.add('a', '/a/');
    paths.add('b', '/b/');
    paths.add('c', '/c/');
    expect(paths.has('/a/')).toBe(true); // /a/ used: /b/ is now the oldest
    paths.add('d', '/d/');
    expect(paths.size).toBe(3);
    expect(paths.has('/b/')).toBe(false);
    expect(paths.has('/a/')).toBe(true);
    expect(paths.has('/c/')).toBe(true);
    expect(paths.has('/d/')).toBe(true);
    // the evicted key's entry is gone on both sides: a later delete of it touches nothing else
    paths.add('b2', '/b/');
    paths.deleted(['b']);
    expect(paths.has('/b/')).toBe(true);
  });

  it('stays at its limit across a long load, and both of its maps with it', () => {
    const paths = new PublishedPaths(1000);
    for (let i = 0; i < 50_000; i++) {
      paths.add(`k${i}`, `/${i}/`);
      if (i % 7 === 0) paths.written([{ key: `k${i - 3}`, pathLocator: `/moved${i}/` }]);
    }
    expect(paths.size).toBe(1000);
    // every surviving entry is still consistent: deleting every key empties it
    paths.deleted(Array.from({ length: 50_000 }, (_, i) => `k${i}`));
    expect(paths.size).toBe(0);
    expect((paths as unknown as { byKey: Map<string, string> }).byKey.size).toBe(0);
  });

  it('with a limit of 0 it knows nothing (every lookup goes to the registry)', () => {
    const paths = new PublishedPaths(0);
    paths.add('k', '/1/');
    expect(paths.has('/1/')).toBe(false);
  });

  it('clear forgets everything; the default limit is bounded', () => {
    const paths = new PublishedPaths();
    paths.add('k', '/1/');
    paths.clear();
    expect(paths.has('/1/')).toBe(false);
    expect(paths.limit).toBe(PUBLISHED_PATHS_LIMIT);
    expect(PUBLISHED_PATHS_LIMIT).toBeLessThanOrEqual(1_000_000);
    expect(() => new PublishedPaths(-1)).toThrow(RangeError);
  });
});
