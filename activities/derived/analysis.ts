/**
 * Dataset stance analysis (App. K) as a built dataset:
 *
 *   resolveStanceAnalysis  (cpu)  build key → cached record, if any;
 *   retrieveStanceAnalysis (gpu)  embeds every datapoint (its first user turn) and the eval questions
 *                                 (trainer/valuedrift_trainer/analysis.py), keeps those with cosine ≥
 *                                 threshold to some question, under that question's category;
 *   writeStanceAnalysis    (cpu)  judges each kept datapoint as a conversation (a chat row once, a
 *                                 preference or stance-pairs row once per side) with the
 *                                 conversation-level stance prompt, then stores the judged rows, the
 *                                 summary (analysisReport.ts), the HTML report and the cache record.
 *
 * Every judgment is cached in the store by its own key (the judge cache, prompt version
 * CONVERSATION_PROMPT_VERSION), so a retried or re-run build pays only for what it had not judged.
 * The judge's endpoint and key come from the worker's settings, never from workflow inputs.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import type { ArtifactRef } from '../../common/contracts';
import { JudgeSpec, StanceAnalysisBuild } from '../../common/spec';
import { activityContext } from '../context';
import { workerEnv } from '../env';
import { RowSchemas, seededSample, toJsonl } from '../datasets';
import { judgeEndpoint, judgeFailure, StoreJudgeCache } from '../evaluation/judge';
import { judgeIdentity } from '../evaluation/keys';
import { canonicalJson } from '../judge/cache';
import { estimateTokens, type JudgeBudgets } from '../judge/budget';
import { createJudgeClient } from '../judge/client';
import { judgeAll } from '../judge/judgeAll';
import { buildConversationJudgeMessages, CONVERSATION_PROMPT_VERSION, type ConversationTurn } from '../judge/prompt';
import { getJsonIfExists, getRefIfExists, getVerified, putBytesOnce, putJson, sha256Hex, uriOf } from '../store';
import { euclidean, renderAnalysisReport, summarise, type JudgedRow } from './analysisReport';
import { runDerivedStep } from './python';
import { StartLimiter } from './generator';
import { Prepared, readRows, Ref } from './rows';
import { derivedKeys } from './keys';
import { DerivedRecord, promptText } from './syntheticPairs';

/** Bump when the analysis changes what the same inputs produce (retrieval text, pairing, summary). */
export const ANALYSIS_VERSION = 'analysis-v1';

export const analysisKeys = {
  retrieval: (buildKey: string) => `derived/${buildKey}/retrieval.json`,
  judged: (buildKey: string) => `derived/${buildKey}/judged.jsonl`,
  summary: (buildKey: string) => `derived/${buildKey}/summary.json`,
  report: (buildKey: string) => `derived/${buildKey}/report/index.html`,
};

export const ResolveAnalysisInput = z.object({
  name: z.string(),
  build: StanceAnalysisBuild,
  sources: z.record(z.string(), Prepared),
  topics: z.record(z.string(), z.string()),
  judge: JudgeSpec,
  seed: z.number().int(),
});
export type ResolveAnalysisInput = z.input<typeof ResolveAnalysisInput>;

/**
 * The analysis's content key: what decides its rows — the recipe's settings (not how fast it runs),
 * the analysed and question sets' sha256, the topics, the judge as this worker asks it, the seed.
 */
export function analysisKey(input: z.infer<typeof ResolveAnalysisInput>, judge: ReturnType<typeof judgeIdentity>): string {
  const { rows: _rows, concurrency: _c, requestsPerMinute: _r, ...recipe } = input.build;
  return sha256Hex(
    canonicalJson({
      v: ANALYSIS_VERSION,
      recipe,
      sources: Object.fromEntries(Object.entries(input.sources).map(([role, d]) => [role, d.ref.sha256])),
      topics: input.topics,
      judge: { ...judge, promptVersion: CONVERSATION_PROMPT_VERSION },
      seed: input.seed,
    }),
  );
}

export async function resolveStanceAnalysis(raw: ResolveAnalysisInput): Promise<{ buildKey: string; cached: DerivedRecord | null }> {
  const input = ResolveAnalysisInput.parse(raw);
  const key = analysisKey(input, judgeIdentity(workerEnv(), input.judge));
  const cached = await getJsonIfExists(uriOf(derivedKeys.record(key)), DerivedRecord);
  return { buildKey: key, cached: cached ?? null };
}

export const Retrieval = z.object({
  embedder: z.string(),
  candidates: z.number().int().nonnegative(),
  kept: z.array(z.object({ index: z.number().int().nonnegative(), category: z.string(), question: z.number().int().nonnegative(), similarity: z.number() })),
  /** The questions the retrieval compared with (the eval set's, in categories with a topic), by position. */
  questions: z.array(z.string()).default([]),
});
export type Retrieval = z.infer<typeof Retrieval>;

export const RetrieveInput = z.object({
  buildKey: z.string().regex(/^[0-9a-f]{64}$/),
  dataset: Prepared,
  questions: Prepared,
  categories: z.array(z.string()).min(1),
  threshold: z.number().min(-1).max(1),
});

