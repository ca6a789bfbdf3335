/**
 * Built datasets as nodes of the lineage DAG. `buildDatasetWorkflow` builds one dataset from prepared
 * inputs (the lineage starts it as a child before the stages that use it); `datasetWorkflow` builds
 * one entry of a lineage spec on its own (CLI `lineage build-dataset`, or the Temporal UI's start
 * form: one JSON object `{ "spec": {...}, "dataset": "<name>" }`), preparing what it needs first.
 * Both are content-keyed and cached like a stage: a build whose key has a record in the store is
 * not run again.
 */
import { ApplicationFailure, executeChild, ParentClosePolicy, proxyActivities, workflowInfo } from '@temporalio/workflow';
import { z } from 'zod';
import type { DerivedActivities } from '../activities/derived';
import type { PreparedDataset } from '../activities/datasets';
import type { DerivedRecord } from '../activities/derived/syntheticPairs';
import { TASK_QUEUES } from '../common/config';
import {
  buildOrder,
  BuiltDatasetSpec,
  datasetClosure,
  EvaluationSpec,
  formatSpecIssues,
  isBuilt,
  JudgeSpec,
  Slug,
  validateLineageSpec,
  type DatasetSpec,
  type LineageSpec,
  type StanceAnalysisBuild,
  type VPrismBuild,
} from '../common/spec';
import { datasets as datasetActivities } from './proxies';

/** Key lookup and writing the result: store work and judge/generator calls (cpu queue); they heartbeat. */
const derivedCpu = proxyActivities<Pick<DerivedActivities, 'resolveDerivedDataset' | 'writeStancePairs' | 'resolveStanceAnalysis' | 'writeStanceAnalysis' | 'buildConcat'>>({
  taskQueue: TASK_QUEUES.cpu,
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '10 minutes', maximumAttempts: 20 },
});
/** Embedding needs the trainer's Python (sentence-transformers), which the gpu role has. */
const derivedEmbed = proxyActivities<Pick<DerivedActivities, 'selectStancePrompts' | 'retrieveStanceAnalysis'>>({
  taskQueue: TASK_QUEUES.gpu,
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 10 },
});

/** V-PRISM's generator steps (cpu) and its clustering in the trainer's Python (gpu, like the selector). */
const vprismCpu = proxyActivities<Pick<DerivedActivities, 'resolveVPrism' | 'rephraseVPrism' | 'writeVPrism'>>({
  taskQueue: TASK_QUEUES.cpu,
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '10 minutes', maximumAttempts: 20 },
});
const derivedEmbedVPrism = proxyActivities<Pick<DerivedActivities, 'clusterVPrism'>>({
  taskQueue: TASK_QUEUES.gpu,
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '10s', backoffCoefficient: 2, maximumInterval: '5 minutes', maximumAttempts: 10 },
});

const Ref = z.strictObject({ uri: z.string().min(1), sha256: z.string().regex(/^[0-9a-f]{64}$/), bytes: z.number().int().nonnegative() });
const Prepared = z.object({ name: z.string(), format: z.enum(['chat', 'preference', 'stance-pairs', 'prompts', 'eval', 'analysis']), ref: Ref, rows: z.number().int().nonnegative() });

export const BuildDatasetInput = z.strictObject({
  lineage: Slug,
  name: Slug,
  build: BuiltDatasetSpec,
  /** Role in `build.from` → that dataset, prepared. */
  sources: z.record(z.string(), Prepared),
  topics: EvaluationSpec.shape.topics,
  judge: JudgeSpec,
  seed: z.number().int().min(0),
});
export type BuildDatasetInput = z.input<typeof BuildDatasetInput>;

export interface BuildDatasetResult {
  name: string;
  buildKey: string;
  cached: boolean;
  dataset: PreparedDataset;
  outputs: DerivedRecord['outputs'];
  counts: DerivedRecord['counts'];
}

function invalid(what: string, err: z.ZodError): never {
  throw ApplicationFailure.nonRetryable(`invalid ${what}: ${err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`, 'InvalidDatasetBuild');
}

