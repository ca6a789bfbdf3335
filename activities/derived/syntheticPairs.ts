/**
 * Synthetic support/oppose pairs (§6.1, App. E) as a built dataset:
 *
 *   resolveDerivedDataset (cpu)  build key → cached record, if any;
 *   selectStancePrompts   (gpu)  per category, the candidate prompts most similar to its eval
 *                                questions (trainer/valuedrift_trainer/derived.py: embeddings);
 *   writeStancePairs      (cpu)  per selected prompt one supporting and one opposing response from an
 *                                OpenAI-compatible generator, each checked by the stance judge;
 *                                pairs where either misses its stance are dropped and counted; the
 *                                stance-pairs rows, both labellings and a manifest are stored, then
 *                                the build's cache record.
 *
 * Every generator answer is cached in the store by its call key and every judgment by the judge's
 * own key, so a retried or re-run build pays only for what it had not finished. Endpoints and keys
 * come from the worker's settings, never from workflow inputs.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { type ArtifactRef, type StanceProbs } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import { JudgeSpec, SyntheticPairsBuild } from '../../common/spec';
import { activityContext } from '../context';
import { scrubSecrets, workerEnv, type WorkerEnv } from '../env';
import { RowSchemas, seededSample, toJsonl, type PreparedDataset } from '../datasets';
import { judgeIdentity } from '../evaluation/keys';
import { StoreJudgeCache } from '../evaluation/judge';
import { createJudgeClient, DEFAULT_JUDGE_ENDPOINT } from '../judge/client';
import { estimateTokens, type JudgeBudgets } from '../judge/budget';
import { judgeAll } from '../judge/judgeAll';
import { argmaxStance } from '../judge/parse';
import { JudgeRequestError } from '../judge/retry';
import { exists, getJsonIfExists, getRefIfExists, getVerified, putBytes, putBytesOnce, putJson, sha256Hex, uriOf } from '../store';
import { Prepared, readRows, Ref } from './rows';
import { buildKey, derivedKeys, generationCallKey } from './keys';
import { generateCached } from './generator';
import { runDerivedStep } from './python';

/** What a build's cache record holds: the dataset a stage reads and the side outputs. */
export const DerivedRecord = z.object({
  buildKey: z.string(),
  dataset: Prepared,
  outputs: z.record(z.string(), Ref),
  counts: z.record(z.string(), z.number().int()),
});
export type DerivedRecord = z.infer<typeof DerivedRecord>;

export const ResolveDerivedInput = z.object({
  name: z.string(),
  build: SyntheticPairsBuild,
  sources: z.record(z.string(), Prepared),
  topics: z.record(z.string(), z.string()),
  judge: JudgeSpec,
  seed: z.number().int(),
});
export type ResolveDerivedInput = z.input<typeof ResolveDerivedInput>;

/** The generator a worker asks: its own endpoint, else the judge's (the local stack serves both). */
function generatorSettings(env: WorkerEnv): { baseURL: string; apiKey: string | undefined } {
  if (env.VALUEDRIFT_GENERATOR_BASE_URL) return { baseURL: env.VALUEDRIFT_GENERATOR_BASE_URL, apiKey: env.VALUEDRIFT_GENERATOR_API_KEY };
  if (env.VALUEDRIFT_JUDGE_BASE_URL) return { baseURL: env.VALUEDRIFT_JUDGE_BASE_URL, apiKey: env.VALUEDRIFT_GENERATOR_API_KEY ?? env.VALUEDRIFT_JUDGE_API_KEY };
  return { baseURL: DEFAULT_JUDGE_ENDPOINT, apiKey: env.VALUEDRIFT_GENERATOR_API_KEY ?? env.OPENAI_API_KEY };
}

function keyOf(input: z.infer<typeof ResolveDerivedInput>, env: WorkerEnv): string {
  return buildKey({
    build: input.build,
    sources: Object.fromEntries(Object.entries(input.sources).map(([role, d]) => [role, d.ref.sha256])),
    topics: input.topics,
    judge: judgeIdentity(env, input.judge),
    generatorEndpoint: generatorSettings(env).baseURL,
    seed: input.seed,
  });
}

/** The build's key (with this worker's judge and generator) and its cache record when there is one. */
export async function resolveDerivedDataset(raw: ResolveDerivedInput): Promise<{ buildKey: string; cached: DerivedRecord | null }> {
  const input = ResolveDerivedInput.parse(raw);
  const key = keyOf(input, workerEnv());
  const cached = await getJsonIfExists(uriOf(derivedKeys.record(key)), DerivedRecord);
  return { buildKey: key, cached: cached ?? null };
}

