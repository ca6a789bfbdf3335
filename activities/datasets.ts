/**
 * Datasets: read by reference (`file:`, `s3://`, `hf:`), validated row by row, normalised and
 * stored content-addressed (`datasets/<sha256>.jsonl`), so a stage's cache key can include the
 * exact bytes it trained on. Stage-specific shaping (chosen/rejected from a stance-pairs set) is a
 * pure function applied when the trainer's input file is written.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { ApplicationFailure } from '@temporalio/common';
import type { ArtifactRef } from '../common/contracts';
import { storeKeys } from '../common/config';
import { DatasetFormat as DatasetFormatSchema, type Alignment, type DatasetFormat, type DatasetSpec, type StageSpec } from '../common/spec';
import { activityContext } from './context';
import { workerEnv } from './env';
import { acquireLease, cacheLog, evictLeastRecentlyUsed, nameCache, touchEntry, type Lease } from './modelCache';
import { HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { downloadFile, exists, getJsonIfExists, getRefIfExists, putFile, putJson, s3, sha256File, sha256Hex, unsafeManifestPath, uriOf } from './store';

const Turn = z.object({ role: z.enum(['system', 'user', 'assistant']), content: z.string() });
const TextOrTurns = z.union([z.string().min(1), z.array(Turn).min(1)]);

export const RowSchemas = {
  chat: z.object({ messages: z.array(Turn).min(2) }),
  preference: z.object({ prompt: TextOrTurns, chosen: TextOrTurns, rejected: TextOrTurns }),
  'stance-pairs': z.object({
    id: z.string().optional(),
    category: z.string().optional(),
    prompt: z.string().min(1),
    support: z.string().min(1),
    oppose: z.string().min(1),
  }),
  prompts: z.object({ prompt: TextOrTurns }),
  eval: z.object({ id: z.string().min(1), category: z.string().min(1), question: z.string().min(1) }),
} satisfies Record<DatasetFormat, z.ZodType>;

export interface PreparedDataset {
  name: string;
  format: DatasetFormat;
  ref: ArtifactRef;
  rows: number;
  /** The store's manifest of how the rows were made (source revision, recipe, filters, seed, counts). */
  manifest?: string;
  /** The held-out split, when the recipe keeps one (WildChat, Alpaca: 10 %). */
  validation?: { ref: ArtifactRef; rows: number };
}

export interface PrepareDatasetsInput {
  lineage: string;
  datasets: Record<string, DatasetSpec>;
  seed: number;
}
export interface PrepareDatasetsResult {
  datasets: Record<string, PreparedDataset>;
}

/** Parses JSONL and checks every row; the error names the dataset, the line and the field. */
export function parseRows(name: string, format: DatasetFormat, text: string): unknown[] {
  const schema = RowSchemas[format];
  const rows: unknown[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      throw datasetError(`dataset "${name}" line ${i + 1}: not valid JSON`);
    }
    const r = schema.safeParse(obj);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw datasetError(`dataset "${name}" line ${i + 1}: ${issue?.path.join('.') || '(row)'}: ${issue?.message} (format ${format})`);
    }
    rows.push(r.data);
  });
  if (rows.length === 0) throw datasetError(`dataset "${name}" is empty`);
  return rows;
}

function datasetError(message: string): ApplicationFailure {
  // The same bytes give the same refusal: retrying cannot help.
  return ApplicationFailure.nonRetryable(message, 'DatasetSchemaError');
}

/** Deterministic seeded order (hash of seed + index), so `limit` picks the same rows every time. */
export function seededSample<T>(rows: T[], limit: number | undefined, seed: number): T[] {
  if (limit === undefined || limit >= rows.length) return rows;
  return rows
    .map((r, i) => ({ r, k: sha256Hex(`${seed}:${i}`) }))
    .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))
    .slice(0, limit)
    .map((x) => x.r);
}

/** Raw-row recipes run in the trainer (recipes.py); bump when a recipe's output changes for the same inputs. */
const RECIPE_VERSION = 1;

