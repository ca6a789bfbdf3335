/**
 * `generateResponses`: samples the evaluation answers of one checkpoint (GPU queue). vLLM with n
 * samples per prompt when it is installed and a GPU is present, transformers' batched generate
 * otherwise (the trainer decides). Output JSONL goes to the store; a retry that finds it there
 * returns it without generating again.
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
import { exists, getBytes, putFile, sha256Hex, uriOf } from './store';
import { runTrainerCommand } from './trainerCommand';

export interface GenerateResponsesInput {
  lineage: string;
  stageId: string;
  step: number;
  model: ModelHandle;
  /** `response-suffix` for a base model without a chat template (§3), `chat` otherwise. */
  promptStyle: 'chat' | 'response-suffix';
  evaluation: Pick<EvaluationSpec, 'generationsPerPrompt' | 'temperature' | 'maxNewTokens' | 'baseResponseSuffix' | 'promptsPerCategory' | 'batchSize'>;
  evalSet: ArtifactRef;
  seed: number;
}
export interface GenerateResponsesResult {
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

async function refOf(uri: string): Promise<ArtifactRef> {
  const body = await getBytes(uri);
  return { uri, sha256: sha256Hex(body), bytes: body.length };
}

export async function generateResponses(input: GenerateResponsesInput): Promise<GenerateResponsesResult> {
  const key = `${storeKeys.evalDir(input.lineage, input.stageId, input.step)}/generations.jsonl`;
  const ev = input.evaluation;
  const prompts = selectPrompts(await loadEvalRows(input.evalSet), ev.promptsPerCategory, input.seed);
  if (await exists(uriOf(key))) {
    return { generations: await refOf(uriOf(key)), prompts: prompts.length, samples: prompts.length * ev.generationsPerPrompt, reused: true };
  }
  const env = workerEnv();
  const work = path.join(env.workDir, 'generate', input.lineage, input.stageId, `step-${input.step}`);
  await fs.mkdir(work, { recursive: true });
  const promptsFile = path.join(work, 'prompts.jsonl');
  await fs.writeFile(promptsFile, prompts.map((p) => JSON.stringify(p)).join('\n') + '\n');
  const outFile = path.join(work, 'generations.jsonl');
  const model = await localModel(input.model);
  await runTrainerCommand({
    command: 'generate',
    what: `generation for ${input.stageId} step ${input.step}`,
    gpus: 1, // on a GPU node; vLLM or transformers on one device
    config: {
      model,
      prompts_file: promptsFile,
      output_file: outFile,
      n: ev.generationsPerPrompt,
      temperature: ev.temperature,
      max_new_tokens: ev.maxNewTokens,
      seed: input.seed + input.step,
      chat_template: input.promptStyle === 'chat',
      response_suffix: ev.baseResponseSuffix,
      batch_size: ev.batchSize,
      backend: 'auto',
    },
  });
  // Check the trainer's output before it becomes an artifact others rely on.
  const lines = (await fs.readFile(outFile, 'utf8')).split('\n').filter((l) => l.trim());
  lines.forEach((l) => GenerationRow.parse(JSON.parse(l)));
  const generations = await putFile(key, outFile, 'application/x-ndjson');
  await fs.rm(work, { recursive: true, force: true });
  return { generations, prompts: prompts.length, samples: lines.length, reused: false };
}