/** A build's result from its record (which may come from a build of another lineage or name: the dataset is this entry). */
function builtResult(name: string, buildKey: string, record: DerivedRecord, cached: boolean): BuildDatasetResult {
  return { name, buildKey, cached, dataset: { ...(record.dataset as PreparedDataset), name }, outputs: record.outputs, counts: record.counts };
}

/** Builds one dataset from its prepared inputs; served from the build cache when its key has a record. */
export async function buildDatasetWorkflow(raw: unknown): Promise<BuildDatasetResult> {
  const parsed = BuildDatasetInput.safeParse(raw);
  if (!parsed.success) invalid('dataset build input', parsed.error);
  const input = parsed.data;
  const roles = Object.keys(input.build.from);
  const missing = roles.filter((r) => !Object.hasOwn(input.sources, r));
  if (missing.length) throw ApplicationFailure.nonRetryable(`dataset "${input.name}": no prepared input for ${missing.join(', ')}`, 'InvalidDatasetBuild');
  if (input.build.build === 'stance-analysis') return buildStanceAnalysis({ ...input, build: input.build });
  if (input.build.build === 'v-prism') return buildVPrism({ ...input, build: input.build });
  if (input.build.build === 'concat') {
    // One activity: it looks up the key's record itself and streams the rows only when there is none.
    const r = await derivedCpu.buildConcat({ name: input.name, build: input.build, sources: input.sources, seed: input.seed });
    return builtResult(input.name, r.buildKey, r.record, r.cached);
  }
  const base = { name: input.name, build: input.build, sources: input.sources, topics: input.topics, judge: input.judge, seed: input.seed };
  const resolved = await derivedCpu.resolveDerivedDataset(base);
  const done = (record: DerivedRecord, cached: boolean) => builtResult(input.name, resolved.buildKey, record, cached);
  if (resolved.cached) return done(resolved.cached, true);
  const prompts = input.sources.prompts as PreparedDataset;
  const selection = await derivedEmbed.selectStancePrompts({
    buildKey: resolved.buildKey,
    prompts,
    questions: input.sources.questions as PreparedDataset,
    categories: Object.keys(input.topics).sort(),
    perCategory: input.build.promptsPerCategory,
  });
  const written = await derivedCpu.writeStancePairs({ ...base, buildKey: resolved.buildKey, prompts, selection });
  return done(written.record, false);
}

/** A stance analysis (App. K): retrieval on the gpu queue, judging and the report on the cpu queue. */
async function buildStanceAnalysis(input: z.infer<typeof BuildDatasetInput> & { build: StanceAnalysisBuild }): Promise<BuildDatasetResult> {
  const base = { name: input.name, build: input.build, sources: input.sources, topics: input.topics, judge: input.judge, seed: input.seed };
  const resolved = await derivedCpu.resolveStanceAnalysis(base);
  const done = (record: DerivedRecord, cached: boolean) => builtResult(input.name, resolved.buildKey, record, cached);
  if (resolved.cached) return done(resolved.cached, true);
  const dataset = input.sources.dataset as PreparedDataset;
  const retrieval = await derivedEmbed.retrieveStanceAnalysis({
    buildKey: resolved.buildKey,
    dataset,
    questions: input.sources.questions as PreparedDataset,
    categories: Object.keys(input.topics).sort(),
    threshold: input.build.threshold,
  });
  const written = await derivedCpu.writeStanceAnalysis({ ...base, buildKey: resolved.buildKey, dataset, retrieval });
  return done(written.record, false);
}

