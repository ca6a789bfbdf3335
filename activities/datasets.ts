/**
 * Datasets: read by reference (`file:`, `s3://`, `hf:`), validated row by row, normalised and
 * stored content-addressed (`datasets/<sha256>.jsonl`), so a stage's cache key can include the
 * exact bytes it trained on. Stage-specific shaping (chosen/rejected from a stance-pairs set) is a
 * pure function applied when the trainer's input file is written.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { ApplicationFailure } from '@temporalio/common';
import type { ArtifactRef } from '../common/contracts';
import { storeKeys } from '../common/config';
import type { Alignment, DatasetFormat, DatasetSpec, StageSpec } from '../common/spec';
import { activityContext } from './context';
import { workerEnv } from './env';
import { exists, getBytes, putBytes, sha256Hex, uriOf } from './store';

const Turn = z.object({ role: z.enum(['system', 'user', 'assistant']), content: z.string() });
const TextOrTurns = z.union([z.string().min(1), z.array(Turn).min(1)]);

export const RowSchemas = {
  chat: z.object({ messages: z.array(Turn).min(2) }),
  preference: z.object({ prompt: TextOrTurns, chosen: TextOrTurns, rejected: TextOrTurns }),
  'stance-pairs': z.object({
    id: z.string().optional(),
    category: z.string().optional(),
    prompt: z.string().min(1),
    support: z.string().min(1),
    oppose: z.string().min(1),
  }),
  prompts: z.object({ prompt: TextOrTurns }),
  eval: z.object({ id: z.string().min(1), category: z.string().min(1), question: z.string().min(1) }),
} satisfies Record<DatasetFormat, z.ZodType>;

export interface PreparedDataset {
  name: string;
  format: DatasetFormat;
  ref: ArtifactRef;
  rows: number;
}

export interface PrepareDatasetsInput {
  lineage: string;
  datasets: Record<string, DatasetSpec>;
  seed: number;
}
export interface PrepareDatasetsResult {
  datasets: Record<string, PreparedDataset>;
}

/** Parses JSONL and checks every row; the error names the dataset, the line and the field. */
export function parseRows(name: string, format: DatasetFormat, text: string): unknown[] {
  const schema = RowSchemas[format];
  const rows: unknown[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      throw datasetError(`dataset "${name}" line ${i + 1}: not valid JSON`);
    }
    const r = schema.safeParse(obj);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw datasetError(`dataset "${name}" line ${i + 1}: ${issue?.path.join('.') || '(row)'}: ${issue?.message} (format ${format})`);
    }
    rows.push(r.data);
  });
  if (rows.length === 0) throw datasetError(`dataset "${name}" is empty`);
  return rows;
}

function datasetError(message: string): ApplicationFailure {
  // The same bytes give the same refusal: retrying cannot help.
  return ApplicationFailure.nonRetryable(message, 'DatasetSchemaError');
}

/** Deterministic seeded order (hash of seed + index), so `limit` picks the same rows every time. */
export function seededSample<T>(rows: T[], limit: number | undefined, seed: number): T[] {
  if (limit === undefined || limit >= rows.length) return rows;
  return rows
    .map((r, i) => ({ r, k: sha256Hex(`${seed}:${i}`) }))
    .sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0))
    .slice(0, limit)
    .map((x) => x.r);
}

async function readSource(name: string, spec: DatasetSpec): Promise<string> {
  const env = workerEnv();
  if (spec.uri.startsWith('file:')) {
    const root = path.resolve(env.dataRoot);
    const file = path.resolve(root, spec.uri.slice('file:'.length));
    if (!file.startsWith(root + path.sep)) throw datasetError(`dataset "${name}": ${spec.uri} escapes the data root`);
    try {
      // What the name finally points at must be a regular file inside the root: not a folder (a retry
      // reads the same folder), not a FIFO or device (a read that never ends), not a symlink out.
      const real = await fs.realpath(file);
      const realRoot = await fs.realpath(root);
      if (!real.startsWith(realRoot + path.sep)) throw datasetError(`dataset "${name}": ${spec.uri} resolves (through a link) outside the data root`);
      const st = await fs.stat(real);
      if (st.isDirectory()) throw ApplicationFailure.nonRetryable(`dataset "${name}": ${file} is a directory; a file: dataset names one JSONL file`, 'DatasetNotAFile');
      if (!st.isFile()) throw ApplicationFailure.nonRetryable(`dataset "${name}": ${file} is not a regular file`, 'DatasetNotAFile');
      return await fs.readFile(real, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw ApplicationFailure.nonRetryable(`dataset "${name}": file not found: ${file}`, 'DatasetNotFound');
      }
      if (code === 'EISDIR') throw ApplicationFailure.nonRetryable(`dataset "${name}": ${file} is a directory; a file: dataset names one JSONL file`, 'DatasetNotAFile');
      throw err;
    }
  }
  if (spec.uri.startsWith('s3://')) {
    if (!(await exists(spec.uri))) throw ApplicationFailure.nonRetryable(`dataset "${name}": ${spec.uri} does not exist`, 'DatasetNotFound');
    return (await getBytes(spec.uri)).toString('utf8');
  }
  return exportHubDataset(name, spec);
}

