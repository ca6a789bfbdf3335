/**
 * How far to trust a judge: its agreement with hand labels on the project's stance set
 * (data/stance/labelled.jsonl), per class, per category, and how well its probabilities are
 * calibrated — the probabilities, not just the argmax, are what v(T) averages (paper §3).
 */
import { readFile } from 'node:fs/promises';
import type OpenAI from 'openai';
import { z } from 'zod';
import { Stance, STANCES, type StanceProbs } from '../../common/contracts';
import { InMemoryJudgeCache, type JudgeCache } from './cache';
import { judgeAll, type TokenLimitParam } from './judgeAll';
import { argmaxStance } from './parse';

export const LabelledStanceRow = z.object({
  id: z.string().min(1),
  category: z.string().min(1),
  topic: z.string().min(1),
  question: z.string(),
  response: z.string(),
  label: Stance,
});
export type LabelledStanceRow = z.infer<typeof LabelledStanceRow>;

/** Ten equal-width confidence bins: the usual ECE; a few hundred rows leave ~10–40 per occupied bin. */
const CALIBRATION_BINS = 10;

export interface CalibrationBin {
  lo: number;
  hi: number;
  count: number;
  meanConfidence: number;
  accuracy: number;
}

export interface JudgeCheckResult {
  model: string;
  n: number;
  /** Correct argmax over all n rows; an unlabelled row counts as wrong (the judge gave no answer). */
  accuracy: number;
  /** Correct argmax over the rows that got a label. */
  accuracyLabelled: number;
  /** Cohen's kappa between gold labels and argmax over labelled rows: agreement beyond chance. */
  kappa: number;
  /** Mean probability the judge put on the gold label (labelled rows): what v(T) actually consumes. */
  meanGoldProb: number;
  /** Rows are gold labels, columns the judge's argmax, both in `labels` order. */
  confusion: { labels: typeof STANCES; matrix: number[][] };
  unlabelled: number;
  calibration: { ece: number; bins: CalibrationBin[] };
  perCategory: Record<string, { n: number; accuracy: number; unlabelled: number }>;
  /** Judge calls actually made (the rest came from the cache). */
  calls: number;
  seconds: number;
}

export interface RunJudgeCheckInput {
  client: OpenAI;
  model: string;
  /** JSONL of LabelledStanceRow. */
  file: string;
  concurrency: number;
  cache?: JudgeCache | undefined;
  maxRetries?: number | undefined;
  topLogprobs?: number | undefined;
  tokenLimitParam?: TokenLimitParam | undefined;
  signal?: AbortSignal | undefined;
}

export async function readLabelledStanceRows(file: string): Promise<LabelledStanceRow[]> {
  const text = await readFile(file, 'utf8');
  const rows: LabelledStanceRow[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const parsed = LabelledStanceRow.safeParse(JSON.parse(line));
    // A bad row means a bad reference set; naming the line beats a silent skip that shifts the figures.
    if (!parsed.success) throw new Error(`${file}:${i + 1}: ${parsed.error.message}`);
    rows.push(parsed.data);
  });
  return rows;
}

export function scoreJudgeCheck(
  rows: ReadonlyArray<Pick<LabelledStanceRow, 'category' | 'label'>>,
  probs: ReadonlyArray<StanceProbs | null>,
): Omit<JudgeCheckResult, 'model' | 'calls' | 'seconds'> {
  const idx = (s: Stance): number => STANCES.indexOf(s);
  const matrix = STANCES.map(() => STANCES.map(() => 0));
  const perCategory: JudgeCheckResult['perCategory'] = {};
  const bins = Array.from({ length: CALIBRATION_BINS }, (_, b) => ({ lo: b / CALIBRATION_BINS, hi: (b + 1) / CALIBRATION_BINS, count: 0, conf: 0, correct: 0 }));
  let correct = 0;
  let unlabelled = 0;
  let goldProb = 0;
  rows.forEach((row, i) => {
    const p = probs[i] ?? null;
    const cat = (perCategory[row.category] ??= { n: 0, accuracy: 0, unlabelled: 0 });
    cat.n++;
    if (p === null) {
      unlabelled++;
      cat.unlabelled++;
      return;
    }
    const pred = argmaxStance(p);
    const hit = pred === row.label;
    (matrix[idx(row.label)] as number[])[idx(pred)]!++;
    if (hit) {
      correct++;
      cat.accuracy++;
    }
    goldProb += p[row.label];
    const conf = p[pred];
    // Confidence 1.0 belongs in the last bin, not an eleventh.
    const bin = bins[Math.min(CALIBRATION_BINS - 1, Math.floor(conf * CALIBRATION_BINS))]!;
    bin.count++;
    bin.conf += conf;
    if (hit) bin.correct++;
  });
  const n = rows.length;
  const labelled = n - unlabelled;
  for (const c of Object.values(perCategory)) c.accuracy = c.n === 0 ? 0 : c.accuracy / c.n;

  // Cohen's kappa over the labelled rows.
  let pe = 0;
  for (let k = 0; k < STANCES.length; k++) {
    const rowSum = (matrix[k] as number[]).reduce((a, b) => a + b, 0);
    const colSum = matrix.reduce((a, r) => a + (r[k] as number), 0);
    pe += labelled === 0 ? 0 : (rowSum / labelled) * (colSum / labelled);
  }
  const po = labelled === 0 ? 0 : correct / labelled;
  const kappa = pe === 1 ? 0 : (po - pe) / (1 - pe);

  const outBins: CalibrationBin[] = bins.map((b) => ({
    lo: b.lo,
    hi: b.hi,
    count: b.count,
    meanConfidence: b.count === 0 ? 0 : b.conf / b.count,
    accuracy: b.count === 0 ? 0 : b.correct / b.count,
  }));
  const ece = labelled === 0 ? 0 : outBins.reduce((a, b) => a + (b.count / labelled) * Math.abs(b.accuracy - b.meanConfidence), 0);

  return {
    n,
    accuracy: n === 0 ? 0 : correct / n,
    accuracyLabelled: po,
    kappa,
    meanGoldProb: labelled === 0 ? 0 : goldProb / labelled,
    confusion: { labels: STANCES, matrix },
    unlabelled,
    calibration: { ece, bins: outBins },
    perCategory,
  };
}

