/**
 * `generateResponses`: samples the evaluation answers of one checkpoint (GPU queue). vLLM with n
 * samples per prompt when it is installed and a GPU is present, transformers' batched generate
 * otherwise (the trainer decides). Output JSONL goes to the store under its content key; a retry
 * or another lineage asking for the same samples finds it there and generates nothing.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import type { ArtifactRef, ModelHandle } from '../common/contracts';
import { storeKeys } from '../common/config';
import type { EvaluationSpec } from '../common/spec';
import { parseRows, type RowSchemas, seededSample } from './datasets';
import { workerEnv } from './env';
import { localModel } from './models';
import { generationKey, generationSeed, type GenerationKeyInput, type PromptStyle } from './evaluation/keys';
import { getBytes, getRefIfExists, putFileOnce } from './store';
import { runTrainerCommand } from './trainerCommand';

export interface GenerateResponsesInput {
  /** For progress and scratch names only: nothing is written at these coordinates. */
  lineage: string;
  stageId: string;
  step: number;
  model: ModelHandle;
  /** `response-suffix` for a base model without a chat template (§3), `chat` otherwise. */
  promptStyle: PromptStyle;
  /** `generationGpus`/`generationParallelism` are absent from evaluations recorded before them (one GPU). */
  evaluation: GenerationKeyInput['evaluation'] & Pick<EvaluationSpec, 'batchSize'> & Partial<Pick<EvaluationSpec, 'generationGpus' | 'generationParallelism'>>;
  evalSet: ArtifactRef;
  seed: number;
}
export interface GenerateResponsesResult {
  generationKey: string;
  generations: ArtifactRef;
  prompts: number;
  samples: number;
  reused: boolean;
}

export const GenerationRow = z.object({
  prompt_id: z.string(),
  category: z.string(),
  sample: z.number().int().nonnegative(),
  text: z.string(),
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  seed: z.number().int().optional(),
});
export type GenerationRow = z.infer<typeof GenerationRow>;

type EvalRow = z.infer<typeof RowSchemas.eval>;

/** The prompts evaluated: all, or a seeded sample of `promptsPerCategory` per category. */
export function selectPrompts(rows: EvalRow[], perCategory: number | undefined, seed: number): EvalRow[] {
  if (perCategory === undefined) return rows;
  const byCat = new Map<string, EvalRow[]>();
  for (const r of rows) byCat.set(r.category, [...(byCat.get(r.category) ?? []), r]);
  return [...byCat.keys()].sort().flatMap((c) => seededSample(byCat.get(c) ?? [], perCategory, seed));
}

export async function loadEvalRows(evalSet: ArtifactRef): Promise<EvalRow[]> {
  return parseRows('eval set', 'eval', (await getBytes(evalSet.uri)).toString('utf8')) as EvalRow[];
}

/**
 * Samples the answers of one checkpoint into `cache/generations/<generation key>.jsonl`. The key is a
 * hash of everything that determines the samples (see evaluation/keys.ts), so a file already under
 * it was sampled from the same model with the same settings and is returned as is; nothing is read
 * by lineage, stage or step.
 */
export async function generateResponses(input: GenerateResponsesInput): Promise<GenerateResponsesResult> {
  const ev = input.evaluation;
  const key = generationKey(input);
  const outKey = storeKeys.generations(key);
  const prompts = selectPrompts(await loadEvalRows(input.evalSet), ev.promptsPerCategory, input.seed);
  const existing = await getRefIfExists(outKey);
  if (existing) return { generationKey: key, generations: existing, prompts: prompts.length, samples: prompts.length * ev.generationsPerPrompt, reused: true };
  const env = workerEnv();
  const work = path.join(env.workDir, 'generate', key);
  await fs.rm(work, { recursive: true, force: true });
  await fs.mkdir(work, { recursive: true });
  const promptsFile = path.join(work, 'prompts.jsonl');
  await fs.writeFile(promptsFile, prompts.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const outFile = path.join(work, 'generations.jsonl');
  // Evaluations recorded before these settings existed carry neither: one GPU.
  const gpus = ev.generationGpus ?? 1;
  const parallelism = ev.generationParallelism ?? 'tensor';
  const model = await localModel(input.model);
  // The model's folder stays in the worker's model cache (not evicted) until generation has exited.
  await runTrainerCommand({
    command: 'generate',
    what: `generation for ${input.stageId} step ${input.step}`,
    // On a GPU node: one device (vLLM or transformers), or the evaluation's generationGpus, which
    // one vLLM engine shards the model over (tensor) or one process each samples a share of (data).
    gpus,
    config: {
      model: model.path,
      prompts_file: promptsFile,
      output_file: outFile,
      n: ev.generationsPerPrompt,
      temperature: ev.temperature,
      max_new_tokens: ev.maxNewTokens,
      seed: generationSeed(input.seed, input.step),
      chat_template: input.promptStyle === 'chat',
      response_suffix: ev.baseResponseSuffix,
      batch_size: ev.batchSize,
      backend: 'auto',
      tensor_parallel: parallelism === 'tensor' ? gpus : 1,
      data_parallel: parallelism === 'data' ? gpus : 1,
    },
  }).finally(() => model.release());
  // Check the trainer's output before it becomes an artifact others rely on.
  const lines = (await fs.readFile(outFile, 'utf8')).split('\n').filter((l) => l.trim());
  lines.forEach((l) => GenerationRow.parse(JSON.parse(l)));
  const generations = await putFileOnce(outKey, outFile, 'application/x-ndjson');
  await fs.rm(work, { recursive: true, force: true });
  return { generationKey: key, generations, prompts: prompts.length, samples: lines.length, reused: false };
}