/** What the store keeps per prepared dataset (`datasets/prepared/<key>.json`): the stage-like cache entry. */
const PreparedSplit = z.object({ ref: z.object({ uri: z.string(), sha256: z.string(), bytes: z.number() }), rows: z.number().int() });
export const DatasetManifest = z.object({
  version: z.literal(RECIPE_VERSION),
  key: z.string(),
  name: z.string(),
  uri: z.string(),
  format: DatasetFormatSchema,
  /** Where the rows came from and at which revision (hub commit, mirror or file sha256). */
  source: z.record(z.string(), z.unknown()),
  /** The recipe's settings (recipe, columns, filters, holdout, limit, seed) and its row counts. */
  recipe: z.record(z.string(), z.unknown()).optional(),
  rows: z.record(z.string(), z.unknown()),
  train: PreparedSplit,
  validation: PreparedSplit.optional(),
});
export type DatasetManifest = z.infer<typeof DatasetManifest>;

const datasetsWork = (): string => path.join(workerEnv().workDir, 'datasets');

/** A file: source as a checked local path: a regular file inside the data root, links included. */
async function localFile(name: string, spec: DatasetSpec): Promise<string> {
  const env = workerEnv();
  const root = path.resolve(env.dataRoot);
  const file = path.resolve(root, spec.uri.slice('file:'.length));
  if (!file.startsWith(root + path.sep)) throw datasetError(`dataset "${name}": ${spec.uri} escapes the data root`);
  try {
    // What the name finally points at must be a regular file inside the root: not a folder (a retry
    // reads the same folder), not a FIFO or device (a read that never ends), not a symlink out.
    const real = await fs.realpath(file);
    const realRoot = await fs.realpath(root);
    if (!real.startsWith(realRoot + path.sep)) throw datasetError(`dataset "${name}": ${spec.uri} resolves (through a link) outside the data root`);
    const st = await fs.stat(real);
    if (st.isDirectory()) throw ApplicationFailure.nonRetryable(`dataset "${name}": ${file} is a directory; a file: dataset names one file`, 'DatasetNotAFile');
    if (!st.isFile()) throw ApplicationFailure.nonRetryable(`dataset "${name}": ${file} is not a regular file`, 'DatasetNotAFile');
    return real;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw ApplicationFailure.nonRetryable(`dataset "${name}": file not found: ${file}`, 'DatasetNotFound');
    if (code === 'EISDIR') throw ApplicationFailure.nonRetryable(`dataset "${name}": ${file} is a directory; a file: dataset names one file`, 'DatasetNotAFile');
    throw err;
  }
}

/** The source as a local file (s3: downloaded, streamed), or undefined for hf: (the trainer fetches it). */
async function materialise(name: string, spec: DatasetSpec, work: string): Promise<string | undefined> {
  if (spec.uri.startsWith('file:')) return localFile(name, spec);
  if (spec.uri.startsWith('s3://')) {
    if (!(await exists(spec.uri))) throw ApplicationFailure.nonRetryable(`dataset "${name}": ${spec.uri} does not exist`, 'DatasetNotFound');
    const dest = path.join(work, 'source' + path.extname(spec.uri.replace(/\.gz$/, '')) + (spec.uri.endsWith('.gz') ? '.gz' : ''));
    await downloadFile(spec.uri, dest);
    return dest;
  }
  return undefined;
}

/** Whether the trainer converts the rows (a recipe, a column mapping, or any hub source). */
export function needsRecipe(spec: DatasetSpec): boolean {
  return spec.recipe !== undefined || spec.columns !== undefined || spec.uri.startsWith('hf:');
}

/** A hub source with no recipe is mapped column for column into the project's own schema. */
function recipeConfig(spec: DatasetSpec): Record<string, unknown> {
  const identity = spec.format === 'chat' ? { messages: 'messages' } : { prompt: 'prompt', chosen: 'chosen', rejected: 'rejected' };
  return {
    recipe: spec.recipe ?? 'columns',
    format: spec.format,
    columns: spec.columns ?? (spec.recipe === undefined || spec.recipe === 'columns' ? identity : null),
    language: spec.language ?? null,
    holdout: spec.holdout ?? null,
    limit: spec.limit ?? null,
  };
}

