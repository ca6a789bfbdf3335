/**
 * Hostile lineage specs: each of these used to pass validation and fail later (or be silently
 * changed). Every one must now be refused by validateLineageSpec naming the field, or, for what only
 * the worker can see (a directory given as a dataset file), refused non-retryably by the dataset
 * activity.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareDatasets } from '../../activities/datasets';
import { resetWorkerEnv } from '../../activities/env';
import { MAX_SPEC_BYTES, MAX_TOPICS, validateLineageSpec, type SpecIssue } from '../../common/spec';

const DEMO = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'specs', 'demo.json'), 'utf8')) as Record<string, unknown>;
const demo = (): Record<string, any> => structuredClone(DEMO) as Record<string, any>;

function issuesOf(spec: unknown): SpecIssue[] {
  const r = validateLineageSpec(spec);
  if (r.ok) throw new Error('expected the spec to be refused');
  return r.issues;
}

describe('the demo spec is valid (the baseline every case below breaks once)', () => {
  it('validates', () => {
    expect(validateLineageSpec(demo()).ok).toBe(true);
  });
});

describe('paths that climb out', () => {
  const datasetUris = [
    'file:../x.jsonl',
    'file:data/../../x.jsonl',
    'file:..',
    'file:%2e%2e/x.jsonl',
    'file:data/%2E%2E%2Fx.jsonl',
    's3://bucket/a/../b.jsonl',
    's3://bucket/a\\..\\b.jsonl',
    's3://bucket/a%2f..%2fb.jsonl',
    's3://bucket/a%5c..',
    's3://bucket/x%00.jsonl',
  ];
  for (const uri of datasetUris) {
    it(`refuses dataset ${uri}`, () => {
      const s = demo();
      s.datasets['demo-sft'].uri = uri;
      const issues = issuesOf(s);
      expect(issues.some((i) => i.path === 'datasets.demo-sft.uri')).toBe(true);
    });
  }
  const models = ['hf:../etc', 'hf:org/..', 'hf:./..', '/models/../etc', 's3://bucket/ckpt/../other', 's3://bucket/%2e%2e/x'];
  for (const model of models) {
    it(`refuses base model ${model}`, () => {
      const s = demo();
      s.base.model = model;
      expect(issuesOf(s).map((i) => i.path)).toContain('base.model');
    });
  }
  // A stored checkpoint as the base: resolveBaseModel reads its manifest and the training and
  // generation activities download it (activities/models.ts localModel), so the trainer gets a
  // local folder; it is therefore accepted, as are ordinary names with dots.
  for (const model of ['s3://valuedrift/lineages/x/sft/checkpoints/step-6', 'hf:Qwen/Qwen3-4B', 'hf:meta-llama/Llama-3.2-3B', '/models/my.model-v1.5']) {
    it(`accepts base model ${model}`, () => {
      const s = demo();
      s.base.model = model;
      expect(validateLineageSpec(s).ok).toBe(true);
    });
  }
});

describe('reserved names', () => {
  it('refuses __proto__ as a dataset name instead of dropping it', () => {
    const text = JSON.stringify(demo()).replace('"datasets":{', '"datasets":{"__proto__":{"uri":"file:data/x.jsonl","format":"chat"},');
    const issues = issuesOf(JSON.parse(text));
    expect(issues).toEqual([{ path: 'datasets.__proto__', message: expect.stringMatching(/reserved name/) }]);
  });

  it('refuses constructor and prototype as names, and as a reference to a missing dataset', () => {
    const s = demo();
    s.datasets.constructor = { uri: 'file:data/x.jsonl', format: 'chat' };
    expect(issuesOf(s).map((i) => i.path)).toContain('datasets.constructor');
    const t = demo();
    t.evaluation.topics.prototype = 'x';
    expect(issuesOf(t).map((i) => i.path)).toContain('evaluation.topics.prototype');
    const u = demo();
    u.stages[0].dataset = 'constructor';
    expect(issuesOf(u)).toContainEqual({ path: 'stages[0].dataset', message: 'unknown dataset "constructor" (not in datasets)' });
    const v = demo();
    v.evaluation.evalSet = 'constructor';
    expect(issuesOf(v).map((i) => i.path)).toContain('evaluation.evalSet');
  });
});

describe('size', () => {
  it(`caps the topics at ${MAX_TOPICS}`, () => {
    const s = demo();
    s.evaluation.topics = Object.fromEntries(Array.from({ length: MAX_TOPICS + 1 }, (_, i) => [`c${i}`, `topic ${i}`]));
    const issues = issuesOf(s);
    expect(issues).toContainEqual({ path: 'evaluation.topics', message: `at most ${MAX_TOPICS} categories (the paper has 11)` });
    s.evaluation.topics = Object.fromEntries(Array.from({ length: MAX_TOPICS }, (_, i) => [`c${i}`, `topic ${i}`]));
    expect(validateLineageSpec(s).ok).toBe(true);
  });

  it('refuses a 27 MB spec at once, saying the cap and why', () => {
    const s = demo();
    s.evaluation.topics = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`c${i}`, 'x'.repeat(260)]));
    const issues = issuesOf(s);
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe('(root)');
    expect(issues[0]?.message).toMatch(new RegExp(`at most ${MAX_SPEC_BYTES} \\(512 KiB\\).*Temporal's 2 MB payload limit`));
  });

  it('counts bytes, not characters', () => {
    const s = demo();
    // Under the cap in UTF-16 code units, over it in UTF-8 bytes (3 bytes each); the size is checked
    // before the shape, so this is the one issue reported.
    s.notes = '€'.repeat(200_000);
    expect(JSON.stringify(s).length).toBeLessThan(MAX_SPEC_BYTES);
    expect(Buffer.byteLength(JSON.stringify(s))).toBeGreaterThan(MAX_SPEC_BYTES);
    expect(issuesOf(s)).toEqual([{ path: '(root)', message: expect.stringMatching(/512 KiB/) }]);
  });
});

describe('absurd hyperparameters', () => {
  it('refuses num_train_epochs 1e-300 when epochs decide the length', () => {
    const s = demo();
    s.stages[0].hyperparameters = { ...s.stages[0].hyperparameters, num_train_epochs: 1e-300, max_steps: -1 };
    expect(issuesOf(s).map((i) => i.path)).toContain('stages[0].hyperparameters.num_train_epochs');
  });
  it('refuses learning_rate 1e-300', () => {
    const s = demo();
    s.stages[0].hyperparameters = { ...s.stages[0].hyperparameters, learning_rate: 1e-300 };
    expect(issuesOf(s).map((i) => i.path)).toContain('stages[0].hyperparameters.learning_rate');
  });
});

describe('a file: dataset that is not a file (the dataset activity)', () => {
  let root: string;
  let outside: string;
  const saved = process.env.VALUEDRIFT_DATA_ROOT;
  beforeAll(async () => {
    root = await fsp.mkdtemp(path.join(os.tmpdir(), 'vd-ds-root-'));
    outside = await fsp.mkdtemp(path.join(os.tmpdir(), 'vd-ds-outside-'));
    await fsp.mkdir(path.join(root, 'a-dir.jsonl'));
    await fsp.writeFile(path.join(outside, 'secret.jsonl'), '{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}\n');
    await fsp.symlink(path.join(outside, 'secret.jsonl'), path.join(root, 'link.jsonl'));
    process.env.VALUEDRIFT_DATA_ROOT = root;
    resetWorkerEnv();
  });
  afterAll(async () => {
    if (saved === undefined) delete process.env.VALUEDRIFT_DATA_ROOT;
    else process.env.VALUEDRIFT_DATA_ROOT = saved;
    resetWorkerEnv();
    await fsp.rm(root, { recursive: true, force: true });
    await fsp.rm(outside, { recursive: true, force: true });
  });

  async function refusal(uri: string): Promise<ApplicationFailure> {
    const err = await prepareDatasets({ lineage: 'x', seed: 1, datasets: { d: { uri, format: 'chat', split: 'train' } } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect((err as ApplicationFailure).nonRetryable).toBe(true);
    return err as ApplicationFailure;
  }

  it('a directory: non-retryable, saying it is a directory', async () => {
    const f = await refusal('file:a-dir.jsonl');
    expect(f.type).toBe('DatasetNotAFile');
    expect(f.message).toMatch(/is a directory/);
  });
  it('a link out of the data root: refused', async () => {
    const f = await refusal('file:link.jsonl');
    expect(f.message).toMatch(/outside the data root/);
  });
  it('a missing file below a file: not found, non-retryable', async () => {
    await fsp.writeFile(path.join(root, 'plain'), 'x');
    const f = await refusal('file:plain/below.jsonl');
    expect(f.type).toBe('DatasetNotFound');
  });
});
