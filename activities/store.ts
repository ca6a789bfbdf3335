/**
 * The artifact store: S3 through the AWS SDK, so AWS S3, R2, MinIO and the local server share one
 * code path. Endpoint, bucket, region and credentials come from worker env (credentials through the
 * SDK's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance roles).
 *
 * Directories (checkpoints) are uploaded file by file, multipart and in parallel, and a manifest with
 * every file's sha256 is written last: a directory without its manifest is never treated as complete.
 * The manifest is published with a conditional write (If-None-Match: *): the first writer of a
 * directory's manifest wins, and a later one (an attempt cut off from Temporal that is still
 * uploading) can never replace it.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  NoSuchKey,
  NotFound,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { checkpointDirUri } from '../common/config';
import type { ArtifactRef } from '../common/contracts';
import { type WorkerEnv, workerEnv } from './env';

let client: S3Client | undefined;

/** The S3 settings a client needs; the worker's and the CLI's settings modules both carry them. */
export type S3Settings = Pick<WorkerEnv, 'VALUEDRIFT_S3_REGION' | 'VALUEDRIFT_S3_ENDPOINT' | 'VALUEDRIFT_S3_FORCE_PATH_STYLE'>;

/** An S3 client for the given settings (the CLI makes its own from worker/cliSettings.ts). */
export function s3ClientFor(settings: S3Settings): S3Client {
  return new S3Client({
    region: settings.VALUEDRIFT_S3_REGION,
    endpoint: settings.VALUEDRIFT_S3_ENDPOINT,
    forcePathStyle: settings.VALUEDRIFT_S3_FORCE_PATH_STYLE === 'true',
    // The SDK's own retries cover throttling and transient 5xx on each request.
    maxAttempts: 5,
  });
}

export function s3(): S3Client {
  client ??= s3ClientFor(workerEnv());
  return client;
}

export function bucket(): string {
  return workerEnv().VALUEDRIFT_S3_BUCKET;
}

export function uriOf(key: string, b = bucket()): string {
  return `s3://${b}/${key}`;
}

export function parseUri(uri: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!m || !m[1] || !m[2]) throw new Error(`not an s3:// URI: ${uri}`);
  return { bucket: m[1], key: m[2] };
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The sha256 and length of a stream, read chunk by chunk (memory: one chunk). */
async function sha256Stream(src: AsyncIterable<Uint8Array>): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of src) {
    h.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: h.digest('hex'), bytes };
}

export function sha256File(file: string): Promise<{ sha256: string; bytes: number }> {
  return sha256Stream(createReadStream(file));
}

function isMissing(err: unknown): boolean {
  if (err instanceof NoSuchKey || err instanceof NotFound) return true;
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}

export async function exists(uri: string): Promise<boolean> {
  const { bucket: b, key } = parseUri(uri);
  try {
    await s3().send(new HeadObjectCommand({ Bucket: b, Key: key }));
    return true;
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
}

export async function putBytes(key: string, body: string | Uint8Array, contentType = 'application/octet-stream'): Promise<ArtifactRef> {
  const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
  const sha256 = sha256Hex(buf);
  await s3().send(
    new PutObjectCommand({ Bucket: bucket(), Key: key, Body: buf, ContentType: contentType, Metadata: { sha256 } }),
  );
  return { uri: uriOf(key), sha256, bytes: buf.length };
}

/** Whether an S3 error is a refused precondition (412: the key already exists under If-None-Match: *). */
function isPreconditionFailed(err: unknown): boolean {
  const e = err as { name?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'PreconditionFailed' || e?.Code === 'PreconditionFailed' || e?.$metadata?.httpStatusCode === 412;
}

/** 409 ConditionalRequestConflict: another conditional write to the key was in flight (AWS: retry it). */
function isConditionalConflict(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'ConditionalRequestConflict' || e?.$metadata?.httpStatusCode === 409;
}

/**
 * Writes an object only if its key holds none (PutObject with If-None-Match: *, atomic on the
 * server: AWS S3, R2, MinIO and the local server). Its ref when written; undefined when the key
 * already held an object, which is left as it was.
 */
export async function putBytesIfAbsent(key: string, body: string | Uint8Array, contentType = 'application/octet-stream', c: S3Client = s3()): Promise<ArtifactRef | undefined> {
  const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body);
  const sha256 = sha256Hex(buf);
  for (let conflicts = 0; ; conflicts++) {
    try {
      await c.send(new PutObjectCommand({ Bucket: bucket(), Key: key, Body: buf, ContentType: contentType, Metadata: { sha256 }, IfNoneMatch: '*' }));
      return { uri: uriOf(key), sha256, bytes: buf.length };
    } catch (err) {
      if (isPreconditionFailed(err)) return undefined;
      if (isConditionalConflict(err) && conflicts < 5) {
        await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** conflicts));
        continue;
      }
      throw err;
    }
  }
}