/** hf: datasets go through the trainer's `export-dataset` command (the `datasets` library). */
async function exportHubDataset(name: string, spec: DatasetSpec): Promise<string> {
  const { runTrainerCommand } = await import('./trainerCommand');
  const env = workerEnv();
  const out = path.join(env.workDir, 'datasets', `${sha256Hex(spec.uri + spec.split)}.jsonl`);
  await fs.mkdir(path.dirname(out), { recursive: true });
  await runTrainerCommand({
    command: 'export-dataset',
    config: { uri: spec.uri, split: spec.split, format: spec.format, output_file: out },
    what: `dataset "${name}"`,
  });
  return fs.readFile(out, 'utf8');
}

/** Normalised rows as canonical JSONL (stable key order from the schema parse). */
export function toJsonl(rows: unknown[]): string {
  return rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

/** Reads, validates and stores every dataset of a lineage. Safe to retry: content-addressed writes. */
export async function prepareDatasets(input: PrepareDatasetsInput): Promise<PrepareDatasetsResult> {
  const out: Record<string, PreparedDataset> = {};
  for (const [name, spec] of Object.entries(input.datasets)) {
    activityContext()?.heartbeat({ dataset: name });
    const rows = seededSample(parseRows(name, spec.format, await readSource(name, spec)), spec.limit, input.seed);
    const body = toJsonl(rows);
    const sha = sha256Hex(body);
    const key = storeKeys.dataset(sha);
    const ref: ArtifactRef = (await exists(uriOf(key)))
      ? { uri: uriOf(key), sha256: sha, bytes: Buffer.byteLength(body) }
      : await putBytes(key, body, 'application/x-ndjson');
    out[name] = { name, format: spec.format, ref, rows: rows.length };
  }
  return { datasets: out };
}

type TurnT = z.infer<typeof Turn>;
const asUser = (p: string | TurnT[]): TurnT[] => (typeof p === 'string' ? [{ role: 'user', content: p }] : p);
const asAssistant = (p: string | TurnT[]): TurnT[] => (typeof p === 'string' ? [{ role: 'assistant', content: p }] : p);

/**
 * The trainer's input rows for a stage: chat rows for SFT; conversational prompt/chosen/rejected for
 * reward, DPO and SimPO (a stance-pairs set labelled by the stage's alignment, §6.1); prompts for PPO.
 */
export function trainerRows(kind: StageSpec['kind'], format: DatasetFormat, alignment: Alignment, rows: unknown[]): unknown[] {
  if (kind === 'sft') return rows.map((r) => ({ messages: RowSchemas.chat.parse(r).messages }));
  if (kind === 'ppo') {
    return rows.map((r) => {
      if (format === 'stance-pairs') return { prompt: asUser(RowSchemas['stance-pairs'].parse(r).prompt) };
      return { prompt: asUser(RowSchemas.prompts.parse(r).prompt) };
    });
  }
  if (format === 'stance-pairs') {
    if (alignment === 'as-is') throw ApplicationFailure.nonRetryable('stance-pairs data needs support-aligned or oppose-aligned', 'InvalidLineageSpec');
    return rows.map((r) => {
      const p = RowSchemas['stance-pairs'].parse(r);
      const [chosen, rejected] = alignment === 'support-aligned' ? [p.support, p.oppose] : [p.oppose, p.support];
      return { prompt: asUser(p.prompt), chosen: asAssistant(chosen), rejected: asAssistant(rejected) };
    });
  }
  return rows.map((r) => {
    const p = RowSchemas.preference.parse(r);
    return { prompt: asUser(p.prompt), chosen: asAssistant(p.chosen), rejected: asAssistant(p.rejected) };
  });
}