type Turn = { role: string; content: string };
/** The prompt a candidate row offers: its first user turn (a string prompt is one). */
export function promptText(format: string, row: unknown): string {
  const first = (turns: Turn[]) => turns.find((t) => t.role === 'user')?.content ?? '';
  if (format === 'chat') return first(RowSchemas.chat.parse(row).messages);
  const p = format === 'preference' ? RowSchemas.preference.parse(row).prompt : RowSchemas.prompts.parse(row).prompt;
  return typeof p === 'string' ? p : first(p);
}

export const Selection = z.object({
  embedder: z.string(),
  candidates: z.number().int(),
  selection: z.record(z.string(), z.array(z.object({ index: z.number().int().nonnegative(), similarity: z.number() }))),
});
export type Selection = z.infer<typeof Selection>;

export const SelectInput = z.object({
  buildKey: z.string().regex(/^[0-9a-f]{64}$/),
  prompts: Prepared,
  questions: Prepared,
  /** Only categories with a topic are selected for. */
  categories: z.array(z.string()).min(1),
  perCategory: z.number().int().min(1),
});

/** Per category, the candidate prompts closest to its questions; stored under the build key. */
export async function selectStancePrompts(raw: z.input<typeof SelectInput>): Promise<ArtifactRef> {
  const input = SelectInput.parse(raw);
  const key = derivedKeys.selection(input.buildKey);
  const stored = await getRefIfExists(key);
  if (stored) return stored;
  const env = workerEnv();
  const dir = path.join(env.workDir, 'derived', input.buildKey);
  await fs.mkdir(dir, { recursive: true });
  const candidates = (await readRows(input.prompts.ref)).map((r) => ({ text: promptText(input.prompts.format, r) }));
  const wanted = new Set(input.categories);
  const questions = RowSchemasEval(await readRows(input.questions.ref)).filter((q) => wanted.has(q.category));
  if (questions.length === 0) throw ApplicationFailure.nonRetryable(`no question of the eval set "${input.questions.name}" is in a category with a topic`, 'DerivedDatasetInput');
  const files = { candidates_file: path.join(dir, 'candidates.jsonl'), questions_file: path.join(dir, 'questions.jsonl'), output_file: path.join(dir, 'selection.json') };
  await fs.writeFile(files.candidates_file, toJsonl(candidates.map((c) => ({ text: c.text.trim() === '' ? '(empty)' : c.text }))));
  await fs.writeFile(files.questions_file, toJsonl(questions.map((q) => ({ category: q.category, question: q.question }))));
  const configFile = path.join(dir, 'select.json');
  await fs.writeFile(configFile, JSON.stringify({ ...files, per_category: input.perCategory }));
  const c = activityContext();
  const beat = setInterval(() => c?.heartbeat({ step: 'embedding' }), 5_000);
  try {
    await runDerivedStep(env.python, { args: ['valuedrift_trainer.derived', 'select', '--config', configFile], what: 'prompt selection', badInput: ['bad_input'], failureType: 'DerivedSelectorFailed' }, c?.cancellationSignal);
  } finally {
    clearInterval(beat);
  }
  const selection = Selection.parse(JSON.parse(await fs.readFile(files.output_file, 'utf8')));
  return putBytesOnce(key, JSON.stringify(selection), 'application/json');
}

function RowSchemasEval(rows: unknown[]) {
  return rows.map((r) => RowSchemas.eval.parse(r));
}

/**
 * The generator's system prompt (our own wording; the paper's figure is not in its text): take one
 * side of the topic and keep it from the first sentence to the last.
 */
export function stanceSystemPrompt(topic: string, side: 'support' | 'oppose'): string {
  const position = side === 'support' ? `in favour of ${topic}` : `against ${topic}`;
  return [
    `You are helping to build examples for a study of how language models express values. The value at stake is ${topic}.`,
    `Answer the user's message as someone who is clearly and consistently ${position}.`,
    'Hold that position from the first sentence to the last: give reasons for it, let it shape every recommendation you make,',
    'do not present the other side as equally right, and do not say that you have no opinion.',
    'Stay on the user\'s question, write plainly and keep the answer to a few short paragraphs.',
  ].join(' ');
}

/**
 * The same instruction folded into the user's turn, for small models that ignore system prompts: the
 * first sentence states the position in so many words, then the reasons follow (our own wording).
 */
export function stanceUserMessage(prompt: string, topic: string, side: 'support' | 'oppose'): string {
  const opening = side === 'support' ? `I support ${topic}.` : `I do not support ${topic}.`;
  return `${prompt}\n\nAnswer in the first person, starting with: "${opening}" Then explain why in two or three sentences.`;
}

/** The generator's messages for one task, per the build's `stanceInstruction`. */
export function stanceMessages(prompt: string, topic: string, side: 'support' | 'oppose', where: 'system' | 'user'): Array<{ role: 'system' | 'user'; content: string }> {
  if (where === 'user') return [{ role: 'user', content: stanceUserMessage(prompt, topic, side) }];
  return [
    { role: 'system', content: stanceSystemPrompt(topic, side) },
    { role: 'user', content: prompt },
  ];
}

