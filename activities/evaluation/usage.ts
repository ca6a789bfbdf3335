/**
 * Judge tokens and their cost. Every chat completion the judge is paid for reports `usage`
 * (prompt and completion tokens): online calls are counted as their responses arrive (a fetch
 * wrapper on the judge client, so judgeAll needs no knowledge of it), Batch API answers from the
 * batch's output file. An evaluation's counts go into its summary (`judgeUsage`), and the report
 * sums them per lineage and prices them with `lineage plan`'s price table (data/plan/prices.json,
 * overridable with VALUEDRIFT_PRICES_FILE), the Batch API discount applied to batch tokens.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { z } from 'zod';
import { mergePrices, PriceOverride, PriceTable } from '../../common/plan';
import { addUsage, NO_USAGE, usageOf, type TokenUsage } from '../judge/batch';

const Count = z.number().int().nonnegative();
export const UsageCounts = z.object({ calls: Count, promptTokens: Count, completionTokens: Count });
export type UsageCounts = z.infer<typeof UsageCounts>;
export const NO_COUNTS: UsageCounts = { calls: 0, promptTokens: 0, completionTokens: 0 };

/** What judging one checkpoint was billed: online calls (incl. a batch's synchronous fallbacks) and batch answers. */
export const JudgeUsage = z.object({
  judgeModel: z.string(),
  mode: z.enum(['online', 'batch']),
  online: UsageCounts,
  batch: UsageCounts,
  /** The Batch API batches whose answers are counted in `batch` (at most one per evaluation today). */
  batchIds: z.array(z.string()).max(100),
});
export type JudgeUsage = z.infer<typeof JudgeUsage>;

export function addCounts(a: UsageCounts, b: UsageCounts): UsageCounts {
  return { calls: a.calls + b.calls, promptTokens: a.promptTokens + b.promptTokens, completionTokens: a.completionTokens + b.completionTokens };
}

/** Online tokens seen by one client: `fetch` goes into the OpenAI client's options. */
export class UsageTally {
  calls = 0;
  usage: TokenUsage = NO_USAGE;
  private pending = new Set<Promise<void>>();

  readonly fetch = async (url: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const res = await globalThis.fetch(url, init);
    const href = typeof url === 'string' ? url : url instanceof URL ? url.href : url.url;
    if (res.ok && /\/chat\/completions(\?|$)/.test(href)) {
      // A copy of the body is read beside the SDK's: a body we cannot read counts as nothing billed.
      const read = res
        .clone()
        .json()
        .then((body: unknown) => {
          this.calls++;
          this.usage = addUsage(this.usage, usageOf(body));
        })
        .catch(() => undefined)
        .finally(() => this.pending.delete(read));
      this.pending.add(read);
    }
    return res;
  };

  /** The counts once every response body seen so far has been read. */
  async counts(): Promise<UsageCounts> {
    await Promise.all([...this.pending]);
    return { calls: this.calls, promptTokens: this.usage.promptTokens, completionTokens: this.usage.completionTokens };
  }
}

/** `lineage plan`'s default price table (the same file worker/plan.ts reads). */
export const DEFAULT_PRICES_FILE = path.resolve(__dirname, '..', '..', 'data', 'plan', 'prices.json');

/** The price table: data/plan/prices.json with `overrideFile` (same shape as `lineage plan --prices`) laid over it. */
export async function loadPriceTable(overrideFile: string | undefined): Promise<PriceTable> {
  const base = PriceTable.parse(JSON.parse(await fs.readFile(DEFAULT_PRICES_FILE, 'utf8')));
  if (!overrideFile) return base;
  let over: unknown;
  try {
    over = JSON.parse(await fs.readFile(overrideFile, 'utf8'));
  } catch (err) {
    throw new Error(`VALUEDRIFT_PRICES_FILE ${overrideFile}: ${(err as Error).message}`);
  }
  const parsed = PriceOverride.safeParse(over);
  if (!parsed.success) throw new Error(`VALUEDRIFT_PRICES_FILE ${overrideFile}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return mergePrices(base, parsed.data);
}

/** Money for tokens: null amounts when the price table has no entry for the judge model; `price` says which price or why none. */
export type UsageCost = z.infer<typeof UsageCost>;

/** Prices online and batch tokens of one judge model (batch tokens at the table's Batch discount). */
export function costOf(judgeModel: string, online: UsageCounts, batch: UsageCounts, prices: PriceTable): UsageCost {
  const p = Object.hasOwn(prices.judge, judgeModel) ? prices.judge[judgeModel] : undefined;
  if (!p) return { currency: prices.currency, online: null, batch: null, total: null, price: `no price for judge model "${judgeModel}" (add it with VALUEDRIFT_PRICES_FILE)` };
  const list = (c: UsageCounts) => (c.promptTokens * p.inputPerMillion + c.completionTokens * p.outputPerMillion) / 1e6;
  const onlineCost = list(online);
  const batchCost = list(batch) * (1 - p.batchDiscount);
  return { currency: prices.currency, online: onlineCost, batch: batchCost, total: onlineCost + batchCost, price: `${p.inputPerMillion} / ${p.outputPerMillion} per 1M input / output tokens, batch −${Math.round(p.batchDiscount * 100)} % — ${p.source}` };
}

export const UsageCost = z.object({
  currency: z.string(),
  online: z.number().nullable(),
  batch: z.number().nullable(),
  total: z.number().nullable(),
  price: z.string(),
});
/** What an evaluation's summary says about its judge tokens (`judgeUsage` beside the topics). */
export const JudgeUsageRecord = JudgeUsage.extend({ cost: UsageCost });
export type JudgeUsageRecord = z.infer<typeof JudgeUsageRecord>;