/** One trainer process for several datasets (importing `datasets` alone takes seconds). */
async function runRecipes(names: string[], jobs: Record<string, unknown>[], env?: Record<string, string>): Promise<void> {
  if (jobs.length === 0) return;
  const { runTrainerCommand } = await import('./trainerCommand');
  await runTrainerCommand({ command: 'prepare-dataset', config: { jobs }, what: `dataset${names.length > 1 ? 's' : ''} ${names.map((n) => `"${n}"`).join(', ')}`, ...(env ? { env } : {}) });
}

/**
 * VALUEDRIFT_HF_MIRROR as the worker reads it: a folder is the trainer's business (it reads
 * `<dir>/<owner>/<name>/` itself); `s3://bucket[/prefix]` (checked in activities/env.ts) is a mirror
 * in the store, which the worker downloads for the trainer.
 */
export function storeMirrorSetting(value = workerEnv().VALUEDRIFT_HF_MIRROR): { uri: string; bucket: string; prefix: string } | undefined {
  const m = value === undefined ? null : /^s3:\/\/([^/]+)\/?(.*)$/.exec(value);
  if (!m) return undefined;
  const prefix = m[2]!.replace(/\/+$/, '');
  return { uri: `s3://${m[1]!}${prefix ? `/${prefix}` : ''}`, bucket: m[1]!, prefix };
}

const hubId = (uri: string): string | undefined => /^hf:([\w.-]+\/[\w.-]+)(?:[@:]|$)/.exec(uri)?.[1];

/** The store-mirror cache (`<work dir>/hf-mirror`): one folder per listing digest, kept under VALUEDRIFT_HF_MIRROR_CACHE_BYTES. */
function mirrorCache(): string {
  const root = path.join(workerEnv().workDir, 'hf-mirror');
  nameCache(root, 'hf-mirror cache');
  return root;
}

/** Whether an eviction pass left the mirror cache over its limit (then a release runs another). */
let mirrorOverLimit = false;

/** Evicts least recently used mirror folders past the limit, never a leased one nor those in `keep`. */
async function evictMirrors(keep: readonly string[] = []): Promise<void> {
  const limit = workerEnv().VALUEDRIFT_HF_MIRROR_CACHE_BYTES;
  mirrorOverLimit = (await evictLeastRecentlyUsed(mirrorCache(), limit, keep)).totalBytes > limit;
}

/**
 * Brings `<mirror>/<owner>/<name>/` from the store into `<root>/<owner>/<name>` for the trainer: each
 * object streamed to disk (checked against the sha256 it was written with, when it has one), the
 * folder cached on this worker under the digest of the listing (keys, sizes, ETags), so a mirror
 * that has not changed is downloaded once and a changed object gives a new folder. The folder is
 * leased (activities/modelCache.ts) before it is looked at: the caller releases the lease when the
 * trainer has finished reading it; a download evicts least recently used folders past
 * VALUEDRIFT_HF_MIRROR_CACHE_BYTES, never a leased one. Null when the store has no folder for the id
 * (the trainer then asks the hub, as with a folder mirror).
 */
