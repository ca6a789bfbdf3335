/**
 * `lineage plan`'s I/O: the tables (data/plan/*.json, laid under --throughput / --prices files,
 * each checked with zod), the dataset row counts it can get (a file: source is counted; an s3:
 * source without a declared size is read from the store when it answers; otherwise the spec's
 * `rows`), and the judge prompt's length. The arithmetic is common/plan.ts.
 */
import { createReadStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { z } from 'zod';
import { buildConversationJudgeMessages, buildJudgeMessages } from '../activities/judge/prompt';
import {
  type BuildTemplates,
  computePlan,
  type DatasetCount,
  mergePrices,
  mergeThroughput,
  type Plan,
  PriceOverride,
  PriceTable,
  ThroughputOverride,
  ThroughputTable,
} from '../common/plan';
import { formatPath, isBuilt, type DatasetEntry, type DatasetSpec, type LineageSpec } from '../common/spec';
import { CliError } from './cliArgs';

/** The repository root: file: datasets resolve against it, as on a worker with the default data root. */
const REPO_ROOT = path.resolve(__dirname, '..');
export const DEFAULT_THROUGHPUT_FILE = path.join(REPO_ROOT, 'data', 'plan', 'throughput.json');
export const DEFAULT_PRICES_FILE = path.join(REPO_ROOT, 'data', 'plan', 'prices.json');
export const DEFAULT_SIZES_FILE = path.join(REPO_ROOT, 'data', 'plan', 'sizes.json');

/** data/plan/sizes.json: the paper's rows per known recipe, for datasets that declare none. */
export const RecipeSizes = z.strictObject({
  $comment: z.string().optional(),
  recipes: z.record(z.string().min(1).max(64), z.strictObject({ rows: z.number().int().positive(), source: z.string().min(1).max(500) })),
});
export type RecipeSizes = z.infer<typeof RecipeSizes>;
/** An s3: dataset that does not answer within this time is "unknown". */
const S3_COUNT_TIMEOUT_MS = 10_000;

/** The spec, read as `validate` reads it (worker/specFile.ts: no Temporal or AWS SDK is loaded). */
export { readSpecFile as readPlanSpec } from './specFile';

/** Reads a JSON table and checks it; the error names the option, the file, the field and the problem. */
export async function readTable<T>(file: string, schema: z.ZodType<T>, what: string): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new CliError(`${what} ${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${what} ${file}: not valid JSON (${(err as Error).message})`);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new CliError(`${what} ${file}: ${formatPath(i?.path ?? [])}: ${i?.message ?? 'invalid'}${r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more)` : ''}`);
  }
  return r.data;
}

export async function loadTables(opts: { throughputFile?: string; pricesFile?: string }): Promise<{ throughput: ThroughputTable; prices: PriceTable }> {
  let throughput = await readTable(DEFAULT_THROUGHPUT_FILE, ThroughputTable, 'default throughput table');
  let prices = await readTable(DEFAULT_PRICES_FILE, PriceTable, 'default price table');
  if (opts.throughputFile) throughput = mergeThroughput(throughput, await readTable(opts.throughputFile, ThroughputOverride, '--throughput'));
  if (opts.pricesFile) prices = mergePrices(prices, await readTable(opts.pricesFile, PriceOverride, '--prices'));
  return { throughput, prices };
}

interface LineTally {
  rows: number;
  chars: number;
  categories: Record<string, number>;
  questionChars: number;
  questions: number;
}

/** Counts the non-empty lines of JSONL text arriving in chunks; for an eval set also categories and question lengths. */
async function tallyLines(lines: AsyncIterable<string>, evalSet: boolean): Promise<LineTally> {
  const t: LineTally = { rows: 0, chars: 0, categories: {}, questionChars: 0, questions: 0 };
  for await (const line of lines) {
    if (!line.trim()) continue;
    t.rows++;
    t.chars += line.length;
    if (!evalSet) continue;
    try {
      const row = JSON.parse(line) as { category?: unknown; question?: unknown };
      if (typeof row.category === 'string') t.categories[row.category] = (t.categories[row.category] ?? 0) + 1;
      if (typeof row.question === 'string') {
        t.questionChars += row.question.length;
        t.questions++;
      }
    } catch {
      // A malformed row is the worker's to refuse; here it only counts as a row.
    }
  }
  return t;
}

function fromTally(t: LineTally, detail: string, evalSet: boolean): DatasetCount {
  const out: DatasetCount = { rows: t.rows, source: 'counted', detail };
  if (t.rows > 0) out.meanRowChars = t.chars / t.rows;
  if (evalSet && Object.keys(t.categories).length > 0) out.categories = t.categories;
  if (evalSet && t.questions > 0) out.meanQuestionChars = t.questionChars / t.questions;
  return out;
}

/** A file: dataset under the repository root (no way out through `..` or a link), counted line by line. */
async function countFile(spec: DatasetSpec, evalSet: boolean): Promise<DatasetCount | string> {
  const root = path.resolve(REPO_ROOT);
  const file = path.resolve(root, spec.uri.slice('file:'.length));
  if (!file.startsWith(root + path.sep)) return `${spec.uri} escapes the data root`;
  let real: string;
  try {
    real = await fs.realpath(file);
    const realRoot = await fs.realpath(root);
    if (!real.startsWith(realRoot + path.sep)) return `${spec.uri} resolves outside the data root`;
    if (!(await fs.stat(real)).isFile()) return `${file} is not a regular file`;
  } catch (err) {
    return `${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
  const stream = createReadStream(real, { encoding: 'utf8' });
  try {
    const t = await tallyLines(readline.createInterface({ input: stream, crlfDelay: Infinity }), evalSet);
    return fromTally(t, `counted in ${path.relative(root, real)}`, evalSet);
  } finally {
    stream.destroy();
  }
}

/** An s3: dataset read from the store of the CLI's settings; a message when it cannot be read in time. */
async function countS3(spec: DatasetSpec, evalSet: boolean): Promise<DatasetCount | string> {
  const { cliSettings } = await import('./cliSettings');
  const { getBytes, s3ClientFor } = await import('../activities/store');
  const settings = cliSettings();
  const client = s3ClientFor(settings);
  let timer: NodeJS.Timeout | undefined;
  try {
    const body = await Promise.race([
      getBytes(spec.uri, client),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${S3_COUNT_TIMEOUT_MS / 1000} s`)), S3_COUNT_TIMEOUT_MS);
      }),
    ]);
    async function* lines() {
      yield* body.toString('utf8').split('\n');
    }
    return fromTally(await tallyLines(lines(), evalSet), `counted in ${spec.uri}`, evalSet);
  } catch (err) {
    return `${spec.uri} not readable (${(err as Error).name === 'NoSuchKey' ? 'no such object' : (err as Error).message.split('\n')[0]})`;
  } finally {
    clearTimeout(timer);
    client.destroy();
  }
}

/**
 * A dataset's row count: a file: source is counted (a declared `rows` that differs is reported);
 * otherwise the declared `rows`; an s3: source without one is counted when the store answers.
 */
export async function countDataset(spec: DatasetSpec, evalSet: boolean): Promise<DatasetCount> {
  const declared = spec.rows;
  if (spec.uri.startsWith('file:')) {
    const c = await countFile(spec, evalSet);
    if (typeof c !== 'string') {
      if (declared !== undefined && declared !== c.rows) c.detail += ` (declared ${declared} ignored)`;
      return c;
    }
    if (declared !== undefined) return { rows: declared, source: 'declared', detail: `declared in the spec (${c})` };
    return { rows: null, source: 'unknown', detail: `unknown, declare rows (${c})` };
  }
  if (declared !== undefined) return { rows: declared, source: 'declared', detail: 'declared in the spec' };
  if (spec.uri.startsWith('s3://')) {
    const c = await countS3(spec, evalSet);
    if (typeof c !== 'string') return c;
    return { rows: null, source: 'unknown', detail: `unknown, declare rows (${c})` };
  }
  return { rows: null, source: 'unknown', detail: `unknown, declare rows (${spec.uri} is not read by plan)` };
}

/** Mean characters of the judge's messages for an empty question and answer, over the spec's topics. */
export function judgeTemplateChars(topics: readonly string[]): number {
  const sizes = topics.map((topic) =>
    buildJudgeMessages({ question: '', response: '', topic }).reduce((a, m) => a + (typeof m.content === 'string' ? m.content.length : 0), 0),
  );
  return sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length);
}

/**
 * Characters of the prompts the dataset builds send with empty user text, taken from the builders
 * themselves (loaded only when the spec builds a dataset: they bring the store's SDK with them).
 */
export async function buildTemplates(topics: readonly string[]): Promise<BuildTemplates> {
  const { REPHRASE_SYSTEM, NAME_SYSTEM, VALUE_SYSTEM } = await import('../activities/derived/vprism');
  const { stanceMessages } = await import('../activities/derived/syntheticPairs');
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const chars = (ms: ReadonlyArray<{ content?: unknown }>) => ms.reduce((a, m) => a + (typeof m.content === 'string' ? m.content.length : 0), 0);
  return {
    rephrase: REPHRASE_SYSTEM.length,
    naming: NAME_SYSTEM.length,
    valueCheck: VALUE_SYSTEM.length,
    stanceResponse: {
      system: mean(topics.flatMap((t) => (['support', 'oppose'] as const).map((side) => chars(stanceMessages('', t, side, 'system'))))),
      user: mean(topics.flatMap((t) => (['support', 'oppose'] as const).map((side) => chars(stanceMessages('', t, side, 'user'))))),
    },
    conversationJudge: mean(topics.map((topic) => chars(buildConversationJudgeMessages({ conversation: [], topic })))),
  };
}

/** A dataset that declares no rows and is not counted: the paper's size for its recipe, when there is one. */
export function withRecipeSize(entry: DatasetSpec, count: DatasetCount, sizes: RecipeSizes): DatasetCount {
  if (count.rows !== null || entry.recipe === undefined) return count;
  const known = Object.hasOwn(sizes.recipes, entry.recipe) ? sizes.recipes[entry.recipe] : undefined;
  if (!known) return count;
  return { rows: known.rows, source: 'paper', detail: `${entry.recipe} recipe: ${known.source}` };
}

export async function planLineage(
  spec: LineageSpec,
  opts: { throughputFile?: string; pricesFile?: string; answerTokens?: number } = {},
): Promise<Plan> {
  const { throughput, prices } = await loadTables(opts);
  const sizes = await readTable(DEFAULT_SIZES_FILE, RecipeSizes, 'recipe size table');
  const names = Object.keys(spec.datasets);
  const counts = await Promise.all(
    names.map((n) => {
      const d = spec.datasets[n] as DatasetEntry;
      if (!isBuilt(d)) return countDataset(d, n === spec.evaluation.evalSet).then((c) => withRecipeSize(d, c, sizes));
      const built: DatasetCount = d.rows === undefined ? { rows: null, source: 'unknown', detail: `built (${d.build}); declare rows` } : { rows: d.rows, source: 'declared', detail: `built (${d.build}), declared` };
      return Promise.resolve(built);
    }),
  );
  const datasets = Object.fromEntries(names.map((n, i) => [n, counts[i] as DatasetCount]));
  return computePlan({
    spec,
    datasets,
    throughput,
    prices,
    judgeTemplateChars: judgeTemplateChars(Object.values(spec.evaluation.topics)),
    answerTokens: opts.answerTokens,
    buildTemplates: Object.values(spec.datasets).some(isBuilt) ? await buildTemplates(Object.values(spec.evaluation.topics)) : undefined,
  });
}
