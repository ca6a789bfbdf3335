/**
 * `lineage reevaluate <lineage> [--judge MODEL] [--eval-set URI] [--samples N] [--watch]`: re-judges
 * a finished lineage with another judge, eval set or number of samples per prompt without writing a
 * spec by hand. The original's spec is read from its workflow's input (the first history event),
 * the overrides are applied to its evaluation only, and a derived lineage is started under a
 * predictable name, `<name>--reeval-<hash>`, the hash being that of the derived spec: the same
 * overrides of the same lineage give the same name, so a second call attaches to it while it runs
 * and reports it once it is done. The derived spec's `derivedFrom` names the original and the
 * changes; its report links the original.
 *
 * Training inputs are untouched, so every stage key matches the original's and every stage is served
 * from the stage cache; the evaluation keys differ, so each checkpoint is evaluated afresh (a judge
 * change alone reuses the stored generations: activities/evaluation/keys.ts).
 */
import { createHash } from 'node:crypto';
import { type Client, WorkflowNotFoundError } from '@temporalio/client';
import { canonicalJson } from '../activities/judge/cache';
import { workflowIds } from '../common/config';
import { DatasetUri, EvaluationSpec, formatSpecIssues, isBuilt, JudgeSpec, validateLineageSpec, type DerivedFrom, type LineageSpec } from '../common/spec';
import type { LineageResult } from '../workflows';
import { CliError, UsageError } from './cliArgs';
import { resolveWorkflowId, runningLineageSpec, specDifferences, startLineage } from './lineageClient';

/** What the command line asks to change (each optional; at least one must be a change). */
export interface ReevaluationOverrides {
  /** evaluation.judge.model */
  judge?: string;
  /** The URI of the dataset that evaluation.evalSet names. */
  evalSetUri?: string;
  /** evaluation.generationsPerPrompt */
  samples?: number;
}

/** Between the original's name and the hash of the derived spec. */
export const REEVAL_MARK = '--reeval-';
const HASH_CHARS = 10;
/** The longest lineage name (common/spec.ts Slug). */
const MAX_NAME = 63;

/**
 * Checks the option values against the spec's own schemas, so a bad value is a wrong command line
 * (exit 2) before any server is asked; no option at all is one too.
 */
export function parseOverrides(command: string, raw: { judge?: string | undefined; 'eval-set'?: string | undefined; samples?: string | undefined }): ReevaluationOverrides {
  const out: ReevaluationOverrides = {};
  if (raw.judge !== undefined) {
    const v = JudgeSpec.shape.model.safeParse(raw.judge);
    if (!v.success || raw.judge.trim() !== raw.judge) throw new UsageError(`${command}: --judge must be a model name of 1–200 characters without surrounding spaces (got "${raw.judge}")`);
    out.judge = raw.judge;
  }
  if (raw['eval-set'] !== undefined) {
    const v = DatasetUri.safeParse(raw['eval-set']);
    if (!v.success) throw new UsageError(`${command}: --eval-set ${v.error.issues[0]?.message ?? 'is not a dataset URI'} (got "${raw['eval-set']}")`);
    out.evalSetUri = v.data;
  }
  if (raw.samples !== undefined) {
    const n = raw.samples.trim() === '' ? Number.NaN : Number(raw.samples);
    const v = EvaluationSpec.shape.generationsPerPrompt.safeParse(n);
    if (!v.success) throw new UsageError(`${command}: --samples must be an integer from 1 to 100 (got "${raw.samples}")`);
    out.samples = v.data;
  }
  if (Object.keys(out).length === 0) throw new UsageError(`${command}: nothing to change: give --judge, --eval-set or --samples (see: ${command} --help)`);
  return out;
}

export interface Reevaluation {
  /** The derived spec (validated, defaults filled in), as the derived lineage's workflow gets it. */
  spec: LineageSpec;
  derivedFrom: DerivedFrom;
}

/** `<original>--reeval-<hash>`, the original's name shortened so the whole stays a valid name. */
export function derivedName(original: string, specWithoutName: unknown): string {
  const hash = createHash('sha256').update(canonicalJson(specWithoutName)).digest('hex').slice(0, HASH_CHARS);
  const room = MAX_NAME - REEVAL_MARK.length - HASH_CHARS;
  const prefix = original.length <= room ? original : original.slice(0, room).replace(/-+$/, '');
  return `${prefix}${REEVAL_MARK}${hash}`;
}

/**
 * The derived spec: the original with the overrides applied to its evaluation (judge model, eval
 * set URI, samples per prompt) and nothing else, named after the original and what changed. An
 * override equal to the original's value is no change; none left is a UsageError.
 */
