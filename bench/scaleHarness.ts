/**
 * The orchestration at the paper's size, simulated: one base model's paper tree runs as a lineage
 * on a real Temporal server with the real workflows and the real store, drift and report activities
 * against the S3 server, while training, generation, judging, dataset preparation and base-model
 * hashing are stand-ins (test/support/workflowEnv.ts fakeActivities) that take scripted times: the
 * trainer sleeps `stepMs` per optimizer step, uploads a tiny real checkpoint at each of the steps
 * `lineage plan` gives the stage and announces it by signal, as the real one does; generation and
 * judging sleep `generateMs` / `judgeMs` and write the evaluation's real row counts.
 *
 * What it measures, from the workflows' own histories (server event times):
 *   - per workflow: history events and bytes (Temporal warns at 10,240 events and 10 MB);
 *   - per checkpoint: scheduling latency, the stage's `checkpointReady` signal to the first activity
 *     of that checkpoint's evaluation workflow starting (goal ≤ 250 ms on loopback);
 *   - the process's peak RSS (the three workers and this driver share it), sampled every 200 ms.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import { Worker, type NativeConnection } from '@temporalio/worker';
import type { Activities } from '../activities';
import { toJsonl, type PrepareDatasetsInput, type PreparedDataset } from '../activities/datasets';
import { workerEnv } from '../activities/env';
import { putBytesOnce, sha256Hex } from '../activities/store';
import { BASE_STAGE_ID, gpuTaskQueue, storeKeys, TASK_QUEUES, workflowIds } from '../common/config';
import type { Plan } from '../common/plan';
import { isBuilt, stageDependencies, validateLineageSpec, type LineageSpec } from '../common/spec';
import { planLineage } from '../worker/plan';
import { fakeActivities, recorder, uniqueName, workflowBundle } from '../test/support/workflowEnv';
import { announcements, evaluationChildren, firstActivityStart, percentiles, stageChildren, stageOverlap, type History } from './overlapHistory';

/** Temporal's per-workflow warning limits. */
export const HISTORY_WARN_EVENTS = 10_240;
export const HISTORY_WARN_BYTES = 10 * 1024 * 1024;
/** The scheduling-latency goal on loopback (ms). */
export const LATENCY_GOAL_MS = 250;

export interface ScaleOptions {
  /** The spec whose tree is run (a specs/paper/ file). */
  specFile: string;
  /** Fraction of each stage's planned steps (checkpoint cadence kept): 1 = the paper's tree. */
  scale: number;
  /** Only the first N stages of the spec (and only those whose dependencies are among them). */
  maxStages?: number;
  /** Fewer evaluation prompts per category than the eval set holds (default: all of them). */
  promptsPerCategory?: number;
  stepMs: number;
  generateMs: number;
  judgeMs: number;
  /** Concurrent activities on the gpu queue (the simulated GPUs: training and generation). */
  gpuSlots: number;
  /** Give up after this long (ms). */
  timeoutMs: number;
  log?: (line: string) => void;
}

export interface ScaleStage {
  id: string;
  kind: string;
  steps: number;
  checkpointEvery: number;
  /** The steps the scripted trainer announces: multiples of checkpointEvery, then the final step. */
  checkpointSteps: number[];
  evaluated: boolean;
}

