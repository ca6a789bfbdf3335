/**
 * `writeReport`: renders the lineage report (HTML + one SVG per stage × topic) under
 * `lineages/<l>/report/` from the stages' drift.json, with each stage's training curves (loss and
 * learning rate) read from the scalars.jsonl the trainer wrote beside its TensorBoard event files.
 * Only policy stages appear (reward stages yield reward models, which have no stance). Safe to retry.
 */
import { z } from 'zod';
import { StageDrift } from '../../common/contracts';
import type { ArtifactRef } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import type { DerivedFrom } from '../../common/spec';
import { getBytes, getVerified, listKeys, putBytes, uriOf } from '../store';
import type { TrainingCurves } from './figure';
import { renderLineageReport } from './html';
import { lineageJudgeUsage } from './usage';

/** Points per curve in the report (evenly thinned beyond this; the event files keep every step). */
export const MAX_CURVE_POINTS = 1000;

const SCALAR_TAGS = { loss: 'train/loss', learningRate: 'train/learning_rate' } as const;

/** One scalars.jsonl line (curves.py); a torn last line of a killed trainer is skipped. */
const ScalarsLine = z.object({ step: z.number().int().nonnegative(), values: z.record(z.string(), z.number()) });

/**
 * A stage's loss and learning-rate curves from every training attempt's scalars.jsonl in the store.
 * A later attempt resumed from a checkpoint and trained the steps after it again, so where attempts
 * overlap the later one's value is the one that led to the final model.
 */
export async function readStageCurves(lineage: string, stageId: string): Promise<TrainingCurves> {
  const prefix = storeKeys.tensorboardPrefix(lineage, stageId);
  const files = (await listKeys(prefix))
    .map((key) => ({ key, m: /^attempt-(\d+)\/scalars\.jsonl$/.exec(key.slice(prefix.length)) }))
    .filter((f): f is { key: string; m: RegExpExecArray } => f.m !== null)
    .map((f) => ({ key: f.key, attempt: Number(f.m[1]) }))
    .sort((a, b) => a.attempt - b.attempt);
  const series = { loss: new Map<number, number>(), learningRate: new Map<number, number>() };
  for (const f of files) {
    const text = (await getBytes(uriOf(f.key))).toString('utf8');
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let row: z.infer<typeof ScalarsLine>;
      try {
        row = ScalarsLine.parse(JSON.parse(line));
      } catch {
        continue;
      }
      for (const [name, tag] of Object.entries(SCALAR_TAGS) as Array<[keyof typeof SCALAR_TAGS, string]>) {
        const v = row.values[tag];
        if (v !== undefined && Number.isFinite(v)) series[name].set(row.step, v);
      }
    }
  }
  const points = (m: Map<number, number>) => thin([...m.entries()].sort((a, b) => a[0] - b[0]).map(([step, value]) => ({ step, value })));
  return { loss: points(series.loss), learningRate: points(series.learningRate) };
}

/** At most MAX_CURVE_POINTS points, evenly spaced, the first and last kept. */
function thin<T>(xs: T[]): T[] {
  if (xs.length <= MAX_CURVE_POINTS) return xs;
  const stride = (xs.length - 1) / (MAX_CURVE_POINTS - 1);
  return Array.from({ length: MAX_CURVE_POINTS }, (_, i) => xs[Math.round(i * stride)] as T);
}

export interface WriteReportInput {
  lineage: string;
  stages: Array<{ stageId: string; kind: string; parentId: string | null; drift: ArtifactRef }>;
  /** Workflow time, so the page is reproducible from history. */
  generatedAt: string;
  /** The spec's derivedFrom (a re-evaluation): the page links the original lineage. */
  derivedFrom?: DerivedFrom;
}
export interface WriteReportResult {
  report: ArtifactRef;
  figures: number;
}

export async function writeReport(input: WriteReportInput): Promise<WriteReportResult> {
  const stages = await Promise.all(
    input.stages.map(async (s) => ({
      stageId: s.stageId,
      kind: s.kind,
      parentId: s.parentId,
      drift: StageDrift.parse(JSON.parse((await getVerified(s.drift)).toString('utf8'))),
      curves: await readStageCurves(input.lineage, s.stageId),
    })),
  );
  const out = await renderLineageReport({
    lineage: input.lineage,
    stages,
    generatedAt: input.generatedAt,
    ...(input.derivedFrom && { derivedFrom: input.derivedFrom }),
    judgeUsage: await lineageJudgeUsage(input.lineage),
  });
  await Promise.all(out.figures.map((f) => putBytes(storeKeys.reportFigure(input.lineage, f.name), f.svg, 'image/svg+xml')));
  const report = await putBytes(storeKeys.reportPage(input.lineage), out.html, 'text/html; charset=utf-8');
  return { report, figures: out.figures.length };
}