/** The datapoints within the threshold of some eval question; stored under the build key. */
export async function retrieveStanceAnalysis(raw: z.input<typeof RetrieveInput>): Promise<ArtifactRef> {
  const input = RetrieveInput.parse(raw);
  const key = analysisKeys.retrieval(input.buildKey);
  const stored = await getRefIfExists(key);
  if (stored) return stored;
  const env = workerEnv();
  const dir = path.join(env.workDir, 'derived', input.buildKey);
  await fs.mkdir(dir, { recursive: true });
  const texts = (await readRows(input.dataset.ref)).map((r) => promptText(input.dataset.format, r));
  const wanted = new Set(input.categories);
  const questions = (await readRows(input.questions.ref)).map((r) => RowSchemas.eval.parse(r)).filter((q) => wanted.has(q.category));
  if (questions.length === 0) throw ApplicationFailure.nonRetryable(`no question of the eval set "${input.questions.name}" is in a category with a topic`, 'DerivedDatasetInput');
  const files = { candidates_file: path.join(dir, 'analysis-candidates.jsonl'), questions_file: path.join(dir, 'analysis-questions.jsonl'), output_file: path.join(dir, 'retrieval.json') };
  await fs.writeFile(files.candidates_file, toJsonl(texts.map((t) => ({ text: t.trim() === '' ? '(empty)' : t }))));
  await fs.writeFile(files.questions_file, toJsonl(questions.map((q) => ({ category: q.category, question: q.question }))));
  const configFile = path.join(dir, 'retrieve.json');
  await fs.writeFile(configFile, JSON.stringify({ ...files, threshold: input.threshold }));
  const c = activityContext();
  const beat = setInterval(() => c?.heartbeat({ step: 'embedding' }), 5_000);
  try {
    await runDerivedStep(env.python, { args: ['valuedrift_trainer.analysis', 'retrieve', '--config', configFile], what: 'stance analysis retrieval', badInput: ['bad_input'], failureType: 'DerivedSelectorFailed' }, c?.cancellationSignal);
  } finally {
    clearInterval(beat);
  }
  const out = Retrieval.parse({ ...(JSON.parse(await fs.readFile(files.output_file, 'utf8')) as object), questions: questions.map((q) => q.question) });
  return putBytesOnce(key, JSON.stringify(out), 'application/json');
}

type Turn = ConversationTurn;
const asTurns = (x: string | Turn[], role: 'user' | 'assistant'): Turn[] => (typeof x === 'string' ? [{ role, content: x }] : x);

/** A response given as turns that include the user's (UltraFeedback's full conversations) stands alone. */
function withPrompt(prompt: string | Turn[], response: string | Turn[]): Turn[] {
  const r = asTurns(response, 'assistant');
  return r.some((t) => t.role === 'user') ? r : [...asTurns(prompt, 'user'), ...r];
}

/** The conversations a row is judged as: one for a chat row, [chosen, rejected] for a pair. */
export function conversationsOf(format: string, row: unknown, alignment: 'support-aligned' | 'oppose-aligned'): Turn[][] {
  if (format === 'chat') return [RowSchemas.chat.parse(row).messages];
  if (format === 'preference') {
    const r = RowSchemas.preference.parse(row);
    return [withPrompt(r.prompt, r.chosen), withPrompt(r.prompt, r.rejected)];
  }
  const r = RowSchemas['stance-pairs'].parse(row);
  const [chosen, rejected] = alignment === 'support-aligned' ? [r.support, r.oppose] : [r.oppose, r.support];
  return [withPrompt(r.prompt, chosen), withPrompt(r.prompt, rejected)];
}

export const WriteAnalysisInput = z.object({
  buildKey: z.string().regex(/^[0-9a-f]{64}$/),
  name: z.string(),
  build: StanceAnalysisBuild,
  dataset: Prepared,
  retrieval: Ref,
  topics: z.record(z.string(), z.string()),
  judge: JudgeSpec,
  seed: z.number().int(),
});
export type WriteAnalysisInput = z.input<typeof WriteAnalysisInput>;

/**
 * Judges, summarises and writes the analysis; writes the build's cache record last. Safe to retry.
 * `budgets`: the judge budget shared by the cpu workers (activities/judge/budget.ts), when the worker sets one.
 */
