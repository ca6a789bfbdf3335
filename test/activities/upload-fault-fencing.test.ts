/**
 * Fencing between training attempts, against the local S3 server: a checkpoint's manifest is
 * published with a conditional write (If-None-Match: *), so a second writer (an attempt cut off from
 * Temporal that goes on uploading while its retry runs) can neither replace nor duplicate a
 * published checkpoint, and its files, under its own attempt folder, never touch the first's.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resetWorkerEnv } from '../../activities/env';
import { bucket, downloadDir, getBytes, getBytesIfExists, listKeys, Manifest, putBytesIfAbsent, s3, uploadDir, uriOf } from '../../activities/store';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

let tmp: string;
beforeAll(async () => {
  loadStackEnv();
  resetWorkerEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-fencing-'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function folder(name: string, files: Record<string, string>): Promise<string> {
  const dir = path.join(tmp, name);
  for (const [rel, body] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await fs.writeFile(path.join(dir, rel), body);
  }
  return dir;
}

async function etag(key: string): Promise<string | undefined> {
  return (await s3().send(new HeadObjectCommand({ Bucket: bucket(), Key: key }))).ETag;
}

describe('conditional publish on the local S3 server', () => {
  it('writes a key that holds nothing, and refuses (leaving it intact) once it holds something', async () => {
    const key = `test/fencing/${uniqueName('once')}/manifest.json`;
    const first = await putBytesIfAbsent(key, 'first');
    expect(first?.uri).toBe(uriOf(key));
    expect(await putBytesIfAbsent(key, 'second')).toBeUndefined();
    expect((await getBytes(uriOf(key))).toString()).toBe('first');
  });

  it('lets exactly one of several concurrent writers win', async () => {
    const key = `test/fencing/${uniqueName('race')}/manifest.json`;
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => putBytesIfAbsent(key, `writer ${i}`)));
    const winners = results.flatMap((r, i) => (r ? [i] : []));
    expect(winners).toHaveLength(1);
    expect((await getBytes(uriOf(key))).toString()).toBe(`writer ${winners[0]}`);
  });
});

describe('a checkpoint written by two attempts', () => {
  it('keeps the first published one: a late manifest is refused, and its writer adopts the published checkpoint', async () => {
    const prefix = `test/fencing/${uniqueName('ckpt')}/step-4`;
    const manifestKey = `${prefix}/manifest.json`;
    const retry = await folder('retry', { 'model.safetensors': 'weights of the retry', 'trainer_state.json': '{"global_step":4,"by":"retry"}' });
    const stale = await folder('stale', { 'model.safetensors': 'weights of the stale attempt', 'trainer_state.json': '{"global_step":4,"by":"stale"}' });

    // The stale attempt starts uploading before anything is published. After its first file is up,
    // the retry uploads and publishes the same step; then the stale attempt's last file and its
    // manifest follow.
    let retryResult: Awaited<ReturnType<typeof uploadDir>> | undefined;
    const staleResult = await uploadDir(prefix, stale, {
      attempt: 'attempt-1',
      concurrency: 1,
      onFile: async () => {
        retryResult ??= await uploadDir(prefix, retry, { attempt: 'attempt-2' });
      },
    });
    expect(retryResult?.reused).toBe(false);
    const winnerEtag = await etag(manifestKey);
    const winnerBody = await getBytes(uriOf(manifestKey));
    // The stale writer's publish was refused; it returns the published checkpoint, not its own.
    expect(staleResult.reused).toBe(true);
    expect(staleResult.manifest).toEqual(retryResult?.manifest);
    const m = Manifest.parse(JSON.parse(winnerBody.toString()));
    expect(m.base).toBe('attempt-2');
    const out = path.join(tmp, 'downloaded');
    await downloadDir(retryResult!.manifest, out);
    expect(await fs.readFile(path.join(out, 'model.safetensors'), 'utf8')).toBe('weights of the retry');
    expect(await fs.readFile(path.join(out, 'trainer_state.json'), 'utf8')).toBe('{"global_step":4,"by":"retry"}');
    // The losing writer's files, referenced by no manifest, were removed; the winner's are untouched.
    const keys = (await listKeys(`${prefix}/`)).map((k) => k.slice(prefix.length + 1)).sort();
    expect(keys).toEqual(['attempt-2/model.safetensors', 'attempt-2/trainer_state.json', 'manifest.json']);

    // A stale manifest written straight at the published key (the last step of any late writer) is
    // refused as well, and the published one stays byte for byte.
    const staleManifest = JSON.stringify({ kind: 'valuedrift.dir/v1', base: 'attempt-1', files: [] });
    expect(await putBytesIfAbsent(manifestKey, staleManifest, 'application/json')).toBeUndefined();
    expect(await etag(manifestKey)).toBe(winnerEtag);
    expect((await getBytes(uriOf(manifestKey))).equals(winnerBody)).toBe(true);

    // A writer that starts after the publish uploads nothing at all.
    let uploaded = 0;
    const later = await uploadDir(prefix, stale, { attempt: 'attempt-3', onFile: () => void uploaded++ });
    expect(later.reused).toBe(true);
    expect(uploaded).toBe(0);
    expect(await getBytesIfExists(uriOf(`${prefix}/attempt-3/model.safetensors`))).toBeUndefined();
  });

  it('refuses a manifest whose base leaves its folder', () => {
    for (const base of ['..', '../other', '/abs', 'a//b']) {
      expect(Manifest.safeParse({ kind: 'valuedrift.dir/v1', base, files: [] }).success).toBe(false);
    }
  });
});