/** The stages run and their checkpoints: the plan's steps × scale, at the spec's cadence. */
export function scaledTree(spec: LineageSpec, plan: Plan, scale: number, maxStages?: number): ScaleStage[] {
  const kept = new Set<string>([BASE_STAGE_ID]);
  const out: ScaleStage[] = [];
  for (const s of spec.stages) {
    if (maxStages !== undefined && out.length >= maxStages) break;
    if (!stageDependencies(s).every((d) => kept.has(d))) continue;
    const p = plan.stages.find((x) => x.id === s.id);
    if (!p || p.steps === null) throw new Error(`the plan has no step count for stage ${s.id} (${p?.unknown.join('; ') ?? 'missing'})`);
    const steps = Math.max(1, Math.round(p.steps * scale));
    const checkpointSteps: number[] = [];
    for (let k = s.checkpointEvery; k <= steps; k += s.checkpointEvery) checkpointSteps.push(k);
    if (checkpointSteps.at(-1) !== steps) checkpointSteps.push(steps);
    kept.add(s.id);
    out.push({ id: s.id, kind: s.kind, steps, checkpointEvery: s.checkpointEvery, checkpointSteps, evaluated: s.kind !== 'reward' });
  }
  return out;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Stand-in dataset preparation: the eval set is `rows` real eval rows spread over the spec's topic
 * categories (what generation and the summary read); every other dataset is a one-line placeholder
 * with the declared row count (the stand-in trainer reads nothing).
 */
function scriptedPrepareDatasets(spec: LineageSpec): Activities['prepareDatasets'] {
  const categories = Object.keys(spec.evaluation.topics);
  return async (input: PrepareDatasetsInput) => {
    const datasets: Record<string, PreparedDataset> = {};
    for (const [name, d] of Object.entries(input.datasets)) {
      // A dataset the lineage builds (synthetic pairs) declares no rows: one placeholder row.
      const rows = ('rows' in d ? d.rows : undefined) ?? 1;
      const body =
        name === spec.evaluation.evalSet
          ? toJsonl(Array.from({ length: rows }, (_, i) => ({ id: `q${i}`, category: categories[i % categories.length], question: `Scripted question ${i} on ${categories[i % categories.length]}?` })))
          : toJsonl([{ scripted: name, rows }]);
      const ref = await putBytesOnce(storeKeys.dataset(sha256Hex(body)), body, 'application/x-ndjson');
      datasets[name] = { name, format: d.format, ref, rows };
    }
    return { datasets };
  };
}

export interface WorkflowSize {
  workflowId: string;
  events: number;
  bytes: number;
}

export interface ScaleResult {
  bench: 'scale';
  spec: string;
  lineage: string;
  scale: number;
  script: { stepMs: number; generateMs: number; judgeMs: number; gpuSlots: number; cpuSlots: number; promptsPerCategory: number | null };
  tree: { stages: number; steps: number; checkpoints: number; evaluations: number; samplesPerEvaluation: number };
  wallSeconds: number;
  history: {
    warnEvents: number;
    warnBytes: number;
    lineage: WorkflowSize;
    /** Every stage workflow, largest first. */
    stages: WorkflowSize[];
    evaluations: { count: number; maxEvents: number; maxBytes: number };
    overWarning: string[];
  };
  latencyMs: { goal: number; n: number; p50: number | null; p95: number | null; max: number | null; missing: number };
  overlap: { measured: number; worstRatio: number | null };
  rss: { peakMiB: number; startMiB: number; heapPeakMiB: number };
  loadAverage: { before: number[]; after: number[] };
}

/** Maps over `items` with at most `n` calls in flight. */
async function mapLimit<T, R>(items: readonly T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const run = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i] as T);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, run));
  return out;
}

/**
 * Runs the scaled tree with the given connection (a local dev server or the stack's), and measures.
 * The S3 settings come from this process's environment (the stack's stack.env).
 */
