/**
 * `lineage compare <lineage|spec>...`: finished lineages side by side. Each argument is a lineage
 * name, its workflow ID (valuedrift/<name>) or a spec file (its `name` is the lineage). For every
 * lineage the command reads the workflow's result (per stage the drift.json reference), each
 * stage's drift.json from the store (checked against its sha256; its trajectories are the
 * per-checkpoint summaries' v and 95 % intervals), and the spec the workflow was started with (for
 * the column labels: algorithm × dataset). It prints a table laid out like the paper's Tab. 1 (or
 * one JSON document), writes one HTML page to the store under `compare/<name>/index.html`, beside
 * the lineages' own reports, and copies it to `<out>/compare/<name>/index.html`.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { type Client, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { z } from 'zod';
import { ALGORITHM_NAMES, comparedCategories, type CompareStage, driftArrow, renderComparePage, stageLabel } from '../activities/report/compare';
import { getVerified, parseUri, s3ClientFor, sha256Hex } from '../activities/store';
import { workflowIds } from '../common/config';
import { ArtifactRef, STANCES, StageDrift } from '../common/contracts';
import { formatSigned } from '../common/drift';
import { Slug, type LineageSpec } from '../common/spec';
import { CliError } from './cliArgs';
import type { CliSettings } from './cliSettings';
import { readSpecFile, runningLineageSpec } from './lineageClient';

/** One command-line argument, resolved to the lineage it names. */
export interface CompareInput {
  arg: string;
  lineage: string;
  workflowId: string;
  /** Set when the argument was a spec file. */
  specFile?: string;
}

const WORKFLOW_PREFIX = workflowIds.lineage('');

/**
 * A workflow ID (`valuedrift/<name>`) or a lineage name (a slug) as it is; anything else, i.e. with
 * a "." or "/" in it, is read as a spec file (a CliError when it does not read, parse or validate).
 * A lineage named twice is compared once.
 */
export async function resolveCompareInputs(args: readonly string[]): Promise<CompareInput[]> {
  const out: CompareInput[] = [];
  for (const arg of args) {
    let input: CompareInput;
    if (arg.startsWith(WORKFLOW_PREFIX)) {
      const lineage = arg.slice(WORKFLOW_PREFIX.length);
      if (!Slug.safeParse(lineage).success) throw new CliError(`${arg} is not a lineage workflow ID (valuedrift/<lineage name>)`);
      input = { arg, lineage, workflowId: arg };
    } else if (Slug.safeParse(arg).success) {
      input = { arg, lineage: arg, workflowId: workflowIds.lineage(arg) };
    } else {
      const spec = await readSpecFile(arg);
      input = { arg, lineage: spec.name, workflowId: workflowIds.lineage(spec.name), specFile: arg };
    }
    if (!out.some((o) => o.workflowId === input.workflowId)) out.push(input);
  }
  return out;
}

/** What the CLI needs of a lineage workflow's result (workflows/lineage.ts LineageResult), checked. */
const FinishedLineage = z.object({
  lineage: z.string(),
  report: ArtifactRef,
  stages: z.array(z.object({ stageId: z.string(), kind: z.string(), totalSteps: z.number().int().nonnegative(), drift: ArtifactRef.nullable() })),
});
type FinishedLineage = z.infer<typeof FinishedLineage>;

export interface LoadedLineage {
  input: CompareInput;
  result: FinishedLineage;
  /** The spec the workflow was started with; undefined when its input does not validate any more. */
  spec: LineageSpec | undefined;
}

/** A finished lineage's result and spec; a missing, running or failed lineage is a one-line CliError. */
export async function loadFinishedLineage(client: Client, input: CompareInput): Promise<LoadedLineage> {
  const { workflowId, lineage } = input;
  const handle = client.workflow.getHandle(workflowId);
  const d = await handle.describe().catch((err: unknown) => {
    if (err instanceof WorkflowNotFoundError) {
      throw new CliError(`no lineage workflow ${workflowId}${input.specFile ? ` (the lineage of ${input.specFile}; start it with: npm run lineage -- start ${input.specFile})` : ''}`);
    }
    throw err;
  });
  if (d.status.name === 'RUNNING') throw new CliError(`${workflowId} is still running; compare finished lineages only (see: npm run lineage -- status ${lineage})`);
  let raw: unknown;
  try {
    raw = await handle.result();
  } catch (err) {
    if (err instanceof WorkflowFailedError) throw new CliError(`${workflowId} failed: ${err.cause?.message ?? err.message}`);
    throw err;
  }
  const parsed = FinishedLineage.safeParse(raw);
  if (!parsed.success) throw new CliError(`${workflowId} did not return a lineage result (${parsed.error.issues[0]?.message ?? 'invalid'})`);
  if (parsed.data.lineage !== lineage) throw new CliError(`${workflowId} returned the result of lineage ${parsed.data.lineage}, not ${lineage}`);
  return { input, result: parsed.data, spec: await runningLineageSpec(client, workflowId) };
}