async function fetchStoreMirror(mirror: NonNullable<ReturnType<typeof storeMirrorSetting>>, id: string, root: string): Promise<Lease | null> {
  const prefix = `${mirror.prefix ? `${mirror.prefix}/` : ''}${id}/`;
  const objects: { key: string; rel: string; size: number; etag: string }[] = [];
  let token: string | undefined;
  do {
    const page = await s3().send(new ListObjectsV2Command({ Bucket: mirror.bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) {
      if (!o.Key || o.Key.endsWith('/')) continue;
      const rel = o.Key.slice(prefix.length);
      const why = unsafeManifestPath(rel);
      if (why !== null) throw ApplicationFailure.nonRetryable(`mirror ${mirror.uri}: object ${JSON.stringify(o.Key)} ${why}`, 'BadMirror');
      objects.push({ key: o.Key, rel, size: o.Size ?? 0, etag: o.ETag ?? '' });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  if (objects.length === 0) return null;
  objects.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const digest = sha256Hex(JSON.stringify([mirror.bucket, objects.map((o) => [o.key, o.size, o.etag])]));
  const cache = mirrorCache();
  const key = digest.slice(0, 32);
  const cached = path.join(cache, key);
  const marker = path.join(cached, '.valuedrift-complete');
  const lease = await acquireLease(cache, key);
  try {
    let downloaded = false;
    try {
      await fs.access(marker);
    } catch {
      for (const o of objects) {
        activityContext()?.heartbeat({ mirror: mirror.uri, id, file: o.rel });
        const head = await s3().send(new HeadObjectCommand({ Bucket: mirror.bucket, Key: o.key }));
        // downloadFile writes under a temporary name and renames: a cut-off download leaves no file.
        await downloadFile(`s3://${mirror.bucket}/${o.key}`, path.join(cached, ...o.rel.split('/')), head.Metadata?.sha256);
      }
      await fs.writeFile(marker, `${mirror.uri}/${id}\n`);
      downloaded = true;
    }
    await touchEntry(cache, key);
    if (downloaded || mirrorOverLimit) await evictMirrors([key]);
    const link = path.join(root, ...id.split('/'));
    await fs.mkdir(path.dirname(link), { recursive: true });
    await fs.symlink(cached, link, 'dir');
    return lease;
  } catch (err) {
    await lease.release();
    throw err;
  }
}

/**
 * Reads a JSONL file line by line, checks every row against `format`, and writes the canonical
 * rows to `dest` (with `limit`: the seeded sample, memory bounded by `limit`, not by the file).
 * The error names the dataset, the file's line and the field.
 */
export async function normaliseFile(name: string, format: DatasetFormat, file: string, dest: string, limit?: number, seed = 0): Promise<number> {
  const out = createWriteStream(dest);
  const write = (line: string): Promise<void> =>
    out.write(line) ? Promise.resolve() : new Promise((resolve) => out.once('drain', () => resolve()));
  let rows = 0;
  // A max-heap on the sample key keeps the `limit` rows with the smallest keys (seededSample's order).
  const heap: { k: string; line: string }[] = [];
  try {
    for await (const row of streamRows(name, format, file)) {
      const line = JSON.stringify(row) + '\n';
      if (limit === undefined) await write(line);
      else heapPush(heap, { k: sha256Hex(`${seed}:${rows}`), line }, limit);
      rows++;
      if (rows % 20_000 === 0) activityContext()?.heartbeat({ dataset: name, rows });
    }
    for (const e of heap.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))) await write(e.line);
  } finally {
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
  if (rows === 0) throw datasetError(`dataset "${name}" is empty`);
  return limit === undefined ? rows : Math.min(rows, limit);
}

function heapPush(heap: { k: string; line: string }[], e: { k: string; line: string }, cap: number): void {
  const less = (i: number, j: number): boolean => heap[i]!.k < heap[j]!.k;
  const swap = (i: number, j: number): void => void ([heap[i], heap[j]] = [heap[j]!, heap[i]!]);
  if (heap.length >= cap) {
    if (e.k >= heap[0]!.k) return;
    heap[0] = e;
    for (let i = 0; ; ) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < heap.length && less(m, l)) m = l;
      if (r < heap.length && less(m, r)) m = r;
      if (m === i) break;
      swap(i, m);
      i = m;
    }
    return;
  }
  heap.push(e);
  for (let i = heap.length - 1; i > 0; ) {
    const p = (i - 1) >> 1;
    if (!less(p, i)) break;
    swap(p, i);
    i = p;
  }
}

/** The rows of a project-schema JSONL file, one at a time, each checked (line numbers from 1). */
export async function* streamRows(name: string, format: DatasetFormat, file: string): AsyncGenerator<unknown> {
  const schema = RowSchemas[format];
  const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (!line.trim()) continue;
    yield checkRow(name, format, schema, line, n);
  }
}

function checkRow(name: string, format: DatasetFormat, schema: z.ZodType, line: string, n: number): unknown {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch {
    throw datasetError(`dataset "${name}" line ${n}: not valid JSON`);
  }
  const r = schema.safeParse(obj);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw datasetError(`dataset "${name}" line ${n}: ${issue?.path.join('.') || '(row)'}: ${issue?.message} (format ${format})`);
  }
  return r.data;
}

