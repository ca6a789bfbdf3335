/**
 * A stage's `parallelism` (ddp | fsdp | zero3) and `nodes`, from the spec to the trainer: `lineage validate` accepts
 * and refuses them through the CLI's entry point, the trainer's config carries the choice, and the accelerate
 * launcher stays the same for every choice (the trainer's TrainingArguments configure FSDP or ZeRO-3, so
 * that the same code runs under torchrun in trainer/tests/test_fsdp.py and under accelerate on GPUs).
 */
import { describe, expect, it } from 'vitest';
import { validateEditedDemo, type Stage } from '../support/validateCli';
import { accelerateLauncher } from '../../activities/gpus';
import { trainerConfig } from '../../activities/training';
import { StageSpec } from '../../common/spec';


const validate = validateEditedDemo;

describe('stage parallelism', () => {
  it('lineage validate accepts fsdp and zero3 on 2 GPUs, and nodes 1', async () => {
    const r = await validate((s) => {
      Object.assign(s[0] as Stage, { gpus: 2, parallelism: 'fsdp', nodes: 1 });
      Object.assign(s[1] as Stage, { gpus: 2, parallelism: 'zero3' });
      Object.assign(s[2] as Stage, { parallelism: 'ddp' });
    });
    expect(r.out).toMatch(/^ok: lineage/);
    expect(r.code).toBe(0);
  }, 120_000);

  it('refuses sharding on fewer than 2 GPUs or with lora, and zero3 across nodes, naming each field', async () => {
    const r = await validate((s) => {
      Object.assign(s[0] as Stage, { gpus: 1, parallelism: 'fsdp' });
      Object.assign(s[1] as Stage, { gpus: 2, nodes: 2, parallelism: 'zero3' });
      Object.assign(s[2] as Stage, { gpus: 2, parallelism: 'zero3', lora: {} });
    });
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/stages\[0\]\.parallelism: fsdp shards the model over GPUs and needs gpus ≥ 2 \(this stage has 1\)/);
    expect(r.out).toMatch(/stages\[1\]\.nodes: zero3 across nodes is not supported; use ddp or fsdp for nodes 2/);
    expect(r.out).toMatch(/stages\[2\]\.parallelism: zero3 with lora is not supported/);
    const unknown = await validate((s) => Object.assign(s[0] as Stage, { gpus: 2, parallelism: 'tensor' }));
    expect(unknown.code).toBe(1);
    expect(unknown.out).toMatch(/stages\[0\]\.parallelism/);
  }, 120_000);

  it("reaches the trainer's config, ddp when the spec says nothing", () => {
    const base = { id: 'sft', parent: 'base', dataset: 'd', kind: 'sft', checkpointEvery: 1, gpus: 2 };
    const config = (extra: Stage) =>
      trainerConfig({ stage: StageSpec.parse({ ...base, ...extra }), model: 'm', trainFile: '/t.jsonl', outputDir: '/o', seed: 1 });
    expect(config({}).parallelism).toBe('ddp');
    expect(config({ parallelism: 'fsdp' }).parallelism).toBe('fsdp');
    expect(config({ parallelism: 'zero3' }).parallelism).toBe('zero3');
  });

  it('launches every parallelism the same way: plain multi-process accelerate, sharding left to the trainer', () => {
    const args = accelerateLauncher(8, 29600);
    const flag = (name: string) => args[args.indexOf(name) + 1];
    expect(args).toContain('--multi_gpu');
    expect([flag('--num_processes'), flag('--num_machines')]).toEqual(['8', '1']);
    // A launcher-side FSDP or DeepSpeed plugin would be built from accelerate's own defaults and fight the
    // trainer's (sharding.training_args); none of accelerate's sharding switches may appear.
    expect(args.filter((a) => /fsdp|deepspeed|zero/i.test(a))).toEqual([]);
  });
});