/** Each policy stage of a loaded lineage with its drift.json (verified) and its label's parts. */
export async function comparedStages(loaded: LoadedLineage, s3: S3Client): Promise<Array<CompareStage & { driftRef: ArtifactRef }>> {
  const { result, spec, input } = loaded;
  const withDrift = result.stages.filter((s): s is typeof s & { drift: ArtifactRef } => s.drift !== null);
  if (withDrift.length === 0) throw new CliError(`${input.workflowId} has no stage with drift (reward stages have none)`);
  return Promise.all(
    withDrift.map(async (s) => {
      let drift: StageDrift;
      try {
        drift = StageDrift.parse(JSON.parse((await getVerified(s.drift, s3)).toString('utf8')));
      } catch (err) {
        throw new CliError(`${input.workflowId}: cannot read the drift of stage ${s.stageId} (${s.drift.uri}): ${(err as Error).message.split('\n')[0]}`);
      }
      if (drift.lineage !== result.lineage || drift.stageId !== s.stageId) {
        throw new CliError(`${input.workflowId}: ${s.drift.uri} holds the drift of ${drift.lineage}/${drift.stageId}, not ${result.lineage}/${s.stageId}`);
      }
      const stageSpec = spec?.stages.find((x) => x.id === s.stageId);
      return {
        key: `${result.lineage}/${s.stageId}`,
        lineage: result.lineage,
        stageId: s.stageId,
        kind: s.kind,
        dataset: stageSpec?.dataset ?? null,
        alignment: stageSpec && 'alignment' in stageSpec ? stageSpec.alignment : null,
        drift,
        driftRef: s.drift,
      };
    }),
  );
}

/** `compare --json`: the lineages, the column groups, per topic and stage the drift.json entry as stored. */
export interface CompareJson {
  lineages: Array<{ lineage: string; workflowId: string; report: ArtifactRef }>;
  stages: Array<{
    /** The column group's number in the terminal table ([1], [2], …). */
    index: number;
    key: string;
    lineage: string;
    stageId: string;
    kind: string;
    algorithm: string;
    dataset: string | null;
    alignment: string | null;
    label: string;
    totalSteps: number;
    steps: number[];
    drift: ArtifactRef;
  }>;
  /** category → stage key → drift.json's `topics[category]` of that stage (absent: the stage has none). */
  topics: Record<string, Record<string, StageDrift['topics'][string]>>;
  /** The comparison page in the store and its local copy. */
  page: ArtifactRef;
  localCopy: string;
}

/** The page's folder name: the sorted lineage names joined by "+", or a hash of them when long. */
export function compareName(lineages: readonly string[]): string {
  const joined = [...new Set(lineages)].sort().join('+');
  return joined.length <= 150 ? joined : `sha256-${sha256Hex(joined).slice(0, 24)}`;
}

/** Store key of a comparison page (the lineages' own layout is common/config.ts storeKeys). */
export function compareKey(name: string): string {
  return `compare/${name}/index.html`;
}

async function putPage(s3: S3Client, bucketName: string, key: string, html: string): Promise<ArtifactRef> {
  const body = Buffer.from(html, 'utf8');
  const sha256 = sha256Hex(body);
  await s3.send(new PutObjectCommand({ Bucket: bucketName, Key: key, Body: body, ContentType: 'text/html; charset=utf-8', Metadata: { sha256 } }));
  return { uri: `s3://${bucketName}/${key}`, sha256, bytes: body.length };
}

/**
 * Loads every lineage, renders and stores the page (in the bucket of the first lineage's report),
 * copies it to `<outDir>/compare/<name>/index.html` and returns the JSON document.
 */
