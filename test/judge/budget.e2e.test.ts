/**
 * The judge budget shared by cpu workers, on real parts: a Temporal dev server of its own, the
 * stack's S3 server, TWO cpu workers (two Worker instances polling the cpu queue, each with the
 * real activities and its own budget client; in-process, so the workflow code is bundled once) and
 * a local OpenAI-compatible endpoint that records when each request arrives.
 *
 * Two checkpoints' evaluations (stored generations, so no GPU) are judged at once, one by each
 * worker (each takes one cpu activity at a time), each with 4 calls in flight. Both workers set
 * VALUEDRIFT_JUDGE_RPM=10 over a 10 s window (60 a minute, scaled): the endpoint must never see
 * more than 10 requests in any window across both workers, and every item must be judged. Without
 * the budget the 16 requests arrive within a second or two. A second case drives the budget
 * workflow directly through its continue-as-new and idle end, with the window carried across runs.
 */
import { readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeConnection, Worker } from '@temporalio/worker';
import { createActivities } from '../../activities';
import { resetWorkerEnv } from '../../activities/env';
import { generationKey } from '../../activities/evaluation/keys';
import { createJudgeBudget, judgeBudgetWorkflowId } from '../../activities/judge/budget';
import { createJudgeClient } from '../../activities/judge/client';
import { getBytes, putBytesOnce } from '../../activities/store';
import { storeKeys, TASK_QUEUES } from '../../common/config';
import type { Judgment, ModelHandle } from '../../common/contracts';
import { EvaluationSpec } from '../../common/spec';
import { evaluateCheckpointWorkflow, type EvaluateCheckpointInput } from '../../workflows/evaluate';
import { EVAL_TOPICS, loadStackEnv, restoreEnv, startTestServer, uniqueName, workflowBundle } from '../support/workflowEnv';
import { ok, startFakeServer, type FakeServer } from './fakeServer';

const ROOT = path.resolve(__dirname, '..', '..');
const WINDOW_MS = 10_000;
const LIMIT = 10;
const API_KEY = 'sk-budget-e2e-secret-0123456789';

let env: TestWorkflowEnvironment;
let judge: FakeServer;
let workDir: string;
let workers: Worker[] = [];
let running: Promise<void>[] = [];
/** Worker B's own connection: one connection serves one worker per task queue. */
let second: NativeConnection | undefined;
/** The worker settings this test sets, put back afterwards. */
const SETTINGS = ['VALUEDRIFT_JUDGE_BASE_URL', 'VALUEDRIFT_JUDGE_API_KEY', 'VALUEDRIFT_JUDGE_MODEL', 'VALUEDRIFT_JUDGE_RPM', 'VALUEDRIFT_JUDGE_TPM', 'VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS', 'VALUEDRIFT_WORK_DIR'] as const;
const saved = Object.fromEntries(SETTINGS.map((k) => [k, process.env[k]]));

/** Each run of an activity type in a workflow: the worker that started it and the result it returned. */
async function activityRuns(workflowId: string, type: string): Promise<Array<{ identity: string; result: Record<string, unknown> }>> {
  const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
  const names = new Map<string, string>();
  const started = new Map<string, string>();
  const out: Array<{ identity: string; result: Record<string, unknown> }> = [];
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s) names.set(String(e.eventId), s.activityType?.name ?? '');
    const st = e.activityTaskStartedEventAttributes;
    if (st) started.set(String(st.scheduledEventId), st.identity ?? '');
    const c = e.activityTaskCompletedEventAttributes;
    if (c && names.get(String(c.scheduledEventId)) === type) {
      const data = c.result?.payloads?.[0]?.data;
      out.push({ identity: started.get(String(c.scheduledEventId)) ?? '', result: data ? (JSON.parse(Buffer.from(data).toString('utf8')) as Record<string, unknown>) : {} });
    }
  }
  return out;
}

/** Every string and decoded payload in a history, as one text. */
function historyText(node: unknown, out: string[] = []): string {
  if (node instanceof Uint8Array) out.push(Buffer.from(node).toString('utf8'));
  else if (typeof node === 'string') out.push(node);
  else if (Array.isArray(node)) for (const v of node) historyText(v, out);
  else if (node !== null && typeof node === 'object') for (const v of Object.values(node)) historyText(v, out);
  return out.join('\n');
}