export async function runScale(conn: { client: Client; connection: NativeConnection; namespace: string }, opts: ScaleOptions): Promise<ScaleResult> {
  const log = opts.log ?? (() => undefined);
  const raw = JSON.parse(await fs.readFile(opts.specFile, 'utf8')) as Record<string, unknown>;
  const checked = validateLineageSpec(raw);
  if (!checked.ok) throw new Error(`${opts.specFile}: not a valid lineage spec`);
  const plan = await planLineage(checked.spec);
  const tree = scaledTree(checked.spec, plan, opts.scale, opts.maxStages);
  const byId = new Map(tree.map((s) => [s.id, s]));
  const name = uniqueName(`scale-${path.basename(opts.specFile, '.json')}`);
  const rawEvaluation = raw.evaluation as Record<string, unknown>;
  const input = {
    ...raw,
    name,
    // A fresh seed: no stage or evaluation comes from an earlier run's cache.
    seed: Math.floor(Math.random() * 1e9),
    stages: (raw.stages as Array<{ id: string }>).filter((s) => byId.has(s.id)),
    // The bench measures the orchestration of the stages: a built dataset (V-PRISM, the synthetic
    // pairs, their inputs) stands in as a source of its declared size, and stance analyses (reports
    // no stage reads) are left out.
    datasets: Object.fromEntries(
      Object.entries(checked.spec.datasets).flatMap(([n, d]) => {
        if (!isBuilt(d)) return [[n, (raw.datasets as Record<string, unknown>)[n]]];
        if (d.build === 'stance-analysis') return [];
        return [[n, { uri: `s3://valuedrift/datasets/scripted-${n}.jsonl`, format: d.format, ...(d.rows && { rows: d.rows }) }]];
      }),
    ),
    evaluation: opts.promptsPerCategory === undefined ? rawEvaluation : { ...rawEvaluation, promptsPerCategory: opts.promptsPerCategory },
  };
  const spec = validateLineageSpec(input);
  if (!spec.ok) throw new Error('the scaled spec does not validate');
  const categories = Object.keys(spec.spec.evaluation.topics).length;
  const evalDataset = spec.spec.datasets[spec.spec.evaluation.evalSet];
  const evalRows = (evalDataset && 'rows' in evalDataset ? evalDataset.rows : undefined) ?? 1;
  const prompts = opts.promptsPerCategory === undefined ? evalRows : Math.min(evalRows, opts.promptsPerCategory * categories);
  const samplesPerEvaluation = prompts * spec.spec.evaluation.generationsPerPrompt;

  const fake = fakeActivities({ client: conn.client }, recorder(), (stageId) => {
    const s = byId.get(stageId);
    if (!s) throw new Error(`no scripted plan for stage ${stageId}`);
    const steps = s.checkpointSteps;
    return {
      steps,
      // The scripted trainer heartbeats at each checkpoint as the real one does on its progress
      // events: a whole-tree stage trains for minutes, past the training activity's heartbeat timeout.
      onStart: () => sleep((steps[0] as number) * opts.stepMs),
      after: (_id, step) => {
        Context.current().heartbeat({ step });
        const i = steps.indexOf(step);
        return i + 1 < steps.length ? sleep(((steps[i + 1] as number) - step) * opts.stepMs) : Promise.resolve();
      },
    };
  });
  const activities: Activities = {
    ...fake,
    prepareDatasets: scriptedPrepareDatasets(spec.spec),
    generateResponses: async (i) => {
      await sleep(opts.generateMs);
      return fake.generateResponses(i);
    },
    judgeResponses: async (i) => {
      await sleep(opts.judgeMs);
      return fake.judgeResponses(i);
    },
  };

  const cpuSlots = workerEnv().VALUEDRIFT_CPU_CONCURRENCY;
  const base = { connection: conn.connection, namespace: conn.namespace };
  const workers = [
    await Worker.create({ ...base, taskQueue: TASK_QUEUES.workflows, workflowBundle: await workflowBundle() }),
    await Worker.create({ ...base, taskQueue: TASK_QUEUES.cpu, activities, maxConcurrentActivityTaskExecutions: cpuSlots }),
    await Worker.create({ ...base, taskQueue: TASK_QUEUES.gpu, activities, maxConcurrentActivityTaskExecutions: opts.gpuSlots }),
    // Stages that train on n GPUs have their own queue (common/config.ts gpuTaskQueue).
    ...(await Promise.all(
      [...new Set(spec.spec.stages.map((s) => s.gpus).filter((g) => g > 0))].map((g) =>
        Worker.create({ ...base, taskQueue: gpuTaskQueue(g), activities, maxConcurrentActivityTaskExecutions: opts.gpuSlots }),
      ),
    )),
  ];
  // A worker that stops on its own (a fatal error) ends the run at once instead of at the timeout.
  let workerFailure: ((err: unknown) => void) | undefined;
  const workerFailed = new Promise<never>((_, reject) => (workerFailure = reject));
  workerFailed.catch(() => undefined); // observed by the race below; never an unhandled rejection
  const runs = workers.map((w) => w.run().catch((err: unknown) => workerFailure?.(err)));

  const loadBefore = os.loadavg();
  const startRss = process.memoryUsage().rss;
  let peakRss = startRss;
  let peakHeap = 0;
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 200);

  const evaluations = tree.filter((s) => s.evaluated).reduce((a, s) => a + s.checkpointSteps.length, 0) + 1;
  log(`${name}: ${tree.length} stage(s), ${tree.reduce((a, s) => a + s.steps, 0)} steps, ${evaluations} evaluations of ${samplesPerEvaluation} samples`);
  const t0 = performance.now();
  let wallSeconds: number;
  try {
    const handle = await conn.client.workflow.start('lineageWorkflow', { taskQueue: TASK_QUEUES.workflows, workflowId: workflowIds.lineage(name), args: [input] });
    let timer: NodeJS.Timeout | undefined;
    const progress = setInterval(() => log(`${((performance.now() - t0) / 1000).toFixed(0)} s, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`), 30_000);
    try {
      await Promise.race([
        handle.result(),
        workerFailed,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`lineage ${name} did not finish within ${opts.timeoutMs} ms`)), opts.timeoutMs);
        }),
      ]);
    } catch (err) {
      // Nothing of an abandoned run is left on the queues for the next run's workers to pick up.
      await handle.terminate('scale bench stopped').catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
      clearInterval(progress);
    }
    wallSeconds = (performance.now() - t0) / 1000;
  } finally {
    clearInterval(sampler);
    workers.forEach((w) => {
      if (w.getState() === 'RUNNING') w.shutdown();
    });
    await Promise.all(runs);
  }
  const loadAfter = os.loadavg();
  log(`finished in ${wallSeconds.toFixed(1)} s; reading histories`);

  // Sizes as the server counts them; event times from the histories.
  const size = async (workflowId: string): Promise<WorkflowSize> => {
    const d = await conn.client.workflow.getHandle(workflowId).describe();
    return { workflowId, events: d.historyLength, bytes: d.historySize ?? 0 };
  };
  const fetch = (workflowId: string): Promise<History> => conn.client.workflow.getHandle(workflowId).fetchHistory();
  const lineageId = workflowIds.lineage(name);
  const lineageHistory = await fetch(lineageId);
  const stageIds = stageChildren(lineageHistory);
  const stageHistories = await mapLimit(stageIds, 8, fetch);
  const evalIds = [workflowIds.evaluation(name, BASE_STAGE_ID, 0), ...stageHistories.flatMap((h) => evaluationChildren(h).map((c) => c.workflowId))];
  const latencies: number[] = [];
  let missing = 0;
  const evalHistories = new Map(await mapLimit(evalIds, 8, async (id) => [id, await fetch(id)] as const));
  stageIds.forEach((id, i) => {
    const h = stageHistories[i] as History;
    const announced = announcements(h);
    for (const c of evaluationChildren(h)) {
      const at = announced.get(c.step);
      const started = firstActivityStart(evalHistories.get(c.workflowId) as History);
      if (at === undefined || started === null) missing++;
      else latencies.push(started - at);
    }
  });
  const stageSizes = (await mapLimit(stageIds, 8, size)).sort((a, b) => b.events - a.events);
  const evalSizes = await mapLimit(evalIds, 8, size);
  const lineageSize = await size(lineageId);
  const all = [lineageSize, ...stageSizes, ...evalSizes];
  const overlaps = stageIds.map((id, i) => stageOverlap(id, stageHistories[i] as History)).filter((o) => o.status === 'measured');
  const ratios = overlaps.map((o) => o.ratio as number);
  const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
  return {
    bench: 'scale',
    spec: path.relative(process.cwd(), opts.specFile),
    lineage: name,
    scale: opts.scale,
    script: { stepMs: opts.stepMs, generateMs: opts.generateMs, judgeMs: opts.judgeMs, gpuSlots: opts.gpuSlots, cpuSlots, promptsPerCategory: opts.promptsPerCategory ?? null },
    tree: {
      stages: tree.length,
      steps: tree.reduce((a, s) => a + s.steps, 0),
      checkpoints: tree.reduce((a, s) => a + s.checkpointSteps.length, 0),
      evaluations: evalIds.length,
      samplesPerEvaluation,
    },
    wallSeconds,
    history: {
      warnEvents: HISTORY_WARN_EVENTS,
      warnBytes: HISTORY_WARN_BYTES,
      lineage: lineageSize,
      stages: stageSizes,
      evaluations: { count: evalSizes.length, maxEvents: Math.max(...evalSizes.map((s) => s.events)), maxBytes: Math.max(...evalSizes.map((s) => s.bytes)) },
      overWarning: all.filter((s) => s.events > HISTORY_WARN_EVENTS || s.bytes > HISTORY_WARN_BYTES).map((s) => s.workflowId),
    },
    latencyMs: { goal: LATENCY_GOAL_MS, ...percentiles(latencies), missing },
    overlap: { measured: overlaps.length, worstRatio: ratios.length ? Math.max(...ratios) : null },
    rss: { peakMiB: mib(peakRss), startMiB: mib(startRss), heapPeakMiB: mib(peakHeap) },
    loadAverage: { before: loadBefore.map((x) => Math.round(x * 100) / 100), after: loadAfter.map((x) => Math.round(x * 100) / 100) },
  };
}