export async function putJson(key: string, value: unknown): Promise<ArtifactRef> {
  return putBytes(key, JSON.stringify(value, null, 2) + '\n', 'application/json');
}

/**
 * Streams a file up in parts (lib-storage), several parts in flight: about (queueSize + 1) × partSize
 * of memory, whatever the file's size. `hashed`: the file's sha256 and size when the caller has them.
 */
export async function putFile(
  key: string,
  file: string,
  contentType = 'application/octet-stream',
  opts: { queueSize?: number; partSize?: number; hashed?: { sha256: string; bytes: number } } = {},
): Promise<ArtifactRef> {
  const { sha256, bytes } = opts.hashed ?? (await sha256File(file));
  const upload = new Upload({
    client: s3(),
    params: { Bucket: bucket(), Key: key, Body: createReadStream(file), ContentType: contentType, Metadata: { sha256 } },
    queueSize: opts.queueSize ?? 4,
    // S3 allows 10,000 parts: larger parts only for a file that needs them.
    partSize: Math.max(opts.partSize ?? 16 * 1024 * 1024, Math.ceil(bytes / 9_000)),
    leavePartsOnError: false,
  });
  await upload.done();
  return { uri: uriOf(key), sha256, bytes };
}

export async function getBytes(uri: string, c: S3Client = s3()): Promise<Buffer> {
  const { bucket: b, key } = parseUri(uri);
  const out = await c.send(new GetObjectCommand({ Bucket: b, Key: key }));
  const body = out.Body as Readable | undefined;
  if (!body) throw new Error(`empty body for ${uri}`);
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

/** Reads an object and checks it against the ref's sha256 (a corrupted artifact is never used). */
export async function getVerified(ref: ArtifactRef, c: S3Client = s3()): Promise<Buffer> {
  const buf = await getBytes(ref.uri, c);
  const got = sha256Hex(buf);
  if (got !== ref.sha256) throw new Error(`sha256 mismatch for ${ref.uri}: expected ${ref.sha256}, got ${got}`);
  return buf;
}

/**
 * Reads a content-addressed object that may already exist, verifying it against the sha256 recorded
 * when it was written (object metadata). Undefined when absent; a mismatch is an error, never data.
 */
export async function getRefIfExists(key: string): Promise<ArtifactRef | undefined> {
  const uri = uriOf(key);
  // Hashed as it streams in (an object of any size costs a chunk of memory, not its length).
  let out;
  try {
    out = await s3().send(new GetObjectCommand({ Bucket: bucket(), Key: key }));
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw err;
  }
  const body = out.Body as Readable | undefined;
  if (!body) throw new Error(`empty body for ${uri}`);
  const { sha256, bytes } = await sha256Stream(body);
  const recorded = out.Metadata?.sha256;
  if (recorded !== undefined && recorded !== sha256) throw new Error(`sha256 mismatch for ${uri}: written as ${recorded}, reads as ${sha256}`);
  return { uri, sha256, bytes };
}

/**
 * Writes a content-addressed object once: when the key already holds an object, that object is kept
 * and its ref returned (its key names the same inputs; replacing it could break a record that
 * references its sha256).
 */
export async function putBytesOnce(key: string, body: string | Uint8Array, contentType = 'application/octet-stream'): Promise<ArtifactRef> {
  return (await getRefIfExists(key)) ?? putBytes(key, body, contentType);
}

export async function putFileOnce(key: string, file: string, contentType = 'application/octet-stream'): Promise<ArtifactRef> {
  return (await getRefIfExists(key)) ?? putFile(key, file, contentType);
}

export async function getJson<T>(uri: string, schema: z.ZodType<T>): Promise<T> {
  return schema.parse(JSON.parse((await getBytes(uri)).toString('utf8')));
}

/** Returns undefined when the object does not exist. */
export async function getJsonIfExists<T>(uri: string, schema: z.ZodType<T>): Promise<T | undefined> {
  try {
    return await getJson(uri, schema);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw err;
  }
}

export async function downloadFile(uri: string, dest: string, expectedSha256?: string): Promise<void> {
  const { bucket: b, key } = parseUri(uri);
  const out = await s3().send(new GetObjectCommand({ Bucket: b, Key: key }));
  const body = out.Body as Readable | undefined;
  if (!body) throw new Error(`empty body for ${uri}`);
  await fs.mkdir(path.dirname(dest), { recursive: true });
  // A name of its own per download: concurrent downloads of one file (two jobs fetching the same
  // checkpoint) each write their own temp file and rename it into place atomically; identical
  // content, so whichever rename lands last changes nothing.
  const tmp = `${dest}.part-${process.pid}-${randomUUID()}`;
  const h = createHash('sha256');
  const fh = await fs.open(tmp, 'wx');
  try {
    for await (const c of body) {
      const chunk = Buffer.from(c as Uint8Array);
      h.update(chunk);
      await fh.write(chunk);
    }
  } catch (err) {
    await fh.close();
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  const got = h.digest('hex');
  if (expectedSha256 && got !== expectedSha256) {
    await fs.rm(tmp, { force: true });
    throw new Error(`sha256 mismatch downloading ${uri}: expected ${expectedSha256}, got ${got}`);
  }
  await fs.rename(tmp, dest);
}

export async function listKeys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const out = await s3().send(new ListObjectsV2Command({ Bucket: bucket(), Prefix: prefix, ContinuationToken: token }));
    for (const o of out.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

// ---- directories with manifests ----

/**
 * Why a manifest file path is unsafe to join under a download folder, or null. A path is relative,
 * '/'-separated, with no empty, '.' or '..' segment, no backslash (a separator on Windows, and a way
 * to hide '..\\' from a '/'-only check), no NUL or other control character, no drive letter and no
 * percent-encoding (nothing downstream decodes it, so an encoded form is refused rather than trusted).
 */
export function unsafeManifestPath(p: string): string | null {
  if (p.length === 0) return 'is empty';
  if (p.length > 1024) return 'is longer than 1024 characters';
  if (p.startsWith('/')) return 'is absolute';
  if (p.includes('\\')) return 'contains a backslash';
  if (/^[A-Za-z]:/.test(p)) return 'starts with a drive letter';
  if (/[\u0000-\u001f\u007f]/.test(p)) return 'contains a control character';
  if (p.includes('%')) return 'contains a percent sign (encoded names are not accepted)';
  for (const seg of p.split('/')) {
    if (seg === '') return 'has an empty segment';
    if (seg === '.' || seg === '..') return `has a '${seg}' segment`;
  }
  return null;
}

/** A manifest file path: checked before anything is joined with it (a hostile bucket cannot write outside the folder). */
export const ManifestPath = z.string().superRefine((p, ctx) => {
  const why = unsafeManifestPath(p);
  if (why !== null) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `manifest path ${JSON.stringify(p.slice(0, 200))} ${why}` });
});

export const Manifest = z.object({
  kind: z.literal('valuedrift.dir/v1'),
  /**
   * The folder, relative to the manifest's, that holds the files (`attempt-3`: the training attempt
   * that uploaded them); absent: the manifest's own folder.
   */
  base: ManifestPath.optional(),
  files: z.array(z.object({ path: ManifestPath, sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: z.number().int().nonnegative() })),
});
export type Manifest = z.infer<typeof Manifest>;
export const MANIFEST_NAME = 'manifest.json';

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) out.push(path.relative(dir, p));
    }
  };
  await walk(dir);
  return out.sort();
}