export async function writeStanceAnalysis(raw: WriteAnalysisInput, budgets?: JudgeBudgets): Promise<{ record: DerivedRecord; judgeCalls: number; cacheHits: number }> {
  const input = WriteAnalysisInput.parse(raw);
  const recordKey = derivedKeys.record(input.buildKey);
  const done = await getJsonIfExists(uriOf(recordKey), DerivedRecord);
  if (done) return { record: done, judgeCalls: 0, cacheHits: 0 };
  const format = input.dataset.format;
  if (format !== 'chat' && format !== 'preference' && format !== 'stance-pairs') throw ApplicationFailure.nonRetryable(`dataset "${input.dataset.name}" has format ${format}; a stance analysis reads chat, preference or stance-pairs`, 'DerivedDatasetInput');
  const retrieval = Retrieval.parse(JSON.parse((await getVerified(input.retrieval)).toString('utf8')));
  const rows = await readRows(input.dataset.ref);
  const retained = retrieval.kept.filter((k) => input.topics[k.category] !== undefined);
  const chosen = seededSample(retained, input.build.limit, input.seed).sort((a, b) => a.index - b.index);

  // Each conversation is one judge item (its canonical JSON is the item's question, which keys the
  // cache); judgeAll asks once per distinct (conversation, topic), through the cache, the worker's
  // flush settings, the shared budget and this build's own rate.
  const { env, apiKey } = judgeEndpoint();
  const judge = judgeIdentity(env, input.judge);
  const base = createJudgeClient({ baseURL: env.VALUEDRIFT_JUDGE_BASE_URL, apiKey: apiKey ?? 'unset' });
  const budget = budgets?.(base.baseURL, judge.judgeModel);
  const items = chosen.map((k) => ({ k, topic: input.topics[k.category] as string, convs: conversationsOf(format, rows[k.index], input.build.alignment) }));
  const conversations = new Map<string, Turn[]>();
  const judgeItems = items.flatMap(({ k, topic, convs }) =>
    convs.map((conv, side) => {
      const question = canonicalJson(conv);
      conversations.set(question, conv);
      return { promptId: String(k.index), category: k.category, sample: side, question, response: '', topic };
    }),
  );
  const limiter = new StartLimiter(input.build.requestsPerMinute);
  const c = activityContext();
  let judgedSoFar = 0;
  const beat = setInterval(() => c?.heartbeat({ step: 'judging', done: judgedSoFar, total: judgeItems.length }), 5_000);
  const result = await judgeAll({
    items: judgeItems,
    // A 429 the provider sends anyway pauses every worker's grants (the shared budget).
    client: budget ? base.withOptions({ fetch: budget.watch(fetch) }) : base,
    model: judge.judgeModel,
    topLogprobs: judge.topLogprobs,
    prompt: { version: CONVERSATION_PROMPT_VERSION, messages: (it) => buildConversationJudgeMessages({ conversation: conversations.get(it.question) ?? [], topic: it.topic }) },
    concurrency: input.build.concurrency,
    cache: new StoreJudgeCache(),
    cacheFlushEvery: env.VALUEDRIFT_JUDGE_CACHE_FLUSH_EVERY,
    cacheFlushMs: env.VALUEDRIFT_JUDGE_CACHE_FLUSH_MS,
    maxRetries: 8,
    beforeAttempt: async (body, signal) => {
      await limiter.wait(signal);
      await budget?.acquire({ requests: 1, tokens: estimateTokens(body) }, signal);
    },
    onProgress: (d) => {
      judgedSoFar = d;
    },
    signal: c?.cancellationSignal,
  })
    .catch((err: unknown) => {
      throw judgeFailure(err);
    })
    .finally(() => clearInterval(beat));
  const calls = result.calls;
  const hits = result.cacheHits;

  let at = 0;
  const judgedRows: JudgedRow[] = items.map(({ k, topic, convs }) => {
    const probs = convs.map(() => result.judgments[at++]?.probs ?? null);
    const base = { index: k.index, category: k.category, topic, question: retrieval.questions[k.question] ?? '', similarity: k.similarity };
    if (format === 'chat') return { ...base, kind: 'conversation', probs: probs[0] ?? null };
    const [a, b] = [probs[0] ?? null, probs[1] ?? null];
    return { ...base, kind: 'pair', chosen: a, rejected: b, distance: a && b ? euclidean(a, b) : null };
  });
  const summary = summarise(format, judgedRows);
  const meta = {
    name: input.name,
    dataset: input.dataset.name,
    buildKey: input.buildKey,
    embedder: retrieval.embedder,
    judge: judge.judgeModel,
    threshold: input.build.threshold,
    candidates: retrieval.candidates,
    retained: retained.length,
    ...(format === 'stance-pairs' && { alignment: input.build.alignment }),
  };
  const judgedRef = await putBytesOnce(analysisKeys.judged(input.buildKey), judgedRows.length ? toJsonl(judgedRows) : '', 'application/x-ndjson');
  const outputs: Record<string, ArtifactRef> = {
    retrieval: input.retrieval,
    judged: judgedRef,
    summary: await putBytesOnce(analysisKeys.summary(input.buildKey), JSON.stringify({ ...meta, summary }, null, 2), 'application/json'),
    report: await putBytesOnce(analysisKeys.report(input.buildKey), renderAnalysisReport(meta, summary), 'text/html; charset=utf-8'),
  };
  const counts = { candidates: retrieval.candidates, retained: retained.length, judged: judgedRows.length, unlabelled: summary.unlabelled, judgeCalls: calls, cacheHits: hits };
  const record: DerivedRecord = { buildKey: input.buildKey, dataset: { name: input.name, format: 'analysis', ref: judgedRef, rows: judgedRows.length }, outputs, counts };
  await putJson(recordKey, record);
  return { record, judgeCalls: calls, cacheHits: hits };
}