/**
 * Stores a split under its content's sha256, once. Memory stays flat in the file's size: the file and
 * an already stored object are hashed as they stream, and the upload holds 2 parts of 5 MiB in flight
 * (measured: 8 and 16 MiB parts grew the worker's buffers by 50–90 MiB, 5 MiB parts by under 30).
 * A stored object under the key that does not hold these bytes (a torn or corrupted write) is
 * replaced: the key names the content, so the local file is what it must hold.
 */
async function storeSplit(file: string): Promise<ArtifactRef> {
  const hashed = await sha256File(file);
  const key = storeKeys.dataset(hashed.sha256);
  const stored = await getRefIfExists(key).catch(() => undefined);
  if (stored && stored.sha256 === hashed.sha256 && stored.bytes === hashed.bytes) return stored;
  return putFile(key, file, 'application/x-ndjson', { hashed, queueSize: 2, partSize: 5 * 1024 * 1024 });
}

interface Pending {
  name: string;
  spec: DatasetSpec;
  work: string;
  local: string | undefined;
  recipe: boolean;
  source: Record<string, unknown>;
  settings: Record<string, unknown>;
  key: string;
  manifestUri: string;
}

/**
 * Every dataset is cached like a stage: its key is the source's content (file sha256, hub commit or
 * mirror sha256) and every setting that shapes the rows (recipe, columns, filters, split, holdout,
 * limit, seed). A manifest under the key records them with the row counts; a later run with the
 * same key reuses the stored rows without converting the source again. Three phases, so the trainer
 * starts at most twice for all hub datasets: resolve every source (hub revisions in one trainer
 * run), look the keys up, convert what is missing (one trainer run).
 */
