/**
 * Batch API mode end to end on real parts: a Temporal dev server of its own, the stack's S3 server,
 * a cpu worker *process* (worker/main.ts), and the local MiniLM judge serving OpenAI's Files and
 * Batches shapes (infra/judge/batch_api.py) — every request real HTTP, counted by the endpoint.
 *
 * One checkpoint's evaluation (stored generations, so no GPU) runs with `judge.mode: "batch"`. The
 * endpoint keeps each batch in progress for a while and fails every 5th request of it. While the
 * workflow is polling, the worker is SIGKILLed; a fresh worker picks the workflow up. Checked: one
 * file and one batch were ever created, polls before and after the kill (by both workers) read the
 * same batch id, the failed requests were judged online (and only those), the summary carries the
 * tokens and cost, and evaluating the same checkpoint again makes no request at all.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resetWorkerEnv } from '../../activities/env';
import { generationKey } from '../../activities/evaluation/keys';
import { JudgeUsageRecord } from '../../activities/evaluation/usage';
import { lineageJudgeUsage } from '../../activities/report/usage';
import { getBytes, putBytesOnce } from '../../activities/store';
import { storeKeys, TASK_QUEUES } from '../../common/config';
import type { ModelHandle } from '../../common/contracts';
import { EvaluationSpec } from '../../common/spec';
import { startLocalJudge, type LocalJudge } from '../../infra/judge/serve';
import { evaluateCheckpointWorkflow, type EvaluateCheckpointInput } from '../../workflows/evaluate';
import { EVAL_TOPICS, loadStackEnv, startTestServer, uniqueName } from '../support/workflowEnv';
import { killProcess, workerProcesses } from '../support/workerProcess';

const ROOT = path.resolve(__dirname, '..', '..');
const PYTHON = '.venv/bin/python';
const available = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import fastapi, uvicorn, torch'], { timeout: 120_000 }).status === 0;
if (!available) console.warn(`batch-mode e2e skipped: ${PYTHON} lacks the local judge's packages (npm run dev:up installs them)`);

let env: TestWorkflowEnvironment;
let judge: LocalJudge;
let workDir: string;
const workers = workerProcesses();

interface ApiRequests {
  chat_completions: number;
  files_created: number;
  batches_created: number;
  batch_requests: number;
}
async function apiRequests(): Promise<ApiRequests> {
  const res = await fetch(judge.baseURL.replace(/\/v1$/, '/health'));
  return ((await res.json()) as { api_requests: ApiRequests }).api_requests;
}

function startWorker(tag: string): ChildProcess {
  return workers.start(tag, {
    TEMPORAL_ADDRESS: env.connection.options.address,
    TEMPORAL_NAMESPACE: env.namespace ?? 'default',
    VALUEDRIFT_WORKER_ROLE: 'cpu',
    VALUEDRIFT_WORK_DIR: workDir,
    VALUEDRIFT_JUDGE_BASE_URL: judge.baseURL,
    VALUEDRIFT_JUDGE_API_KEY: 'local',
    VALUEDRIFT_JUDGE_MODEL: 'minilm-stance',
    // Fast polls for the test (defaults: 60 s doubling to 15 min, 400 polls).
    VALUEDRIFT_JUDGE_BATCH_POLL_MS: '700',
    VALUEDRIFT_JUDGE_BATCH_MAX_POLL_MS: '1500',
  });
}

interface ActivityEvent {
  type: string;
  identity?: string;
  batchId?: string;
  status?: string;
}
/** The workflow's activity events: name, the worker that started it, and a poll's batch id and status. */
async function activityEvents(workflowId: string): Promise<ActivityEvent[]> {
  const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
  const names = new Map<string, string>();
  const out: ActivityEvent[] = [];
  const decode = (p: { data?: Uint8Array | null } | undefined) => (p?.data ? (JSON.parse(Buffer.from(p.data).toString('utf8')) as Record<string, unknown>) : {});
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) names.set(String(e.eventId), s.activityType?.name ?? '');
    const st = e.activityTaskStartedEventAttributes;
    if (st) out.push({ type: `${names.get(String(st.scheduledEventId)) ?? ''}:started`, identity: st.identity ?? '' });
    const c = e.activityTaskCompletedEventAttributes;
    if (c) {
      const r = decode(c.result?.payloads?.[0]);
      out.push({ type: `${names.get(String(c.scheduledEventId)) ?? ''}:completed`, identity: c.identity ?? '', batchId: r.batchId as string | undefined, status: r.status as string | undefined });
    }
  }
  return out;
}