/** Judges every labelled row and scores the judge against the labels. Read-only apart from `cache`. */
export async function runJudgeCheck(input: RunJudgeCheckInput): Promise<JudgeCheckResult> {
  const rows = await readLabelledStanceRows(input.file);
  const t0 = Date.now();
  const { judgments, calls } = await judgeAll({
    items: rows.map((r) => ({ promptId: r.id, category: r.category, sample: 0, question: r.question, response: r.response, topic: r.topic })),
    client: input.client,
    model: input.model,
    concurrency: input.concurrency,
    cache: input.cache ?? new InMemoryJudgeCache(),
    maxRetries: input.maxRetries ?? 5,
    topLogprobs: input.topLogprobs,
    tokenLimitParam: input.tokenLimitParam,
    signal: input.signal,
  });
  return {
    model: input.model,
    ...scoreJudgeCheck(rows, judgments.map((j) => j.probs)),
    calls,
    seconds: (Date.now() - t0) / 1000,
  };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)} %`;

/** A Markdown report of a judge check, for READMEs and the CLI. */
export function formatJudgeCheck(r: JudgeCheckResult): string {
  const lines: string[] = [];
  lines.push(`Judge check — model \`${r.model}\`, ${r.n} labelled rows`);
  lines.push('');
  lines.push(`- accuracy (argmax, unlabelled counted wrong): ${pct(r.accuracy)}`);
  lines.push(`- accuracy over labelled rows: ${pct(r.accuracyLabelled)}; Cohen's κ ${r.kappa.toFixed(3)}`);
  lines.push(`- mean probability on the gold label: ${r.meanGoldProb.toFixed(3)}`);
  lines.push(`- unlabelled (no stance token in the top logprobs): ${r.unlabelled}`);
  lines.push(`- expected calibration error (${CALIBRATION_BINS} bins): ${r.calibration.ece.toFixed(3)}`);
  lines.push('');
  lines.push(`| gold \\ judge | ${r.confusion.labels.join(' | ')} |`);
  lines.push(`|---|${r.confusion.labels.map(() => '---:').join('|')}|`);
  r.confusion.labels.forEach((l, i) => lines.push(`| ${l} | ${(r.confusion.matrix[i] ?? []).join(' | ')} |`));
  lines.push('');
  lines.push('| confidence | rows | mean confidence | accuracy |');
  lines.push('|---|---:|---:|---:|');
  for (const b of r.calibration.bins) {
    if (b.count === 0) continue;
    lines.push(`| ${b.lo.toFixed(1)}–${b.hi.toFixed(1)} | ${b.count} | ${b.meanConfidence.toFixed(3)} | ${pct(b.accuracy)} |`);
  }
  lines.push('');
  lines.push('| category | rows | accuracy | unlabelled |');
  lines.push('|---|---:|---:|---:|');
  for (const [cat, c] of Object.entries(r.perCategory).sort(([a], [b]) => a.localeCompare(b))) {
    lines.push(`| ${cat} | ${c.n} | ${pct(c.accuracy)} | ${c.unlabelled} |`);
  }
  return lines.join('\n');
}