/** V-PRISM (App. A.1): rephrasing, naming and the value check on the cpu queue, clustering on the gpu queue. */
async function buildVPrism(input: z.infer<typeof BuildDatasetInput> & { build: VPrismBuild }): Promise<BuildDatasetResult> {
  const base = { name: input.name, build: input.build, sources: input.sources, topics: input.topics, seed: input.seed };
  const resolved = await vprismCpu.resolveVPrism(base);
  const done = (record: DerivedRecord, cached: boolean) => builtResult(input.name, resolved.buildKey, record, cached);
  if (resolved.cached) return done(resolved.cached, true);
  const buildKey = resolved.buildKey;
  const rephrased = await vprismCpu.rephraseVPrism({ buildKey, name: input.name, build: input.build, statements: input.sources.statements as PreparedDataset });
  const clusters = await derivedEmbedVPrism.clusterVPrism({ buildKey, build: input.build, questions: rephrased.questions, topics: input.topics, seed: input.seed });
  const written = await vprismCpu.writeVPrism({ buildKey, name: input.name, build: input.build, questions: rephrased.questions, clusters, topics: input.topics, seed: input.seed, counts: rephrased.counts });
  return done(written.record, false);
}

/**
 * Builds `names` (in build order) from the datasets prepared so far, each as a child workflow
 * `<prefix>/dataset:<name>`; returns them prepared. Used by the lineage and by `datasetWorkflow`.
 */
export async function buildDatasets(
  spec: LineageSpec,
  names: string[],
  prepared: Record<string, PreparedDataset>,
  prefix: string,
): Promise<Record<string, BuildDatasetResult>> {
  const out: Record<string, BuildDatasetResult> = {};
  const all: Record<string, PreparedDataset> = { ...prepared };
  for (const name of names) {
    const d = spec.datasets[name];
    if (!d || !isBuilt(d)) continue;
    const sources = Object.fromEntries(Object.entries(d.from).map(([role, src]) => [role, all[src] as PreparedDataset]));
    const r = await executeChild(buildDatasetWorkflow, {
      workflowId: `${prefix}/dataset:${name}`,
      taskQueue: TASK_QUEUES.workflows,
      parentClosePolicy: ParentClosePolicy.TERMINATE,
      args: [{ lineage: spec.name, name, build: d, sources, topics: spec.evaluation.topics, judge: spec.evaluation.judge, seed: spec.seed } satisfies BuildDatasetInput],
    });
    out[name] = r;
    all[name] = r.dataset;
  }
  return out;
}

/** A spec's source (not built) entries among `names`. */
export function sourceDatasets(spec: LineageSpec, names: readonly string[]): Record<string, DatasetSpec> {
  return Object.fromEntries(names.flatMap((n) => {
    const d = spec.datasets[n];
    return d && !isBuilt(d) ? [[n, d] as const] : [];
  }));
}

export const DatasetWorkflowInput = z.strictObject({ spec: z.unknown(), dataset: Slug });

export interface DatasetWorkflowResult {
  lineage: string;
  dataset: string;
  built: Record<string, BuildDatasetResult>;
}

/** Builds one `datasets` entry of a lineage spec, and the built entries it needs, on its own. */
export async function datasetWorkflow(raw: unknown): Promise<DatasetWorkflowResult> {
  const parsed = DatasetWorkflowInput.safeParse(raw);
  if (!parsed.success) invalid('dataset workflow input (want {"spec": {...}, "dataset": "<name>"})', parsed.error);
  const checked = validateLineageSpec(parsed.data.spec);
  if (!checked.ok) throw ApplicationFailure.nonRetryable(`invalid lineage spec: ${formatSpecIssues(checked.issues)}`, 'InvalidLineageSpec', checked.issues);
  const spec = checked.spec;
  const name = parsed.data.dataset;
  const entry = Object.hasOwn(spec.datasets, name) ? spec.datasets[name] : undefined;
  if (!entry) throw ApplicationFailure.nonRetryable(`dataset "${name}" is not in the spec's datasets`, 'InvalidDatasetBuild');
  if (!isBuilt(entry)) throw ApplicationFailure.nonRetryable(`dataset "${name}" is read from ${entry.uri}, not built; only a dataset with "build" is built`, 'InvalidDatasetBuild');
  const needed = datasetClosure(spec, name);
  const { datasets } = await datasetActivities.prepareDatasets({ lineage: spec.name, datasets: sourceDatasets(spec, needed), seed: spec.seed });
  const order = buildOrder(spec).filter((n) => needed.includes(n));
  const built = await buildDatasets(spec, order, datasets, workflowInfo().workflowId);
  return { lineage: spec.name, dataset: name, built };
}