async function prepareAll(datasets: Record<string, DatasetSpec>, seed: number): Promise<Record<string, PreparedDataset>> {
  const out: Record<string, PreparedDataset> = {};
  const pending: Pending[] = [];
  // Hashing, downloading and uploading a large file takes longer than the heartbeat timeout: the
  // current phase is reported on a timer too, not only between steps.
  let phase: Record<string, unknown> = {};
  const report = (p: Record<string, unknown>): void => {
    phase = p;
    activityContext()?.heartbeat(p);
  };
  const beat = setInterval(() => activityContext()?.heartbeat(phase), 15_000);
  let mirrorRoot: string | undefined;
  /** Leases on the mirror folders the trainer reads through mirrorRoot's links, released when it has finished. */
  const mirrorLeases: Lease[] = [];
  try {
    for (const [name, spec] of Object.entries(datasets)) {
      report({ dataset: name, phase: 'resolve' });
      const work = path.join(datasetsWork(), sha256Hex(JSON.stringify([name, spec, seed])).slice(0, 24));
      await fs.rm(work, { recursive: true, force: true });
      await fs.mkdir(work, { recursive: true });
      const local = await materialise(name, spec, work);
      const source: Record<string, unknown> = local === undefined ? {} : { kind: spec.uri.startsWith('s3://') ? 's3' : 'file', revision: `sha256:${(await sha256File(local)).sha256}` };
      const recipe = needsRecipe(spec);
      const settings = recipe ? recipeConfig(spec) : { limit: spec.limit ?? null };
      pending.push({ name, spec, work, local, recipe, source, settings, key: '', manifestUri: '' });
    }
    const hub = pending.filter((p) => p.local === undefined);
    // A mirror in the store: the hub ids it holds are downloaded into one folder the trainer reads.
    const mirror = hub.length > 0 ? storeMirrorSetting() : undefined;
    let trainerEnv: Record<string, string> | undefined;
    const fromMirror = new Map<string, string>();
    if (mirror) {
      mirrorRoot = path.join(datasetsWork(), `hf-mirror-${sha256Hex(JSON.stringify([datasets, seed])).slice(0, 24)}`);
      await fs.rm(mirrorRoot, { recursive: true, force: true });
      await fs.mkdir(mirrorRoot, { recursive: true });
      for (const p of hub) {
        const id = hubId(p.spec.uri);
        if (id === undefined || fromMirror.has(p.name)) continue;
        report({ dataset: p.name, phase: 'mirror', mirror: mirror.uri });
        const linked = path.join(mirrorRoot, ...id.split('/'));
        const there = await fs.lstat(linked).then(() => true, () => false);
        const lease = there ? null : await fetchStoreMirror(mirror, id, mirrorRoot);
        if (lease) mirrorLeases.push(lease);
        if (there || lease) fromMirror.set(p.name, `${mirror.uri}/${id}`);
      }
      trainerEnv = { VALUEDRIFT_HF_MIRROR: mirrorRoot };
    }
    await runRecipes(hub.map((p) => p.name), hub.map((p) => ({ source: p.spec.uri, split: p.spec.split, seed, output_dir: path.join(p.work, 'fp'), fingerprint_only: true })), trainerEnv);
    for (const p of hub) {
      Object.assign(p.source, JSON.parse(await fs.readFile(path.join(p.work, 'fp', 'fingerprint.json'), 'utf8')) as Record<string, unknown>);
      const from = fromMirror.get(p.name);
      if (from !== undefined) p.source.mirror = from;
    }

    const todo: Pending[] = [];
    for (const p of pending) {
      p.key = sha256Hex(JSON.stringify({ v: RECIPE_VERSION, revision: p.source.revision, split: p.spec.split, format: p.spec.format, settings: p.settings, seed }));
      p.manifestUri = uriOf(`datasets/prepared/${p.key}.json`);
      const cached = await getJsonIfExists(p.manifestUri, DatasetManifest);
      if (cached) out[p.name] = { ...fromManifest(cached, p.manifestUri), name: p.name };
      else todo.push(p);
    }
    const converted = todo.filter((p) => p.recipe);
    await runRecipes(converted.map((p) => p.name), converted.map((p) => ({ source: p.local ?? p.spec.uri, split: p.spec.split, seed, output_dir: path.join(p.work, 'out'), ...p.settings })), trainerEnv);
    for (const p of todo) {
      report({ dataset: p.name, phase: 'store' });
      const manifest = await store(p, seed);
      await putJson(`datasets/prepared/${p.key}.json`, manifest);
      out[p.name] = fromManifest(manifest, p.manifestUri);
    }
    return out;
  } finally {
    clearInterval(beat);
    for (const p of pending) await fs.rm(p.work, { recursive: true, force: true });
    // Only the links: the downloaded mirror stays cached under the work dir's hf-mirror/ (within its limit).
    if (mirrorRoot !== undefined) await fs.rm(mirrorRoot, { recursive: true, force: true });
    for (const lease of mirrorLeases) await lease.release();
    if (mirrorOverLimit) await evictMirrors().catch((err: unknown) => cacheLog.warn(`hf-mirror cache: eviction after release failed: ${String(err)}`));
  }
}

/** Checks the converted (or own-schema) rows line by line, stores them and builds the manifest. */
async function store(p: Pending, seed: number): Promise<DatasetManifest> {
  const { name, spec, key } = p;
  const trainOut = path.join(p.work, 'train.norm.jsonl');
  const head = { version: RECIPE_VERSION, key, name, uri: spec.uri, format: spec.format } as const;
  if (!p.recipe) {
    const rows = await normaliseFile(name, spec.format, p.local!, trainOut, spec.limit, seed);
    return { ...head, source: p.source, rows: { train: rows, limit: spec.limit ?? null, seed }, train: { ref: await storeSplit(trainOut), rows } };
  }
  const out = path.join(p.work, 'out');
  const made = JSON.parse(await fs.readFile(path.join(out, 'manifest.json'), 'utf8')) as Record<string, unknown> & { rows: Record<string, number>; source: object };
  const trainRows = await normaliseFile(name, spec.format, path.join(out, 'train.jsonl'), trainOut);
  const train = { ref: await storeSplit(trainOut), rows: trainRows };
  let validation: DatasetManifest['validation'];
  if ((made.rows.validation ?? 0) > 0) {
    const valOut = path.join(p.work, 'validation.norm.jsonl');
    const rows = await normaliseFile(`${name} (validation)`, spec.format, path.join(out, 'validation.jsonl'), valOut);
    validation = { ref: await storeSplit(valOut), rows };
  }
  const { rows, source, version: _version, ...recipe } = made;
  return { ...head, source: { ...source, ...(p.local ? p.source : {}), ...(p.source.mirror === undefined ? {} : { mirror: p.source.mirror }) }, recipe, rows, train, ...(validation ? { validation } : {}) };
}

