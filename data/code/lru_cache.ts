/**
 * A least-recently-used cache: a Map keeps insertion order, so re-inserting a key on every
 * read moves it to the back and the front is always the entry to evict.
 */

export interface CacheStats {
  hits: number;
  misses: number;
  evictions: number;
}

export class LruCache<K, V> {
  private readonly entries = new Map<K, V>();
  private stats: CacheStats = { hits: 0, misses: 0, evictions: 0 };

  constructor(private readonly capacity: number) {
    if (capacity < 1) {
      throw new RangeError("capacity must be at least 1");
    }
  }

  get(key: K): V | undefined {
    const value = this.entries.get(key);
    if (value === undefined) {
      this.stats.misses++;
      return undefined;
    }
    this.entries.delete(key);
    this.entries.set(key, value);
    this.stats.hits++;
    return value;
  }

  set(key: K, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as K;
      this.entries.delete(oldest);
      this.stats.evictions++;
    }
  }

  get size(): number {
    return this.entries.size;
  }

  report(): CacheStats {
    return { ...this.stats };
  }
}

/** Wrap a one-argument function so repeated calls are answered from a cache. */
export function memoize<A, R>(fn: (arg: A) => R, capacity = 100): (arg: A) => R {
  const cache = new LruCache<A, R>(capacity);
  return (arg: A): R => {
    const hit = cache.get(arg);
    if (hit !== undefined) {
      return hit;
    }
    const result = fn(arg);
    cache.set(arg, result);
    return result;
  };
}
