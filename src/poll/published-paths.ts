/**
 * The paths a table's run knows to be published — registered acknowledged and not deleted, as the registry's
 * `publishedPathLocators` answers — so that the search for unpublished ancestors (TablePoll.unpublishedAncestors)
 * asks the registry only about the others. Pure, bounded, one per table run.
 *
 * An entry is a pair (path, key): the registry held `key` at `path`, acknowledged and not deleted, when the entry
 * was made (a checkpoint of this run wrote it, or the registry said so). The registry only changes a key's row
 * through the control store (ControlStore.watchRegistry tells its watchers), and the entry stays true until:
 * - the key is written at another path (a move): `written` drops the entry;
 * - the key is deleted (a tombstone): `deleted` drops it.
 * (A pending registration keeps an acknowledged row acknowledged, and a deleted key's entry is already gone.)
 * Anything not in the set is unknown, never "unpublished": the caller asks the registry.
 *
 * Bounded: at most `limit` entries, the least recently used evicted first (an eviction only costs a registry
 * lookup), so a 10-million-row load does not grow it without bound.
 */
export class PublishedPaths {
  /** path -> key, in least-recently-used-first order (a hit moves the entry to the end). */
  private readonly byPath = new Map<string, string>();
  /** key -> path: the same entries, to find a key's entry when the key moves or is deleted. */
  private readonly byKey = new Map<string, string>();

  constructor(readonly limit: number = PUBLISHED_PATHS_LIMIT) {
    if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`PublishedPaths limit must be a non-negative integer, got ${limit}`);
  }

  get size(): number {
    return this.byPath.size;
  }

  /** Whether `path` is known published (and marks it recently used). */
  has(path: string): boolean {
    const key = this.byPath.get(path);
    if (key === undefined) return false;
    this.byPath.delete(path);
    this.byPath.set(path, key);
    return true;
  }

  /** The registry holds `key` at `path`, acknowledged and not deleted (just written by a checkpoint, or just read). */
  add(key: string, path: string): void {
    if (this.limit === 0) return;
    this.forgetKey(key);
    const other = this.byPath.get(path);
    if (other !== undefined) this.byKey.delete(other); // the newest key at the path stands for it
    this.byPath.delete(path);
    this.byPath.set(path, key);
    this.byKey.set(key, path);
    while (this.byPath.size > this.limit) {
      const [oldest, oldestKey] = this.byPath.entries().next().value as [string, string];
      this.byPath.delete(oldest);
      this.byKey.delete(oldestKey);
    }
  }

  /** The registry now holds these keys at these paths: an entry of a key at another path is dropped. */
  written(rows: readonly { readonly key: string; readonly pathLocator: string | null }[]): void {
    for (const { key, pathLocator } of rows) {
      if (this.byKey.has(key) && this.byKey.get(key) !== pathLocator) this.forgetKey(key);
    }
  }

  /** These keys are (or are about to be) deleted in the registry: their entries are dropped. */
  deleted(keys: readonly string[]): void {
    for (const key of keys) this.forgetKey(key);
  }

  clear(): void {
    this.byPath.clear();
    this.byKey.clear();
  }

  private forgetKey(key: string): void {
    const path = this.byKey.get(key);
    if (path === undefined) return;
    this.byKey.delete(key);
    if (this.byPath.get(path) === key) this.byPath.delete(path);
  }
}

/**
 * Entries per table run: a path (a hierarchyid, tens of bytes) and a key (a GUID) in two maps; 100,000 entries of
 * flat strings as the driver returns them measured 16 MB of heap (Node 20). Only directories and paths asked about
 * as ancestors are entered, so this covers the folders of far larger loads.
 */
export const PUBLISHED_PATHS_LIMIT = 100_000;