async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
  return results;
}

/** The published manifest at `manifestKey` as an upload result. */
function published(manifestKey: string, body: Buffer): { manifest: ArtifactRef; reused: true; files: number; bytes: number } {
  const m = Manifest.parse(JSON.parse(body.toString('utf8')));
  return {
    manifest: { uri: uriOf(manifestKey), sha256: sha256Hex(body), bytes: body.length },
    reused: true,
    files: m.files.length,
    bytes: m.files.reduce((a, f) => a + f.bytes, 0),
  };
}

/**
 * Uploads a directory under `prefix` and publishes its manifest last, with a conditional write:
 * whoever publishes first owns the directory. Safe to repeat: if a manifest is already there the
 * directory is complete and nothing is uploaded; if another writer publishes while this one uploads,
 * that manifest is kept and returned (`reused`), never replaced.
 *
 * `attempt` (one path segment, e.g. `attempt-3`) puts the files under `prefix/<attempt>/` and records
 * it as the manifest's `base`: writers that may overlap (a training attempt cut off from Temporal and
 * its retry) then never write over each other's files, and a losing writer's files, referenced by no
 * manifest, are removed. Without it the files go under `prefix/` and the manifest is deterministic
 * (sorted, no timestamps), so its sha256 is the directory's content hash.
 */