describe.skipIf(!available)('judge Batch API mode on real parts', () => {
  beforeAll(async () => {
    loadStackEnv();
    resetWorkerEnv();
    if (!process.env.VALUEDRIFT_S3_ENDPOINT) throw new Error('no stack S3: run npx tsx infra/dev.ts up --no-workers');
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-batch-e2e-'));
    [env, judge] = await Promise.all([startTestServer(), startLocalJudge({ kind: 'minilm', python: PYTHON, batch: { minSeconds: 6, failEvery: 5 } })]);
  }, 180_000);

  afterAll(async () => {
    await workers.killAll();
    await judge?.stop();
    await env?.teardown();
    if (workDir) await fs.rm(workDir, { recursive: true, force: true });
  });

  it('completes through Files + Batches, survives a SIGKILLed worker while polling (same batch), judges failed lines online, and a re-run makes zero calls', async () => {
    const tag = uniqueName('batch-e2e');
    const evalSet = await putBytesOnce(`tests/${tag}/eval.jsonl`, readFileSync(path.join(ROOT, 'test/fixtures/eval-small.jsonl')));
    const evaluation = EvaluationSpec.parse({ evalSet: 'evalset', generationsPerPrompt: 5, topics: EVAL_TOPICS, judge: { model: 'minilm-stance', mode: 'batch', concurrency: 4 } });
    const model: ModelHandle = { uri: 'tiny:batch-e2e', contentKey: `model:${tag}` };
    const seed = 7;
    // Stored samples (as a GPU worker would have written them): 4 prompts × 5, each text distinct.
    const rows = readFileSync(path.join(ROOT, 'test/fixtures/eval-small.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; category: string })
      .flatMap((q, i) =>
        Array.from({ length: 5 }, (_, sample) => ({
          prompt_id: q.id,
          category: q.category,
          sample,
          text: `${tag} answer ${sample} to ${q.id}: ${(i + sample) % 2 === 0 ? 'I strongly support this.' : 'I firmly oppose this.'}`,
          prompt_tokens: 10,
          completion_tokens: 8,
          seed,
        })),
      );
    const genKey = generationKey({ model, promptStyle: 'chat', evaluation, evalSet, seed, step: 0 });
    await putBytesOnce(storeKeys.generations(genKey), rows.map((r) => JSON.stringify(r)).join('\n') + '\n', 'application/x-ndjson');
    const input = (lineage: string): EvaluateCheckpointInput => ({ lineage, stageId: 'base', step: 0, totalSteps: 0, model, promptStyle: 'chat', evaluation, evalSet, seed });

    const t0 = Date.now();
    const first = startWorker('a');
    const workflowId = `${tag}-eval`;
    const handle = await env.client.workflow.start(evaluateCheckpointWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId, args: [input(`${tag}-a`)] });

    // Kill the worker once it has polled the batch and found it still in progress.
    for (;;) {
      const polls = (await activityEvents(workflowId)).filter((e) => e.type === 'pollJudgeBatch:completed');
      if (polls.some((p) => p.status === 'in_progress')) break;
      if (Date.now() - t0 > 90_000) throw new Error(`no poll seen: ${JSON.stringify(await activityEvents(workflowId))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    await killProcess(first);
    const atKill = await apiRequests();
    expect(atKill.batches_created).toBe(1);
    startWorker('b');
    const result = await handle.result();
    expect(result.cached).toBe(false);

    const events = await activityEvents(workflowId);
    const submits = events.filter((e) => e.type === 'submitJudgeBatch:completed');
    const polls = events.filter((e) => e.type === 'pollJudgeBatch:completed');
    expect(submits).toHaveLength(1);
    const batchId = submits[0]?.batchId as string;
    expect(batchId).toMatch(/^batch_/);
    // Polled before and after the kill, by the two worker processes, always the one batch.
    expect(new Set(polls.map((p) => p.batchId))).toEqual(new Set([batchId]));
    expect(new Set(polls.map((p) => p.identity)).size).toBe(2);
    expect(polls[polls.length - 1]?.status).toBe('completed');

    // One upload, one batch; 20 requests in it, every 5th failed and judged online (4 calls).
    const after = await apiRequests();
    expect(after).toEqual({ chat_completions: 4, files_created: 1, batches_created: 1, batch_requests: 20 });

    // Tokens and cost in the evaluation's summary, and summed in the lineage's report figures.
    const summary = JSON.parse((await getBytes(result.summary.uri)).toString('utf8')) as { judgeUsage?: unknown };
    const usage = JudgeUsageRecord.parse(summary.judgeUsage);
    expect(usage).toMatchObject({ judgeModel: 'minilm-stance', mode: 'batch', batchIds: [batchId], online: { calls: 4 }, batch: { calls: 16 } });
    expect(usage.batch.promptTokens).toBeGreaterThan(16 * 50);
    expect(usage.batch.completionTokens).toBe(16);
    expect(usage.online.completionTokens).toBe(4);
    expect(usage.cost).toMatchObject({ currency: 'USD', total: 0 });
    const report = await lineageJudgeUsage(`${tag}-a`);
    expect(report.rows).toEqual([expect.objectContaining({ judgeModel: 'minilm-stance', evaluations: 1, online: usage.online, batch: usage.batch })]);

    // The same checkpoint evaluated again (another lineage): answered from the caches, no request at all.
    const again = await env.client.workflow.execute(evaluateCheckpointWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: `${tag}-again`, args: [input(`${tag}-b`)] });
    expect(again.cached).toBe(true);
    expect(again.v).toEqual(result.v);
    expect(await apiRequests()).toEqual(after);
    console.log(`batch-mode e2e: ${Math.round((Date.now() - t0) / 1000)} s after setup`);
  }, 240_000);
});