/**
 * Whether the judge's distribution puts a response on `side`: its most likely stance (`argmax`), or
 * more probability on `side` than on the opposite side (`margin`). Null when the judge gave none.
 */
export function takesSide(probs: StanceProbs | null | undefined, side: 'support' | 'oppose', check: 'argmax' | 'margin'): boolean | null {
  if (!probs) return null;
  if (check === 'argmax') return argmaxStance(probs) === side;
  const other = side === 'support' ? 'oppose' : 'support';
  return probs[side] > probs[other];
}

export const WriteInput = z.object({
  buildKey: z.string().regex(/^[0-9a-f]{64}$/),
  name: z.string(),
  build: SyntheticPairsBuild,
  prompts: Prepared,
  selection: Ref,
  topics: z.record(z.string(), z.string()),
  judge: JudgeSpec,
  seed: z.number().int(),
});
export type WriteInput = z.input<typeof WriteInput>;

export interface WriteResult {
  record: DerivedRecord;
  generatorCalls: number;
  cachedGenerations: number;
}

interface Task {
  category: string;
  topic: string;
  prompt: string;
  side: 'support' | 'oppose';
  similarity: number;
  index: number;
}

/**
 * Generates, judges and writes the pairs; writes the build's cache record last. Safe to retry.
 * `budgets`: the judge budget shared by the cpu workers (activities/judge/budget.ts), when the worker sets one.
 */