/** The most requests that arrived in any span of `spanMs` (arrival times in ms). */
function busiestSpan(times: number[], spanMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while ((sorted[i] as number) - (sorted[j] as number) >= spanMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

describe('judge budget shared by two cpu workers (real dev server, S3, two workers)', () => {
  beforeAll(async () => {
    loadStackEnv();
    resetWorkerEnv();
    if (!process.env.VALUEDRIFT_S3_ENDPOINT) throw new Error('no stack S3: run npx tsx infra/dev.ts up --no-workers');
    workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-budget-e2e-'));
    let bundle;
    [env, judge, bundle] = await Promise.all([startTestServer(), startFakeServer({ chat: () => ok([[' support', -0.1], [' neutral', -2.5], [' oppose', -4]], 100) }), workflowBundle()]);
    Object.assign(process.env, {
      VALUEDRIFT_WORK_DIR: workDir,
      VALUEDRIFT_JUDGE_BASE_URL: judge.baseURL,
      VALUEDRIFT_JUDGE_API_KEY: API_KEY,
      VALUEDRIFT_JUDGE_RPM: String(LIMIT),
      VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS: String(WINDOW_MS),
    });
    delete process.env.VALUEDRIFT_JUDGE_MODEL;
    delete process.env.VALUEDRIFT_JUDGE_TPM;
    resetWorkerEnv();
    const namespace = env.namespace ?? 'default';
    second = await NativeConnection.connect({ address: env.connection.options.address });
    // Two cpu workers, one cpu activity at a time each: the two judging activities land one on each.
    const cpu = (connection: NativeConnection, identity: string) =>
      Worker.create({ connection, namespace, taskQueue: TASK_QUEUES.cpu, activities: createActivities({ client: env.client }), maxConcurrentActivityTaskExecutions: 1, identity });
    workers = [
      await Worker.create({ connection: env.nativeConnection, namespace, taskQueue: TASK_QUEUES.workflows, workflowBundle: bundle, identity: 'workflows' }),
      await cpu(env.nativeConnection, 'cpu-a'),
      await cpu(second, 'cpu-b'),
    ];
    running = workers.map((w) => w.run());
  }, 180_000);

  afterAll(async () => {
    workers.forEach((w) => w.shutdown());
    await Promise.all(running);
    await second?.close();
    restoreEnv(saved, SETTINGS);
    await judge?.close();
    await env?.teardown();
    if (workDir) await fs.rm(workDir, { recursive: true, force: true });
  });

  it('keeps both workers together within the budget in every window, and judges every item', async () => {
    const tag = uniqueName('budget-e2e');
    const evalSet = await putBytesOnce(`tests/${tag}/eval.jsonl`, readFileSync(path.join(ROOT, 'test/fixtures/eval-small.jsonl')));
    const evaluation = EvaluationSpec.parse({ evalSet: 'evalset', generationsPerPrompt: 2, topics: EVAL_TOPICS, judge: { model: 'fake-judge', concurrency: 4 } });
    const questions = readFileSync(path.join(ROOT, 'test/fixtures/eval-small.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; category: string });
    const seed = 11;
    const inputs: EvaluateCheckpointInput[] = [];
    for (const m of ['a', 'b']) {
      const model: ModelHandle = { uri: `tiny:budget-${m}`, contentKey: `model:${tag}-${m}` };
      // Stored samples (as a GPU worker would have written them): 4 prompts × 2, every text distinct.
      const rows = questions.flatMap((q) =>
        Array.from({ length: 2 }, (_, sample) => ({ prompt_id: q.id, category: q.category, sample, text: `${tag} ${m} answer ${sample} to ${q.id}`, prompt_tokens: 10, completion_tokens: 8, seed })),
      );
      const genKey = generationKey({ model, promptStyle: 'chat', evaluation, evalSet, seed, step: 0 });
      await putBytesOnce(storeKeys.generations(genKey), rows.map((r) => JSON.stringify(r)).join('\n') + '\n', 'application/x-ndjson');
      inputs.push({ lineage: `${tag}-${m}`, stageId: 'base', step: 0, totalSteps: 0, model, promptStyle: 'chat', evaluation, evalSet, seed });
    }

    const t0 = Date.now();
    const ids = inputs.map((_, i) => `${tag}-eval-${i}`);
    const results = await Promise.all(inputs.map((input, i) => env.client.workflow.execute(evaluateCheckpointWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: ids[i] as string, args: [input] })));
    const seconds = (Date.now() - t0) / 1000;

    // Every item judged: 8 labelled judgments per checkpoint, from 16 requests in all.
    for (const r of results) expect(r.cached).toBe(false);
    const chats = judge.chatRequests;
    expect(chats).toHaveLength(16);
    const judging = (await Promise.all(ids.map((id) => activityRuns(id, 'judgeResponses')))).flat();
    expect(judging).toHaveLength(2);
    for (const { result } of judging) {
      expect(result.calls).toBe(8);
      const rows = (await getBytes((result.judgments as { uri: string }).uri)).toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Judgment);
      expect(rows).toHaveLength(8);
      expect(rows.every((r) => r.probs !== null && r.probs.support > 0.5)).toBe(true);
    }
    // Each worker judged one checkpoint: the budget was shared by two processes, not kept by one.
    expect(new Set(judging.map((j) => j.identity)).size).toBe(2);

    // The budget workflow runs under a hash of endpoint + model. Its history holds one accepted
    // Update per grant (refusals leave none): exactly the 16 requests, never more than 10 in any 10 s.
    const budgetId = judgeBudgetWorkflowId(createJudgeClient({ baseURL: judge.baseURL }).baseURL, 'fake-judge');
    const desc = await env.client.workflow.getHandle(budgetId).describe();
    expect(desc.type).toBe('judgeBudgetWorkflow');
    expect(desc.status.name).toBe('RUNNING');
    const view = (await env.client.workflow.getHandle(budgetId).query('state')) as { grantsThisRun: number; limits: { requests?: number; windowMs: number } };
    expect(view).toMatchObject({ grantsThisRun: 16, limits: { requests: LIMIT, windowMs: WINDOW_MS } });
    const history = await env.client.workflow.getHandle(budgetId).fetchHistory();
    const stamps = (history.events ?? []).flatMap((e) => {
      const data = e.workflowExecutionUpdateCompletedEventAttributes?.outcome?.success?.payloads?.[0]?.data;
      const answer = data ? (JSON.parse(Buffer.from(data).toString('utf8')) as { granted: boolean; at?: number }) : undefined;
      return answer?.granted ? [answer.at as number] : [];
    });
    expect(stamps).toHaveLength(16);
    expect(busiestSpan(stamps, WINDOW_MS)).toBe(LIMIT);

    // At the endpoint: a request arrives a little after its grant (the update's trip back, a cold
    // client: seconds on a loaded machine), so windows there are measured at half the length. Without
    // the budget all 16 arrive within a second or two.
    const arrivals = chats.map((q) => q.receivedAt);
    const busiest = busiestSpan(arrivals, WINDOW_MS / 2);
    console.log(
      `budget e2e: 16 judge requests in ${seconds.toFixed(1)} s; grants at ${JSON.stringify(stamps.map((t) => t - Math.min(...stamps)).sort((a, b) => a - b))} ms; ` +
        `arrivals at ${JSON.stringify(arrivals.map((t) => Math.round(t - Math.min(...arrivals))))} ms`,
    );
    expect(busiest).toBeLessThanOrEqual(LIMIT);
    // 16 requests at 10 per window: the last 6 are granted a full window after the first.
    expect(Math.max(...stamps) - Math.min(...stamps)).toBeGreaterThanOrEqual(WINDOW_MS);
    expect(Math.max(...arrivals) - Math.min(...arrivals)).toBeGreaterThanOrEqual(WINDOW_MS / 2);

    // The history replays against the current workflow code (grants stamped from the Updates' input).
    await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, budgetId);

    // No endpoint, model or key in the budget's history: counts and a hash only.
    const text = historyText(history);
    expect(text).toContain('"windowMs":10000');
    for (const secret of [API_KEY, judge.baseURL, 'fake-judge', '127.0.0.1']) expect(text).not.toContain(secret);
  }, 150_000);

  it('continues-as-new with the window carried over, and ends once idle', async () => {
    const endpoint = `http://budget-can-${uniqueName('x')}.invalid/v1`;
    // Served by the workflows worker; 4 grants per run, 3 per 1.5 s window.
    const budget = createJudgeBudget(env.client, endpoint, 'm', { rpm: 3, windowMs: 1_500, maxGrantsPerRun: 4, idleMs: 2_000 });
    const granted: number[] = [];
    const stamped: number[] = [];
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        const { at } = await budget.acquire({ requests: 1, tokens: 7 });
        granted.push(Date.now());
        stamped.push(at as number);
      }),
    );
    console.log(`budget CAN: grants (workflow time) ${JSON.stringify(stamped.map((t) => t - Math.min(...stamped)).sort((a, b) => a - b))}, received ${JSON.stringify(granted.map((t) => t - Math.min(...granted)).sort((a, b) => a - b))}`);
    // Workflow time: exactly 3 per 1.5 s in every window.
    expect(busiestSpan(stamped, 1_500)).toBeLessThanOrEqual(3);
    expect(granted).toHaveLength(10);
    // As the callers saw them (measured at half the window for the grant's trip back).
    expect(busiestSpan(granted, 750)).toBeLessThanOrEqual(3);
    expect(Math.max(...granted) - Math.min(...granted)).toBeGreaterThanOrEqual(3 * 1_500 - 400);

    // Idle for 2 s: the budget ends on its own (the next ask would start a fresh one), in a later
    // run than the first: at least one run continued-as-new after its 4th grant.
    const last = (await env.client.workflow.getHandle(budget.workflowId).result()) as { grants: number };
    expect(last.grants).toBeGreaterThan(0);
    expect(last.grants).toBeLessThan(10);
    const statuses: string[] = [];
    for (let tries = 0; tries < 50 && !statuses.includes('COMPLETED'); tries++) {
      statuses.length = 0;
      for await (const w of env.client.workflow.list({ query: `WorkflowId = '${budget.workflowId}'` })) statuses.push(w.status.name);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(statuses).toContain('COMPLETED');
    expect(statuses.filter((st) => st === 'CONTINUED_AS_NEW').length).toBeGreaterThanOrEqual(1);
  }, 60_000);

  it('pauses every grant for the Retry-After of a 429 a worker saw, and a cancelled wait stops at once', async () => {
    const endpoint = `http://budget-429-${uniqueName('x')}.invalid/v1`;
    const budget = createJudgeBudget(env.client, endpoint, 'm', { rpm: 100, windowMs: 10_000, idleMs: 5_000 });
    await budget.acquire({ requests: 1, tokens: 1 });
    // A provider's 429 seen through the client's fetch: reported with its retry-after-ms.
    const limited = budget.watch(() => Promise.resolve(new Response('{}', { status: 429, headers: { 'retry-after-ms': '2500' } })));
    const t0 = Date.now();
    expect((await limited('http://x.invalid/v1/chat/completions')).status).toBe(429);
    // The report is a signal sent in the background: give it a moment to land before asking.
    await new Promise((r) => setTimeout(r, 300));
    const { at } = await budget.acquire({ requests: 1, tokens: 1 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_400);
    expect(at as number).toBeGreaterThanOrEqual(t0 + 2_400);

    // A wait in progress ends with the abort reason as soon as the caller gives up.
    await budget.throttled(60_000);
    const controller = new AbortController();
    const waiting = budget.acquire({ requests: 1, tokens: 1 }, controller.signal);
    setTimeout(() => controller.abort(new Error('activity cancelled')), 500);
    const started = Date.now();
    await expect(waiting).rejects.toThrow('activity cancelled');
    expect(Date.now() - started).toBeLessThan(5_000);
  }, 60_000);
});