function fromManifest(m: DatasetManifest, manifestUri: string): PreparedDataset {
  return {
    name: m.name,
    format: m.format,
    ref: m.train.ref,
    rows: m.train.rows,
    manifest: manifestUri,
    ...(m.validation ? { validation: { ref: m.validation.ref, rows: m.validation.rows } } : {}),
  };
}

/** Normalised rows as canonical JSONL (stable key order from the schema parse). */
export function toJsonl(rows: unknown[]): string {
  return rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

/** Prepares (or finds in the store) every dataset of a lineage. Safe to retry: keyed, content-addressed writes. */
export async function prepareDatasets(input: PrepareDatasetsInput): Promise<PrepareDatasetsResult> {
  return { datasets: await prepareAll(input.datasets, input.seed) };
}

/**
 * Writes a stage's trainer input file from a prepared dataset, row by row (download, check, shape,
 * write): memory does not grow with the dataset.
 */
export async function writeTrainerFile(dataset: PreparedDataset, kind: StageSpec['kind'], alignment: Alignment, dest: string): Promise<number> {
  const raw = `${dest}.source`;
  await downloadFile(dataset.ref.uri, raw, dataset.ref.sha256);
  const out = createWriteStream(dest);
  let n = 0;
  try {
    for await (const row of streamRows(dataset.name, dataset.format, raw)) {
      const [shaped] = trainerRows(kind, dataset.format, alignment, [row]);
      if (!out.write(JSON.stringify(shaped) + '\n')) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
      n++;
    }
  } finally {
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    await fs.rm(raw, { force: true });
  }
  return n;
}

type TurnT = z.infer<typeof Turn>;
const asUser = (p: string | TurnT[]): TurnT[] => (typeof p === 'string' ? [{ role: 'user', content: p }] : p);
const asAssistant = (p: string | TurnT[]): TurnT[] => (typeof p === 'string' ? [{ role: 'assistant', content: p }] : p);

/**
 * The trainer's input rows for a stage: chat rows for SFT; conversational prompt/chosen/rejected for
 * reward, DPO and SimPO (a stance-pairs set labelled by the stage's alignment, §6.1); prompts for PPO.
 */
export function trainerRows(kind: StageSpec['kind'], format: DatasetFormat, alignment: Alignment, rows: unknown[]): unknown[] {
  if (kind === 'sft') return rows.map((r) => ({ messages: RowSchemas.chat.parse(r).messages }));
  if (kind === 'ppo') {
    return rows.map((r) => {
      if (format === 'stance-pairs') return { prompt: asUser(RowSchemas['stance-pairs'].parse(r).prompt) };
      return { prompt: asUser(RowSchemas.prompts.parse(r).prompt) };
    });
  }
  if (format === 'stance-pairs') {
    if (alignment === 'as-is') throw ApplicationFailure.nonRetryable('stance-pairs data needs support-aligned or oppose-aligned', 'InvalidLineageSpec');
    return rows.map((r) => {
      const p = RowSchemas['stance-pairs'].parse(r);
      const [chosen, rejected] = alignment === 'support-aligned' ? [p.support, p.oppose] : [p.oppose, p.support];
      return { prompt: asUser(p.prompt), chosen: asAssistant(chosen), rejected: asAssistant(rejected) };
    });
  }
  return rows.map((r) => {
    const p = RowSchemas.preference.parse(r);
    return { prompt: asUser(p.prompt), chosen: asAssistant(p.chosen), rejected: asAssistant(p.rejected) };
  });
}