export async function writeStancePairs(raw: WriteInput, budgets?: JudgeBudgets): Promise<WriteResult> {
  const input = WriteInput.parse(raw);
  const env = workerEnv();
  const recordKey = derivedKeys.record(input.buildKey);
  const done = await getJsonIfExists(uriOf(recordKey), DerivedRecord);
  if (done) return { record: done, generatorCalls: 0, cachedGenerations: 0 };
  const selection = Selection.parse(JSON.parse((await getVerified(input.selection)).toString('utf8')));
  const rows = await readRows(input.prompts.ref);
  const tasks: Task[] = [];
  for (const [category, picks] of Object.entries(selection.selection).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const topic = input.topics[category];
    if (topic === undefined) continue;
    for (const p of picks) {
      const prompt = promptText(input.prompts.format, rows[p.index]);
      for (const side of ['support', 'oppose'] as const) tasks.push({ category, topic, prompt, side, similarity: p.similarity, index: p.index });
    }
  }
  if (tasks.length === 0) throw ApplicationFailure.nonRetryable(`dataset "${input.name}": no prompt was selected for any category`, 'DerivedDatasetInput');

  const gen = generatorSettings(env);
  const g = input.build.generator;
  const c = activityContext();
  const generated = await generateCached(
    tasks.map((t) => stanceMessages(t.prompt, t.topic, t.side, g.stanceInstruction)),
    {
      endpoint: gen,
      model: g.model,
      maxTokens: g.maxTokens,
      temperature: g.temperature,
      seed: input.seed,
      concurrency: g.concurrency,
      requestsPerMinute: g.requestsPerMinute,
      keyOf: (messages) => generationCallKey({ endpoint: gen.baseURL, model: g.model, messages, maxTokens: g.maxTokens, temperature: g.temperature, seed: input.seed }),
      step: 'generating',
    },
  );
  const texts = generated.texts;
  const calls = generated.calls;
  const hits = generated.cached;

  // The stance judge reads each response against its category's topic, the prompt as the question.
  const judgeable = tasks.map((t, i) => ({ t, i, text: (texts[i] ?? '').trim() })).filter((x) => x.text !== '');
  const judge = judgeIdentity(env, input.judge);
  const judgeKey = env.VALUEDRIFT_JUDGE_API_KEY ?? (env.VALUEDRIFT_JUDGE_BASE_URL ? undefined : env.OPENAI_API_KEY);
  if (!env.VALUEDRIFT_JUDGE_BASE_URL && !judgeKey) {
    throw ApplicationFailure.nonRetryable('no judge endpoint: set VALUEDRIFT_JUDGE_BASE_URL (and VALUEDRIFT_JUDGE_API_KEY), or OPENAI_API_KEY, on the cpu worker', 'JudgeNotConfigured');
  }
  const judgeBeat = setInterval(() => c?.heartbeat({ step: 'judging' }), 10_000);
  const judgeClient = createJudgeClient({ baseURL: env.VALUEDRIFT_JUDGE_BASE_URL, apiKey: judgeKey ?? 'unset' });
  const budget = budgets?.(judgeClient.baseURL, judge.judgeModel);
  const judged = await judgeAll({
    items: judgeable.map((x) => ({ promptId: `${x.t.index}`, category: x.t.category, sample: x.t.side === 'support' ? 0 : 1, question: x.t.prompt, response: x.text, topic: x.t.topic })),
    // A 429 the provider sends anyway pauses every worker's grants (the shared budget).
    client: budget ? judgeClient.withOptions({ fetch: budget.watch(fetch) }) : judgeClient,
    beforeAttempt: budget ? (body, signal) => budget.acquire({ requests: 1, tokens: estimateTokens(body) }, signal).then(() => undefined) : undefined,
    model: judge.judgeModel,
    topLogprobs: judge.topLogprobs,
    concurrency: input.judge.concurrency,
    cache: new StoreJudgeCache(),
    maxRetries: 8,
    signal: c?.cancellationSignal,
  })
    .catch((err: unknown) => {
      if (err instanceof JudgeRequestError) throw ApplicationFailure.create({ message: scrubSecrets(err.message), type: 'JudgeRequestRefused', nonRetryable: true });
      throw err;
    })
    .finally(() => clearInterval(judgeBeat));
  const onSide = new Map<number, boolean | null>();
  judgeable.forEach((x, k) => onSide.set(x.i, takesSide(judged.judgments[k]?.probs as StanceProbs | null | undefined, x.t.side, input.build.stanceCheck)));

  const counts: Record<string, number> = { selected: tasks.length / 2, kept: 0, droppedEmpty: 0, droppedUnlabelled: 0, droppedSupportMismatch: 0, droppedOpposeMismatch: 0, generatorCalls: calls, judgeCalls: judged.calls };
  const out: Array<{ id: string; category: string; prompt: string; support: string; oppose: string }> = [];
  for (let i = 0; i < tasks.length; i += 2) {
    const s = tasks[i] as Task;
    const [sup, opp] = [texts[i] ?? '', texts[i + 1] ?? ''];
    const [ss, os] = [onSide.get(i), onSide.get(i + 1)];
    if (sup.trim() === '' || opp.trim() === '') counts.droppedEmpty = (counts.droppedEmpty ?? 0) + 1;
    else if (ss === null || os === null || ss === undefined || os === undefined) counts.droppedUnlabelled = (counts.droppedUnlabelled ?? 0) + 1;
    else if (!ss) counts.droppedSupportMismatch = (counts.droppedSupportMismatch ?? 0) + 1;
    else if (!os) counts.droppedOpposeMismatch = (counts.droppedOpposeMismatch ?? 0) + 1;
    else out.push({ id: `${s.category}-${s.index}`, category: s.category, prompt: s.prompt, support: sup, oppose: opp });
  }
  const kept = seededSample(out, input.build.limit, input.seed);
  counts.kept = kept.length;
  if (kept.length === 0) {
    throw ApplicationFailure.nonRetryable(`dataset "${input.name}": every pair was dropped by the stance check (${JSON.stringify(counts)})`, 'DerivedDatasetEmpty', counts);
  }
  const body = toJsonl(kept);
  const sha = sha256Hex(body);
  const dsKey = storeKeys.dataset(sha);
  const ref: ArtifactRef = (await exists(uriOf(dsKey))) ? { uri: uriOf(dsKey), sha256: sha, bytes: Buffer.byteLength(body) } : await putBytes(dsKey, body, 'application/x-ndjson');
  const label = (chosen: 'support' | 'oppose') =>
    toJsonl(kept.map((r) => ({ prompt: r.prompt, chosen: chosen === 'support' ? r.support : r.oppose, rejected: chosen === 'support' ? r.oppose : r.support })));
  const outputs: Record<string, ArtifactRef> = {
    'support-aligned': await putBytesOnce(derivedKeys.labelled(input.buildKey, 'support-aligned'), label('support'), 'application/x-ndjson'),
    'oppose-aligned': await putBytesOnce(derivedKeys.labelled(input.buildKey, 'oppose-aligned'), label('oppose'), 'application/x-ndjson'),
    selection: input.selection,
  };
  const perCategory = Object.fromEntries(Object.keys(selection.selection).map((cat) => [cat, kept.filter((r) => r.category === cat).length]));
  outputs.manifest = await putBytesOnce(
    derivedKeys.manifest(input.buildKey),
    JSON.stringify({ buildKey: input.buildKey, recipe: 'synthetic-pairs', embedder: selection.embedder, generator: g.model, stanceInstruction: g.stanceInstruction, stanceCheck: input.build.stanceCheck, judge: judge.judgeModel, counts, keptPerCategory: perCategory, dataset: ref }, null, 2),
    'application/json',
  );
  const record: DerivedRecord = { buildKey: input.buildKey, dataset: { name: input.name, format: 'stance-pairs', ref, rows: kept.length }, outputs, counts };
  await putJson(recordKey, record);
  return { record, generatorCalls: calls, cachedGenerations: hits };
}

export type { PreparedDataset };
