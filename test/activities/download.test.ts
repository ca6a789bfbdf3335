/**
 * Checkpoint downloads against the local stack's S3 server:
 * - 30 concurrent downloads of one checkpoint into one model folder all succeed (each file is written
 *   under a temp name of its own and renamed into place);
 * - a manifest whose file paths leave the folder ('..', absolute, backslashes, encoded forms) is
 *   refused before anything is written, non-retryably.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadDir, Manifest, putBytes, putJson, sha256Hex, unsafeManifestPath, uploadDir } from '../../activities/store';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

let tmp: string;

beforeAll(async () => {
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-download-'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('manifest paths', () => {
  const bad = [
    '../x',
    'a/../../x',
    '..',
    '.',
    'a/./b',
    '/etc/passwd',
    '//server/share',
    '..\\..\\x',
    'a\\b',
    'C:/Windows/x',
    'c:x',
    '%2e%2e/x',
    '..%2fx',
    'a//b',
    'a/',
    '',
    'a\u0000b',
    'line\nbreak',
    'x'.repeat(1025),
  ];
  for (const p of bad) {
    it(`refuses ${JSON.stringify(p.slice(0, 40))}`, () => {
      expect(unsafeManifestPath(p)).not.toBeNull();
      expect(Manifest.safeParse({ kind: 'valuedrift.dir/v1', files: [{ path: p, sha256: 'a'.repeat(64), bytes: 1 }] }).success).toBe(false);
    });
  }
  for (const p of ['model.safetensors', 'checkpoint-6/config.json', '.hidden/a..b', 'tokenizer/vocab.json']) {
    it(`accepts ${p}`, () => {
      expect(unsafeManifestPath(p)).toBeNull();
    });
  }
});

describe('downloadDir against the store', () => {
  it('30 concurrent downloads of one checkpoint into one folder all succeed and verify', async () => {
    const src = path.join(tmp, 'src');
    await fs.mkdir(path.join(src, 'sub'), { recursive: true });
    const files: Record<string, string> = {
      'config.json': JSON.stringify({ model_type: 'llama' }),
      'model.safetensors': 'w'.repeat(256 * 1024),
      'sub/tokenizer.json': 't'.repeat(10_000),
    };
    for (const [rel, body] of Object.entries(files)) await fs.writeFile(path.join(src, rel), body);
    const { manifest } = await uploadDir(`test/download/${uniqueName('concurrent')}`, src);

    const dest = path.join(tmp, 'models', 'same');
    const results = await Promise.allSettled(Array.from({ length: 30 }, () => downloadDir(manifest, dest)));
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed.map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    for (const [rel, body] of Object.entries(files)) expect(sha256Hex(await fs.readFile(path.join(dest, rel)))).toBe(sha256Hex(body));
    // No temp file is left behind.
    const left = await fs.readdir(dest, { recursive: true });
    expect(left.filter((n) => String(n).includes('.part-'))).toEqual([]);
    // A later call is served by the completion marker.
    expect((await downloadDir(manifest, dest)).reused).toBe(true);
  }, 120_000);

  for (const hostile of ['../../escaped.txt', '/tmp/vd-escaped-absolute.txt', '..\\..\\escaped.txt', '%2e%2e/escaped.txt']) {
    it(`refuses a stored manifest naming ${hostile}, writing nothing`, async () => {
      const prefix = `test/download/${uniqueName('hostile')}`;
      const payload = 'owned';
      await putBytes(`${prefix}/ok.txt`, payload);
      const manifest = await putJson(`${prefix}/manifest.json`, {
        kind: 'valuedrift.dir/v1',
        files: [
          { path: 'ok.txt', sha256: sha256Hex(payload), bytes: payload.length },
          { path: hostile, sha256: sha256Hex(payload), bytes: payload.length },
        ],
      });
      const root = path.join(tmp, 'hostile', uniqueName('d'));
      const dest = path.join(root, 'a', 'b', 'model');
      const err = await downloadDir(manifest, dest).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ApplicationFailure);
      expect((err as ApplicationFailure).nonRetryable).toBe(true);
      expect((err as ApplicationFailure).type).toBe('BadManifest');
      expect((err as ApplicationFailure).message).toContain(JSON.stringify(hostile));
      // Nothing was written: not the good file, not the hostile one, anywhere.
      await expect(fs.access(root)).rejects.toThrow();
      await expect(fs.access('/tmp/vd-escaped-absolute.txt')).rejects.toThrow();
    });
  }
});
