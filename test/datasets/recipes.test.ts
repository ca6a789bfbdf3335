/**
 * The dataset activity on the real stack (local S3 server, the real trainer's `prepare-dataset`):
 * the paper spec's five hub datasets, their `hf:` sources pointed at raw-shaped local mirrors through
 * VALUEDRIFT_HF_MIRROR, are prepared, stored content-addressed with a manifest, reused from the
 * store on a second run; a malformed raw file fails non-retryably naming the file, row and field.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetManifest, prepareDatasets, streamRows } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { bucket, downloadFile, getJson, parseUri, s3 } from '../../activities/store';
import { LineageSpec, type DatasetSpec } from '../../common/spec';
import { loadStackEnv } from '../support/workflowEnv';

const REPO = path.resolve(__dirname, '..', '..');
let tmp: string;
const saved = { ...process.env };

beforeAll(async () => {
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-recipes-'));
  const mirror = path.join(tmp, 'mirror');
  execFileSync(path.join(REPO, '.venv', 'bin', 'python'), [path.join(REPO, 'trainer', 'tests', 'fixtures', 'hub_mirror.py'), mirror]);
  execFileSync(path.join(REPO, '.venv', 'bin', 'python'), [path.join(REPO, 'trainer', 'tests', 'fixtures', 'prism_mirror.py'), mirror]);
  await fs.mkdir(path.join(tmp, 'root'));
  await fs.writeFile(path.join(tmp, 'root', 'alpaca-bad.jsonl'), '{"instruction":"a","input":"","output":"b"}\n{"instruction":"a","input":""}\n');
  Object.assign(process.env, {
    VALUEDRIFT_HF_MIRROR: mirror,
    HF_HUB_OFFLINE: '1',
    VALUEDRIFT_WORK_DIR: path.join(tmp, 'work'),
    VALUEDRIFT_DATA_ROOT: path.join(tmp, 'root'),
  });
  resetWorkerEnv();
});
afterAll(async () => {
  for (const k of ['VALUEDRIFT_HF_MIRROR', 'HF_HUB_OFFLINE', 'VALUEDRIFT_WORK_DIR', 'VALUEDRIFT_DATA_ROOT']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  resetWorkerEnv();
  await fs.rm(tmp, { recursive: true, force: true });
});

async function rowsOf(uri: string, sha: string, format: DatasetSpec['format']): Promise<unknown[]> {
  const f = path.join(tmp, `dl-${sha}`);
  await downloadFile(uri, f, sha);
  const out: unknown[] = [];
  for await (const r of streamRows('x', format, f)) out.push(r);
  return out;
}

describe('dataset recipes through the activity', () => {
  it("prepares the paper spec's hub datasets from raw-shaped mirrors and reuses them from the store", async () => {
    const paper = LineageSpec.parse(JSON.parse(await fs.readFile(path.join(REPO, 'specs', 'paper', 'paper-llama3-3b.json'), 'utf8')));
    const hub = Object.fromEntries(Object.entries(paper.datasets).filter(([, d]) => 'uri' in d && d.uri.startsWith('hf:'))) as Record<string, DatasetSpec>;
    expect(Object.keys(hub).sort()).toEqual(['alpaca', 'hh-rlhf', 'prism', 'ultrafeedback', 'wildchat']);
    const seed = Date.now() % 1_000_000; // a key of its own: the first run must do the work
    const { datasets } = await prepareDatasets({ lineage: 'recipes-test', datasets: hub, seed });

    expect([datasets.wildchat!.rows, datasets.wildchat!.validation?.rows]).toEqual([27, 3]); // 30 English of 40, 90/10
    expect([datasets.alpaca!.rows, datasets.alpaca!.validation?.rows]).toEqual([46, 6]);
    expect(datasets.ultrafeedback!.rows).toBe(20);
    expect(datasets['hh-rlhf']!.rows).toBe(50); // limit 60,908 > the fixture's 50 train pairs; test split left out
    expect(datasets.prism!.rows).toBe(7); // the value- and controversy-guided openings of 10 conversations

    const m = await getJson(datasets.wildchat!.manifest!, DatasetManifest);
    expect(m.source).toMatchObject({ kind: 'mirror', split: 'train' });
    expect(String(m.source.revision)).toMatch(/^mirror-sha256:[0-9a-f]{64}$/);
    expect(m.recipe).toMatchObject({ recipe: 'wildchat', filters: { language: 'English' }, holdout: 0.1, seed });
    expect(m.rows).toMatchObject({ read: 40, filtered_out: 10, train: 27, validation: 3 });

    const hh = (await rowsOf(datasets['hh-rlhf']!.ref.uri, datasets['hh-rlhf']!.ref.sha256, 'preference')) as { prompt: { role: string }[] }[];
    expect(hh.some((r) => r.prompt.length === 5 && r.prompt.at(-1)!.role === 'user')).toBe(true);
    const wc = (await rowsOf(datasets.wildchat!.ref.uri, datasets.wildchat!.ref.sha256, 'chat')) as { messages: object[] }[];
    expect(wc).toHaveLength(27);

    // Same inputs → the stored manifest and rows, without converting again (the manifest is not rewritten).
    const written = async (): Promise<number> => {
      const head = await s3().send(new HeadObjectCommand({ Bucket: bucket(), Key: parseUri(datasets.wildchat!.manifest!).key }));
      return head.LastModified?.getTime() ?? 0;
    };
    const before = await written();
    await new Promise((r) => setTimeout(r, 1_100)); // S3 times have 1 s resolution
    const again = await prepareDatasets({ lineage: 'other-lineage', datasets: { wildchat: hub.wildchat! }, seed });
    expect(again.datasets.wildchat).toEqual(datasets.wildchat);
    expect(await written()).toBe(before);
    const other = await prepareDatasets({ lineage: 'recipes-test', datasets: { wildchat: hub.wildchat! }, seed: seed + 1 });
    expect(other.datasets.wildchat!.manifest).not.toBe(datasets.wildchat!.manifest);
  }, 300_000);

  it('a raw row missing a column fails non-retryably, naming the file, row and field', async () => {
    const err = await prepareDatasets({
      lineage: 'recipes-test',
      seed: 1,
      datasets: { bad: { uri: 'file:alpaca-bad.jsonl', format: 'chat', split: 'train', recipe: 'alpaca' } },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    expect((err as ApplicationFailure).message).toMatch(/alpaca-bad\.jsonl row 2: field 'output': missing column/);
  }, 120_000);
});
