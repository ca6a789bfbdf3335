/**
 * The report's judge tokens and cost: every evaluation placed in the lineage (its evals/step-<n>/
 * pointers) → its summary's `judgeUsage` (activities/evaluation/usage.ts) → sums per judge model.
 * What is summed is what computing each evaluation was billed; an evaluation this lineage reused
 * from the evaluation cache carries what it cost when it was first computed. Summaries written
 * before tokens were counted have no `judgeUsage` and are counted as `unknown`.
 */
import { z } from 'zod';
import { EvaluationPointer } from '../../common/contracts';
import { getBytes, getVerified, listKeys, uriOf } from '../store';
import { addCounts, JudgeUsageRecord, NO_COUNTS, UsageCounts } from '../evaluation/usage';

export const JudgeUsageRow = z.object({
  judgeModel: z.string(),
  evaluations: z.number().int().nonnegative(),
  online: UsageCounts,
  batch: UsageCounts,
  currency: z.string(),
  /** Null when some evaluation had no price for this judge. */
  cost: z.number().nullable(),
});
export type JudgeUsageRow = z.infer<typeof JudgeUsageRow>;
export const LineageJudgeUsage = z.object({
  rows: z.array(JudgeUsageRow),
  /** Evaluations whose summary predates token counting. */
  unknown: z.number().int().nonnegative(),
});
export type LineageJudgeUsage = z.infer<typeof LineageJudgeUsage>;

const POINTER = /\/evals\/step-\d+\/evaluation\.json$/;
const WithUsage = z.object({ judgeUsage: JudgeUsageRecord.optional() });

/** Sums the judge tokens and cost of every evaluation in the lineage's folder. */
export async function lineageJudgeUsage(lineage: string): Promise<LineageJudgeUsage> {
  const pointers = (await listKeys(`lineages/${lineage}/`)).filter((k) => POINTER.test(k)).sort();
  const rows = new Map<string, JudgeUsageRow>();
  let unknown = 0;
  for (const key of pointers) {
    const pointer = EvaluationPointer.parse(JSON.parse((await getBytes(uriOf(key))).toString('utf8')));
    const summary = WithUsage.safeParse(JSON.parse((await getVerified(pointer.summary)).toString('utf8')));
    const u = summary.success ? summary.data.judgeUsage : undefined;
    if (!u) {
      unknown++;
      continue;
    }
    const row = rows.get(u.judgeModel) ?? { judgeModel: u.judgeModel, evaluations: 0, online: NO_COUNTS, batch: NO_COUNTS, currency: u.cost.currency, cost: 0 };
    row.evaluations++;
    row.online = addCounts(row.online, u.online);
    row.batch = addCounts(row.batch, u.batch);
    row.cost = row.cost === null || u.cost.total === null || u.cost.currency !== row.currency ? null : row.cost + u.cost.total;
    rows.set(u.judgeModel, row);
  }
  return { rows: [...rows.values()].sort((a, b) => (a.judgeModel < b.judgeModel ? -1 : a.judgeModel > b.judgeModel ? 1 : 0)), unknown };
}
