/**
 * The GPU node's model cache (`<workDir>/models`): one folder per model (named by its manifest's
 * hash), kept under a byte limit by evicting the least recently used folders. The same mechanism
 * keeps the store-mirror downloads (`<workDir>/hf-mirror`, one folder per mirrored hub id's listing
 * digest; activities/datasets.ts) under theirs: every function takes the cache's root folder, and
 * `nameCache` gives a root the name its messages use ("model cache" unless named).
 *
 * - Use: every request for a model takes a lease (a file under `.leases/<entry>/` naming this host,
 *   process and a random id) before it looks at the folder, and the caller releases it when the
 *   trainer or generation reading the folder has finished. A leased folder is never evicted; a lease
 *   whose process is gone (same host, pid no longer alive) is stale and ignored.
 * - Recency: the folder's mtime, set to now on every request (hit or download).
 * - Eviction: after a download (and when a lease is released while the cache was left over its limit)
 *   the folders are summed and, oldest first, renamed to `.evicting-…` and then deleted until the
 *   total fits, skipping leased folders and the one just downloaded. If only such folders are left
 *   the cache stays over its limit for now, and says so.
 * - Several activities in one process and several processes on one host share the folder: taking a
 *   lease and choosing/renaming evictees happen under one lock (an in-process queue plus a `.lock`
 *   directory created atomically), so a folder is either leased before the evictor looks (and kept)
 *   or renamed away before the lease is taken (and downloaded again). The rename is atomic: a folder
 *   under an entry's name is never half-deleted; a folder that is half-downloaded carries no
 *   completion marker (activities/store.ts downloadDir), so it is completed, never trusted as is.
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

/** Entry folder names this cache manages (a manifest hash prefix); nothing else under the root is touched. */
const ENTRY = /^[0-9a-f]{16,64}$/;
const LEASES = '.leases';
const LOCK = '.lock';
const EVICTING = '.evicting-';
/** A `.lock` older than this is taken to be left by a crashed holder (the lock is held for milliseconds). */
const STALE_LOCK_MS = 60_000;
const LOCK_TIMEOUT_MS = 5 * 60_000;

export interface CacheEntry {
  key: string;
  dir: string;
  bytes: number;
  lastUsed: Date;
  leases: number;
}

export interface EvictionResult {
  evicted: CacheEntry[];
  /** Bytes the remaining entries hold. */
  totalBytes: number;
  limitBytes: number;
  /** Entries kept over the limit because they are in use (or just downloaded). */
  pinned: CacheEntry[];
}

export interface Lease {
  key: string;
  /** Releases the lease (idempotent). */
  release(): Promise<void>;
}

/** Where the cache's messages go (tests capture them). */
export const cacheLog = {
  info: (msg: string): void => console.info(msg),
  warn: (msg: string): void => console.warn(msg),
};

const host = os.hostname();
const names = new Map<string, string>();

/** The name a cache's messages use for `root` (default: "model cache"). */
export function nameCache(root: string, name: string): void {
  names.set(path.resolve(root), name);
}
const nameOf = (root: string): string => names.get(path.resolve(root)) ?? 'model cache';
const queues = new Map<string, Promise<void>>();

function isErrno(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException)?.code ?? '');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return isErrno(err, 'EPERM');
  }
}

/** A lease or lock owner written by `owner()`; stale when it is this host's and its process is gone. */
function staleOwner(text: string): boolean {
  const [h, pid] = text.split('~');
  return h === encodeURIComponent(host) && Number.isInteger(Number(pid)) && !alive(Number(pid));
}

function owner(): string {
  return `${encodeURIComponent(host)}~${process.pid}~${randomUUID()}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function takeFileLock(root: string): Promise<() => Promise<void>> {
  const lock = path.join(root, LOCK);
  const me = owner();
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  for (;;) {
    try {
      await fs.mkdir(lock);
      await fs.writeFile(path.join(lock, 'owner'), me);
      return async () => {
        // Renamed first, so a process that finds `.lock` never finds a half-removed one.
        const gone = path.join(root, `${LOCK}-released-${randomUUID()}`);
        // Only this holder's lock (a holder taken for crashed never removes its successor's).
        if ((await fs.readFile(path.join(lock, 'owner'), 'utf8').catch(() => '')) !== me) return;
        if (await fs.rename(lock, gone).then(() => true, () => false)) await fs.rm(gone, { recursive: true, force: true });
      };
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
    // Held: wait, unless its holder is gone (dead process on this host, or held far too long).
    const holder = await fs.readFile(path.join(lock, 'owner'), 'utf8').catch(() => '');
    const since = await fs.stat(lock).then((s) => s.mtimeMs, () => Date.now());
    if ((holder && staleOwner(holder)) || Date.now() - since > STALE_LOCK_MS) {
      const stale = path.join(root, `${LOCK}-stale-${randomUUID()}`);
      if (await fs.rename(lock, stale).then(() => true, () => false)) {
        cacheLog.warn(`${nameOf(root)} ${root}: removed a lock left by ${holder ? decodeURIComponent(holder.split('~')[0] ?? '') + ' pid ' + holder.split('~')[1] : 'a crashed process'}`);
        await fs.rm(stale, { recursive: true, force: true });
      }
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${nameOf(root)} ${root}: lock ${lock} held for over ${LOCK_TIMEOUT_MS / 1000}s`);
    await sleep(10 + Math.random() * 30);
  }
}