export async function uploadDir(
  prefix: string,
  dir: string,
  opts: { concurrency?: number; onFile?: (rel: string, bytes: number) => void | Promise<void>; attempt?: string } = {},
): Promise<{ manifest: ArtifactRef; reused: boolean; files: number; bytes: number }> {
  if (opts.attempt !== undefined && (unsafeManifestPath(opts.attempt) !== null || opts.attempt.includes('/') || opts.attempt === MANIFEST_NAME)) {
    throw new Error(`uploadDir: attempt ${JSON.stringify(opts.attempt)} is not a single folder name`);
  }
  const manifestKey = `${prefix}/${MANIFEST_NAME}`;
  const existing = await getBytesIfExists(uriOf(manifestKey));
  if (existing) return published(manifestKey, existing);
  const base = opts.attempt;
  const filesPrefix = base === undefined ? prefix : `${prefix}/${base}`;
  const rels = await listFiles(dir);
  const files = await mapLimit(rels, opts.concurrency ?? 4, async (rel) => {
    const ref = await putFile(`${filesPrefix}/${rel.split(path.sep).join('/')}`, path.join(dir, rel));
    await opts.onFile?.(rel, ref.bytes);
    return { path: rel.split(path.sep).join('/'), sha256: ref.sha256, bytes: ref.bytes };
  });
  const manifest: Manifest = { kind: 'valuedrift.dir/v1', ...(base === undefined ? {} : { base }), files };
  const ref = await putBytesIfAbsent(manifestKey, JSON.stringify(manifest, null, 2) + '\n', 'application/json');
  if (ref) return { manifest: ref, reused: false, files: files.length, bytes: files.reduce((a, f) => a + f.bytes, 0) };
  // Another writer published first: its manifest is the directory. This writer's own files are
  // referenced by nothing (best effort: a leftover only costs space).
  if (base !== undefined) {
    await mapLimit(files, opts.concurrency ?? 4, (f) => s3().send(new DeleteObjectCommand({ Bucket: bucket(), Key: `${filesPrefix}/${f.path}` })).catch(() => undefined));
  }
  const winner = await getBytesIfExists(uriOf(manifestKey));
  if (!winner) throw new Error(`${uriOf(manifestKey)}: the conditional publish was refused but no manifest is there`);
  return published(manifestKey, winner);
}

/** The object's bytes, or undefined when it does not exist. */
export async function getBytesIfExists(uri: string): Promise<Buffer | undefined> {
  try {
    return await getBytes(uri);
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw err;
  }
}

/**
 * Downloads a directory described by a manifest, verifying each file's sha256. A marker file records
 * a complete download so a second call is free; `filter` skips files (e.g. optimizer state when only
 * generating).
 */
export async function downloadDir(
  manifest: ArtifactRef,
  dest: string,
  opts: { filter?: (rel: string) => boolean; concurrency?: number } = {},
): Promise<{ files: number; bytes: number; reused: boolean }> {
  const marker = path.join(dest, `.valuedrift-complete-${manifest.sha256.slice(0, 16)}${opts.filter ? '-partial' : ''}`);
  const parsed = Manifest.safeParse(JSON.parse((await getVerified(manifest)).toString('utf8')));
  if (!parsed.success) {
    // Its sha256 matched: the stored manifest itself is hostile or broken, and a retry reads the same.
    throw ApplicationFailure.nonRetryable(`manifest ${manifest.uri} refused: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, 'BadManifest');
  }
  const m = parsed.data;
  const wanted = m.files.filter((f) => !opts.filter || opts.filter(f.path));
  const bytes = wanted.reduce((a, f) => a + f.bytes, 0);
  try {
    await fs.access(marker);
    return { files: wanted.length, bytes, reused: true };
  } catch {
    /* not downloaded yet */
  }
  const base = m.base === undefined ? checkpointDirUri(manifest.uri) : `${checkpointDirUri(manifest.uri)}/${m.base}`;
  const root = path.resolve(dest);
  await mapLimit(wanted, opts.concurrency ?? 4, async (f) => {
    const target = path.resolve(root, ...f.path.split('/'));
    // Belt and braces behind the schema: nothing is written outside `dest`.
    if (!target.startsWith(root + path.sep)) throw ApplicationFailure.nonRetryable(`manifest ${manifest.uri}: ${f.path} resolves outside ${root}`, 'BadManifest');
    await downloadFile(`${base}/${f.path}`, target, f.sha256);
  });
  // The marker too is written under a name of its own and renamed: concurrent downloads all finish.
  const markerTmp = `${marker}.part-${process.pid}-${randomUUID()}`;
  await fs.writeFile(markerTmp, manifest.uri + '\n');
  await fs.rename(markerTmp, marker);
  return { files: wanted.length, bytes, reused: false };
}
