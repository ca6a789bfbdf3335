/**
 * End to end on real parts: the local Temporal dev server, the local S3 server and the local judge
 * (started by `npm test`), a worker process, and the real trainer on the tiny model: SFT, then a
 * reward model and PPO from it beside two DPO branches. The worker is SIGKILLed after the first SFT
 * checkpoint; a new worker picks the stage up and resumes it.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, getVerified, listKeys, uriOf } from '../../activities/store';
import { EvaluationPointer } from '../../common/contracts';
import { computeStageDrift } from '../../common/drift';
import { parseSummariesFile } from '../../common/summariesFile';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { lineageWorkflow, stageProgressQuery, type LineageResult } from '../../workflows';
import { loadStackEnv, temporalBinary, testSpec, uniqueName } from '../support/workflowEnv';
import { workerProcesses } from '../support/workerProcess';

let client: Client;
let workDir: string;
const workers = workerProcesses();
const startWorker = (tag: string) => workers.start(tag, { VALUEDRIFT_WORKER_ROLE: 'all', VALUEDRIFT_WORK_DIR: workDir });

beforeAll(async () => {
  loadStackEnv();
  resetWorkerEnv();
  workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-e2e-'));
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' });
  client = new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE ?? 'default' });
});

afterAll(async () => {
  await workers.killAll();
  await client?.connection.close();
  await fs.rm(workDir, { recursive: true, force: true });
});

describe('a lineage on real parts', () => {
  it('trains, evaluates and reports; a killed worker costs a resume, not a restart', async () => {
    const name = uniqueName('e2e');
    const tiny = { gpus: 0, hyperparameters: { per_device_train_batch_size: 2, global_batch_size: 2, max_length: 96 } };
    const spec = testSpec(name, [
      { id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: 10, ...tiny, hyperparameters: { ...tiny.hyperparameters, max_steps: 60 } },
      { id: 'dpo-support', parent: 'sft', kind: 'dpo', dataset: 'pairs', alignment: 'support-aligned', checkpointEvery: 2, ...tiny, hyperparameters: { ...tiny.hyperparameters, max_steps: 2, max_prompt_length: 48 } },
      { id: 'dpo-oppose', parent: 'sft', kind: 'dpo', dataset: 'pairs', alignment: 'oppose-aligned', checkpointEvery: 2, ...tiny, hyperparameters: { ...tiny.hyperparameters, max_steps: 2, max_prompt_length: 48 } },
      { id: 'rm', parent: 'sft', kind: 'reward', dataset: 'pairs', alignment: 'support-aligned', checkpointEvery: 2, ...tiny, hyperparameters: { ...tiny.hyperparameters, max_steps: 2 } },
      { id: 'ppo', parent: 'sft', kind: 'ppo', dataset: 'pairs', rewardStage: 'rm', checkpointEvery: 2, ...tiny, hyperparameters: { ...tiny.hyperparameters, max_steps: 2, response_length: 8 } },
    ]);
    (spec.evaluation as Record<string, unknown>).maxNewTokens = 8;
    (spec.evaluation as Record<string, unknown>).judge = { model: process.env.VALUEDRIFT_JUDGE_MODEL ?? 'minilm-stance', concurrency: 4 };

    const first = startWorker('first');
    const handle = await client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });

    // Kill the worker (not the trainer: it is in its own process group and is cleaned up by the retry).
    const deadline = Date.now() + 300_000;
    const sftHandle = client.workflow.getHandle(workflowIds.stage(name, 'sft'));
    for (;;) {
      // A running stage's progress is its own workflow's query (nothing is signalled up to the lineage).
      const p = await sftHandle.query(stageProgressQuery).catch(() => undefined);
      if (p?.checkpoints.includes(10)) break;
      if (Date.now() > deadline) throw new Error('no SFT checkpoint within 5 minutes');
      await new Promise((r) => setTimeout(r, 500));
    }
    // Training must still be running for the kill to test a resume.
    const pending = (await client.workflow.getHandle(workflowIds.stage(name, 'sft')).describe()).raw.pendingActivities ?? [];
    expect(pending.map((a) => a.activityType?.name)).toContain('trainStage');
    first.kill('SIGKILL');
    startWorker('second');

    const result = (await handle.result()) as LineageResult;
    expect(result.stages.map((s) => s.stageId).sort()).toEqual(['dpo-oppose', 'dpo-support', 'ppo', 'rm', 'sft']);
    // The reward model feeds PPO and is not evaluated for stance.
    expect(result.stages.find((s) => s.stageId === 'rm')!.drift).toBeNull();
    const sft = result.stages.find((s) => s.stageId === 'sft')!;
    expect(sft.totalSteps).toBe(60);

    // The SFT activity ran twice and the second attempt resumed from an uploaded checkpoint.
    const history = await client.workflow.getHandle(workflowIds.stage(name, 'sft')).fetchHistory();
    const events = history.events ?? [];
    const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'trainStage');
    const sid = Number(scheduled?.eventId);
    const started = events.find((e) => Number(e.activityTaskStartedEventAttributes?.scheduledEventId) === sid);
    expect(started?.activityTaskStartedEventAttributes?.attempt).toBeGreaterThanOrEqual(2);
    expect(started?.activityTaskStartedEventAttributes?.lastFailure?.message).toMatch(/heartbeat timeout/i);
    const completed = events.find((e) => Number(e.activityTaskCompletedEventAttributes?.scheduledEventId) === sid);
    const payload = completed?.activityTaskCompletedEventAttributes?.result?.payloads?.[0]?.data;
    const trained = JSON.parse(Buffer.from(payload as Uint8Array).toString('utf8')) as { resumedFrom: number; checkpoints: Array<{ step: number }> };
    expect(trained.resumedFrom).toBeGreaterThanOrEqual(10);
    expect(trained.checkpoints.map((c) => c.step)).toEqual([10, 20, 30, 40, 50, 60]);

    // Every artifact of the store layout (DESIGN §4) is there: checkpoints, each evaluation's pointer
    // and browsing copy (the evaluation's objects themselves are content-addressed under cache/), drift, report.
    const keys = new Set(await listKeys(`lineages/${name}/`));
    for (const step of [10, 20, 30, 40, 50, 60]) expect(keys.has(`lineages/${name}/sft/checkpoints/step-${step}/manifest.json`)).toBe(true);
    for (const [stage, steps] of [['base', [0]], ['sft', [10, 20, 30, 40, 50, 60]], ['dpo-support', [2]], ['dpo-oppose', [2]], ['ppo', [2]]] as const) {
      for (const step of steps) {
        for (const f of ['evaluation.json', 'summary.json']) expect(keys.has(`lineages/${name}/${stage}/evals/step-${step}/${f}`)).toBe(true);
        const pointer = EvaluationPointer.parse(JSON.parse((await getBytes(uriOf(`lineages/${name}/${stage}/evals/step-${step}/evaluation.json`))).toString('utf8')));
        expect(pointer.generations.uri).toBe(uriOf(`cache/generations/${pointer.generationKey}.jsonl`));
        for (const ref of [pointer.generations, pointer.judgments, pointer.summary]) await expect(getVerified(ref)).resolves.toBeInstanceOf(Buffer);
      }
    }
    expect([...keys].some((k) => k.startsWith(`lineages/${name}/rm/evals/`))).toBe(false);
    for (const step of [2]) expect(keys.has(`lineages/${name}/rm/checkpoints/step-${step}/manifest.json`)).toBe(true);
    for (const stage of ['sft', 'dpo-support', 'dpo-oppose', 'ppo']) expect(keys.has(`lineages/${name}/${stage}/drift.json`)).toBe(true);
    expect(keys.has(`lineages/${name}/rm/drift.json`)).toBe(false);
    expect(keys.has(`lineages/${name}/report/index.html`)).toBe(true);
    // The report has trajectories for the policy stages and none for the reward model.
    expect([...keys].some((k) => k.startsWith(`lineages/${name}/report/figures/ppo.`))).toBe(true);
    expect([...keys].some((k) => k.startsWith(`lineages/${name}/report/figures/rm.`))).toBe(false);

    // `lineage drift` on the summaries the system wrote reproduces the stage's drift.json.
    for (const stage of ['sft', 'dpo-support', 'dpo-oppose', 'ppo']) {
      const written = JSON.parse((await getBytes(uriOf(`lineages/${name}/${stage}/drift.json`))).toString('utf8')) as unknown;
      const recomputed = computeStageDrift({ summaries: parseSummariesFile((await getBytes(uriOf(`lineages/${name}/${stage}/summaries.jsonl`))).toString('utf8')) });
      expect(recomputed).toEqual(written);
    }

    // The real CLI lists the lineage and its children and filters them by search attribute.
    const list = (query: string) =>
      spawnSync(temporalBinary(), ['workflow', 'list', '--address', process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233', '--query', query, '--output', 'json'], { encoding: 'utf8', shell: false });
    const all = list(`Lineage='${name}'`);
    expect(all.status).toBe(0);
    const ids = (JSON.parse(all.stdout || '[]') as Array<{ execution: { workflowId: string } }>).map((w) => w.execution.workflowId);
    expect(ids).toEqual(expect.arrayContaining([workflowIds.lineage(name), workflowIds.stage(name, 'sft'), workflowIds.stage(name, 'dpo-support')]));
    const dpo = list(`Lineage='${name}' AND Algorithm='dpo'`);
    const dpoIds = (JSON.parse(dpo.stdout || '[]') as Array<{ execution: { workflowId: string } }>).map((w) => w.execution.workflowId).sort();
    expect(dpoIds).toEqual([workflowIds.stage(name, 'dpo-oppose'), workflowIds.stage(name, 'dpo-support')]);
  }, 900_000);
});