/** Runs `fn` holding the cache's lock: one caller at a time in this process, and across processes. */
export async function withCacheLock<T>(root: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(root) ?? Promise.resolve();
  let done!: () => void;
  const mine = new Promise<void>((r) => (done = r));
  const tail = prev.then(() => mine);
  queues.set(root, tail);
  await prev;
  try {
    await fs.mkdir(root, { recursive: true });
    const unlock = await takeFileLock(root);
    try {
      return await fn();
    } finally {
      await unlock();
    }
  } finally {
    done();
    if (queues.get(root) === tail) queues.delete(root);
  }
}

/** Takes a lease on an entry (before its folder is looked at or downloaded into). */
export async function acquireLease(root: string, key: string): Promise<Lease> {
  if (!ENTRY.test(key)) throw new Error(`${nameOf(root)}: bad entry name ${JSON.stringify(key)}`);
  const dir = path.join(root, LEASES, key);
  const file = path.join(dir, owner());
  await withCacheLock(root, async () => {
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(file, '');
  });
  let released = false;
  return {
    key,
    release: async () => {
      if (released) return;
      released = true;
      await fs.rm(file, { force: true });
      // An empty lease folder is removed (another lease may arrive at once: then rmdir just fails).
      await fs.rmdir(dir).catch(() => undefined);
    },
  };
}

/** Live leases on an entry; stale ones (their process is gone) are removed. */
async function liveLeases(root: string, key: string): Promise<number> {
  const dir = path.join(root, LEASES, key);
  let n = 0;
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    if (staleOwner(name)) {
      cacheLog.warn(`${nameOf(root)} ${root}: dropped a lease on ${key} left by dead process ${name.split('~')[1]}`);
      await fs.rm(path.join(dir, name), { force: true });
    } else n++;
  }
  return n;
}

/** Records a use of an entry: its folder's mtime becomes now. */
export async function touchEntry(root: string, key: string): Promise<void> {
  const now = new Date();
  await fs.utimes(path.join(root, key), now, now).catch((err: unknown) => {
    if (!isErrno(err, 'ENOENT')) throw err;
  });
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await dirBytes(p);
    else total += await fs.lstat(p).then((s) => s.size, () => 0);
  }
  return total;
}

/** The cache's entries, least recently used first. */
export async function cacheEntries(root: string): Promise<CacheEntry[]> {
  const out: CacheEntry[] = [];
  for (const e of await fs.readdir(root, { withFileTypes: true }).catch(() => [])) {
    if (!e.isDirectory() || !ENTRY.test(e.name)) continue;
    const dir = path.join(root, e.name);
    const st = await fs.stat(dir).catch(() => undefined);
    if (!st) continue;
    out.push({ key: e.name, dir, bytes: await dirBytes(dir), lastUsed: st.mtime, leases: await liveLeases(root, e.name) });
  }
  return out.sort((a, b) => a.lastUsed.getTime() - b.lastUsed.getTime() || a.key.localeCompare(b.key));
}

/**
 * Evicts least recently used entries until the cache holds at most `limitBytes`, never an entry with
 * a live lease nor one in `keep`. Evictees are renamed under the lock and deleted after it.
 */
export async function evictLeastRecentlyUsed(root: string, limitBytes: number, keep: readonly string[] = []): Promise<EvictionResult> {
  const doomed: { entry: CacheEntry; to: string }[] = [];
  const result = await withCacheLock(root, async () => {
    const entries = await cacheEntries(root);
    let total = entries.reduce((a, e) => a + e.bytes, 0);
    const pinned: CacheEntry[] = [];
    for (const entry of entries) {
      if (total <= limitBytes) break;
      if (entry.leases > 0 || keep.includes(entry.key)) {
        pinned.push(entry);
        continue;
      }
      const to = path.join(root, `${EVICTING}${entry.key}-${randomUUID()}`);
      try {
        await fs.rename(entry.dir, to);
      } catch (err) {
        if (isErrno(err, 'ENOENT')) continue;
        throw err;
      }
      doomed.push({ entry, to });
      total -= entry.bytes;
    }
    return { evicted: doomed.map((d) => d.entry), totalBytes: total, limitBytes, pinned: total > limitBytes ? pinned : [] };
  });
  for (const { entry } of doomed) {
    cacheLog.info(`${nameOf(root)} ${root}: evicted ${entry.key} (${entry.bytes} bytes, last used ${entry.lastUsed.toISOString()})`);
  }
  // Folders renamed here, and any left by a process that died between rename and delete.
  const leftovers = (await fs.readdir(root).catch(() => [] as string[])).filter((n) => n.startsWith(EVICTING));
  await Promise.all(
    leftovers.map((n) =>
      fs.rm(path.join(root, n), { recursive: true, force: true }).catch((err: unknown) => cacheLog.warn(`${nameOf(root)} ${root}: could not delete ${n}: ${String(err)}`)),
    ),
  );
  if (result.totalBytes > result.limitBytes) {
    cacheLog.warn(
      `${nameOf(root)} ${root}: ${result.totalBytes} bytes, over its limit of ${result.limitBytes}: ` +
        `kept ${result.pinned.map((e) => `${e.key} (${e.leases > 0 ? `in use, ${e.leases} lease${e.leases > 1 ? 's' : ''}` : 'just downloaded'})`).join(', ')}`,
    );
  }
  return result;
}
