/**
 * `writeReport`: renders the lineage report (HTML + one SVG per stage × topic) under
 * `lineages/<l>/report/` from the stages' drift.json. Only policy stages appear (reward stages yield
 * reward models, which have no stance). Safe to retry.
 */
import { StageDrift } from '../../common/contracts';
import type { ArtifactRef } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import { getVerified, putBytes } from '../store';
import { renderLineageReport } from './html';

export interface WriteReportInput {
  lineage: string;
  stages: Array<{ stageId: string; kind: string; parentId: string | null; drift: ArtifactRef }>;
  /** Workflow time, so the page is reproducible from history. */
  generatedAt: string;
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
    })),
  );
  const out = await renderLineageReport({ lineage: input.lineage, stages, generatedAt: input.generatedAt });
  await Promise.all(out.figures.map((f) => putBytes(storeKeys.reportFigure(input.lineage, f.name), f.svg, 'image/svg+xml')));
  const report = await putBytes(storeKeys.reportPage(input.lineage), out.html, 'text/html; charset=utf-8');
  return { report, figures: out.figures.length };
}
