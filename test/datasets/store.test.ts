/**
 * How the dataset activity stores a prepared split, on the stack's real S3 server: under the sha256
 * of its bytes, once; a second preparation of the same bytes reuses the object (checked by hashing it
 * as it streams, not by reading it whole), and an object under that key that does not hold those
 * bytes (torn or corrupted) is replaced rather than trusted. No trainer: own-schema JSONL files.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { bucket, downloadFile, getRefIfExists, parseUri, s3, sha256Hex } from '../../activities/store';
import { loadStackEnv, restoreEnv } from '../support/workflowEnv';

let tmp: string;
const saved = { ...process.env };
const KEYS = ['VALUEDRIFT_WORK_DIR', 'VALUEDRIFT_DATA_ROOT'];

beforeAll(async () => {
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-dataset-store-'));
  await fs.mkdir(path.join(tmp, 'root'));
  Object.assign(process.env, { VALUEDRIFT_WORK_DIR: path.join(tmp, 'work'), VALUEDRIFT_DATA_ROOT: path.join(tmp, 'root') });
  resetWorkerEnv();
});
afterAll(async () => {
  restoreEnv(saved, KEYS);
  await fs.rm(tmp, { recursive: true, force: true });
});

/** A preference file of `n` rows whose bytes no other run writes (so its key starts empty). */
async function writePrefs(name: string, n: number, tag: string): Promise<void> {
  const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ prompt: `Question ${i} (${tag})?`, chosen: `Careful answer ${i}.`, rejected: `Curt ${i}.` }));
  await fs.writeFile(path.join(tmp, 'root', name), lines.join('\n') + '\n');
}

const prepare = (name: string, seed: number) =>
  prepareDatasets({ lineage: 'store-test', seed, datasets: { prefs: { uri: `file:${name}`, format: 'preference', split: 'train' } } });

describe('prepared splits in the store', () => {
  it('stores a split once under its sha256, reuses it, and replaces an object under its key that holds other bytes', async () => {
    const tag = `${process.pid}-${Date.now()}`;
    await writePrefs('prefs.jsonl', 2_000, tag);
    const first = (await prepare('prefs.jsonl', 1)).datasets.prefs!;
    expect(first.rows).toBe(2_000);
    const { key } = parseUri(first.ref.uri);
    expect(key).toBe(`datasets/${first.ref.sha256}.jsonl`);
    expect(await getRefIfExists(key)).toEqual(first.ref);
    const modified = async (): Promise<number> => (await s3().send(new HeadObjectCommand({ Bucket: bucket(), Key: key }))).LastModified!.getTime();

    // Same bytes under another manifest key (another seed): the stored object is reused, not written again.
    const before = await modified();
    await new Promise((r) => setTimeout(r, 1_100)); // S3 times have 1 s resolution
    const second = (await prepare('prefs.jsonl', 2)).datasets.prefs!;
    expect(second.manifest).not.toBe(first.manifest);
    expect(second.ref).toEqual(first.ref);
    expect(await modified()).toBe(before);

    // A torn write under the key (half the bytes, the whole file's sha256 in its metadata) is not trusted...
    const good = path.join(tmp, 'good.jsonl');
    await downloadFile(first.ref.uri, good, first.ref.sha256);
    const torn = (await fs.readFile(good)).subarray(0, Math.floor(first.ref.bytes / 2));
    await s3().send(new PutObjectCommand({ Bucket: bucket(), Key: key, Body: torn, Metadata: { sha256: first.ref.sha256 } }));
    await expect(getRefIfExists(key)).rejects.toThrow(/sha256 mismatch/);
    // ...and the next preparation of those bytes puts them back.
    const third = (await prepare('prefs.jsonl', 3)).datasets.prefs!;
    expect(third.ref).toEqual(first.ref);
    expect(await getRefIfExists(key)).toEqual(first.ref);
    await downloadFile(first.ref.uri, path.join(tmp, 'again.jsonl'), first.ref.sha256);

    // Other bytes recorded as their own (no metadata mismatch, a wrong body): replaced as well.
    const junk = Buffer.from('{"prompt":"x","chosen":"y","rejected":"z"}\n');
    await s3().send(new PutObjectCommand({ Bucket: bucket(), Key: key, Body: junk, Metadata: { sha256: sha256Hex(junk) } }));
    const fourth = (await prepare('prefs.jsonl', 4)).datasets.prefs!;
    expect(fourth.ref).toEqual(first.ref);
    expect(await getRefIfExists(key)).toEqual(first.ref);
  }, 120_000);
});