export function deriveReevaluation(command: string, original: LineageSpec, o: ReevaluationOverrides): Reevaluation {
  const spec = structuredClone(original);
  const changes: DerivedFrom['changes'] = [];
  const same: string[] = [];
  if (o.judge !== undefined) {
    if (o.judge === original.evaluation.judge.model) same.push(`--judge ${o.judge}`);
    else {
      changes.push({ field: 'evaluation.judge.model', from: original.evaluation.judge.model, to: o.judge });
      spec.evaluation.judge.model = o.judge;
    }
  }
  if (o.evalSetUri !== undefined) {
    const name = original.evaluation.evalSet;
    const ds = Object.hasOwn(original.datasets, name) ? original.datasets[name] : undefined;
    if (!ds) throw new CliError(`lineage ${original.name}: its eval set "${name}" is not among its datasets`);
    if (isBuilt(ds)) throw new CliError(`lineage ${original.name}: its eval set "${name}" is built (${ds.build}), not read from a URI; --eval-set cannot replace it`);
    if (o.evalSetUri === ds.uri) same.push(`--eval-set ${o.evalSetUri}`);
    else {
      changes.push({ field: `datasets.${name}.uri`, from: ds.uri, to: o.evalSetUri });
      spec.datasets[name] = { ...ds, uri: o.evalSetUri };
    }
  }
  if (o.samples !== undefined) {
    if (o.samples === original.evaluation.generationsPerPrompt) same.push(`--samples ${o.samples}`);
    else {
      changes.push({ field: 'evaluation.generationsPerPrompt', from: original.evaluation.generationsPerPrompt, to: o.samples });
      spec.evaluation.generationsPerPrompt = o.samples;
    }
  }
  if (changes.length === 0) {
    throw new UsageError(`${command}: nothing to change: lineage ${original.name} was already evaluated with ${same.join(', ')}`);
  }
  const derivedFrom: DerivedFrom = { lineage: original.name, changes };
  spec.derivedFrom = derivedFrom;
  const { name: _name, ...rest } = spec;
  spec.name = derivedName(original.name, rest);
  const checked = validateLineageSpec(spec);
  if (!checked.ok) throw new CliError(`the re-evaluation of ${original.name} is not a valid spec: ${formatSpecIssues(checked.issues)}`);
  return { spec: checked.spec, derivedFrom };
}

/** The finished lineage's spec, from its workflow's input; a CliError naming it when there is none. */
export async function finishedLineageSpec(client: Client, idOrName: string): Promise<LineageSpec> {
  const workflowId = resolveWorkflowId(idOrName);
  let status: string;
  try {
    status = (await client.workflow.getHandle(workflowId).describe()).status.name;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new CliError(`no lineage ${idOrName} to re-evaluate (no workflow ${workflowId})`);
    throw err;
  }
  if (status === 'RUNNING') throw new CliError(`lineage ${idOrName} has not finished (${workflowId} is still running); re-evaluate it once it is done`);
  if (status !== 'COMPLETED') throw new CliError(`lineage ${idOrName} has not finished (${workflowId} is ${status.toLowerCase()}); only a finished lineage can be re-evaluated`);
  const spec = await runningLineageSpec(client, workflowId);
  if (!spec) throw new CliError(`lineage ${idOrName} has no stored spec: the input of ${workflowId} is not a valid lineage spec`);
  return spec;
}

export interface ReevaluateResult {
  workflowId: string;
  name: string;
  state: 'started' | 'already running' | 'already done';
  derivedFrom: DerivedFrom;
  /** The derived lineage's report, when it is already done. */
  report?: string;
}

/**
 * Starts (or finds) the derived lineage: a finished one with the same spec is reported, not run
 * again; a running one is attached to (startLineage compares the specs); otherwise it is started.
 */
export async function reevaluate(client: Client, command: string, idOrName: string, overrides: ReevaluationOverrides): Promise<ReevaluateResult> {
  const original = await finishedLineageSpec(client, idOrName);
  const { spec, derivedFrom } = deriveReevaluation(command, original, overrides);
  const workflowId = workflowIds.lineage(spec.name);
  const handle = client.workflow.getHandle(workflowId);
  const status = await handle.describe().then(
    (d) => d.status.name,
    (err: unknown) => {
      if (err instanceof WorkflowNotFoundError) return undefined;
      throw err;
    },
  );
  if (status === 'COMPLETED') {
    const done = await runningLineageSpec(client, workflowId);
    if (done && specDifferences(done, spec).length === 0) {
      const result = (await handle.result()) as LineageResult;
      return { workflowId, name: spec.name, state: 'already done', derivedFrom, report: result.report.uri };
    }
  }
  const started = await startLineage(client, spec);
  return { workflowId, name: spec.name, state: started.alreadyRunning ? 'already running' : 'started', derivedFrom };
}

/** `field: from → to; …` for the command's output. */
export function describeChanges(d: DerivedFrom): string {
  return d.changes.map((c) => `${c.field}: ${String(c.from)} → ${String(c.to)}`).join('; ');
}