export async function compareLineages(input: { client: Client; inputs: readonly CompareInput[]; outDir: string; settings: CliSettings; now?: Date }): Promise<CompareJson> {
  const { client, inputs, outDir, settings } = input;
  // Sequential: the first lineage that is missing, running or failed is the error reported.
  const loaded: LoadedLineage[] = [];
  for (const i of inputs) loaded.push(await loadFinishedLineage(client, i));
  const s3 = s3ClientFor(settings);
  try {
    const stages = (await Promise.all(loaded.map((l) => comparedStages(l, s3)))).flat();
    const { html } = await renderComparePage({ stages: stages.map(({ driftRef: _ref, ...s }) => s), generatedAt: (input.now ?? new Date()).toISOString() });
    const first = loaded[0] as LoadedLineage;
    const name = compareName(loaded.map((l) => l.result.lineage));
    const page = await putPage(s3, parseUri(first.result.report.uri).bucket, compareKey(name), html);
    const localCopy = path.join(outDir, 'compare', name, 'index.html');
    await fs.mkdir(path.dirname(localCopy), { recursive: true });
    await fs.writeFile(localCopy, html);
    const topics: CompareJson['topics'] = {};
    for (const category of comparedCategories(stages)) {
      const row: CompareJson['topics'][string] = {};
      for (const s of stages) {
        const entry = s.drift.topics[category];
        if (entry) row[s.key] = entry;
      }
      topics[category] = row;
    }
    return {
      lineages: loaded.map((l) => ({ lineage: l.result.lineage, workflowId: l.input.workflowId, report: l.result.report })),
      stages: stages.map((s, i) => ({
        index: i + 1,
        key: s.key,
        lineage: s.lineage,
        stageId: s.stageId,
        kind: s.kind,
        algorithm: ALGORITHM_NAMES[s.kind] ?? s.kind,
        dataset: s.dataset,
        alignment: s.alignment,
        label: stageLabel(s),
        totalSteps: s.drift.totalSteps,
        steps: s.drift.steps,
        drift: s.driftRef,
      })),
      topics,
      page,
      localCopy,
    };
  } finally {
    s3.destroy();
  }
}

/**
 * The terminal table, laid out like the paper's Tab. 1: one column group per compared stage
 * ("[n] DPO"; the legend above the table names lineage/stage and algorithm × dataset), three rows per
 * topic (support, neutral, oppose), in each group M with ↑/↓/→ and η. "–": the stage has no
 * labelled generations for that topic.
 */
export function formatCompareTable(doc: CompareJson): string {
  const lines: string[] = [];
  const keyWidth = Math.max(...doc.stages.map((s) => s.key.length));
  for (const s of doc.stages) {
    lines.push(`[${s.index}] ${s.key.padEnd(keyWidth)}  ${s.label}  (${s.totalSteps} steps)`);
  }
  lines.push('');
  const categories = Object.keys(doc.topics);
  const topicWidth = Math.max('topic'.length, ...categories.map((c) => c.length));
  const stanceWidth = Math.max(...STANCES.map((s) => s.length));
  const mWidth = 6; // "↑+0.25"
  const etaWidth = 4; // "0.50"
  const groupName = (s: CompareJson['stages'][number]): string => `[${s.index}] ${s.algorithm}`;
  const groupWidth = Math.max(mWidth + 2 + etaWidth, ...doc.stages.map((s) => groupName(s).length));
  const row = (topic: string, stance: string, groups: string[]): string => `${topic.padEnd(topicWidth)}  ${stance.padEnd(stanceWidth)}${groups.map((g) => `   ${g}`).join('')}`.trimEnd();
  const cell = (m: string, eta: string): string => `${m.padStart(groupWidth - etaWidth - 2)}  ${eta.padStart(etaWidth)}`;
  lines.push(row('', '', doc.stages.map((s) => groupName(s).padStart(groupWidth))));
  lines.push(row('topic', 'stance', doc.stages.map(() => cell('M', 'η'))));
  lines.push(row('-'.repeat(topicWidth), '-'.repeat(stanceWidth), doc.stages.map(() => '-'.repeat(groupWidth))));
  if (categories.length === 0) lines.push('(no topics with labelled generations)');
  for (const category of categories) {
    STANCES.forEach((stance, i) => {
      const groups = doc.stages.map((s) => {
        const sd = doc.topics[category]?.[s.key]?.stances[stance];
        return sd ? cell(`${driftArrow(sd.M)}${formatSigned(sd.M)}`, sd.eta.toFixed(2)) : cell('–', '–');
      });
      lines.push(row(i === 0 ? category : '', stance, groups));
    });
  }
  return `${lines.join('\n')}\n`;
}

/** The text output: the table, then where the page went. */
export function renderCompareText(doc: CompareJson): string {
  return `${formatCompareTable(doc)}\npage: ${doc.page.uri}\nlocal copy: ${doc.localCopy}\n`;
}
