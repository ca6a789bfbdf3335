/**
 * `computeDrift`: M and η per topic and stance for one stage, from the evaluation of its starting
 * point (its parent's final checkpoint, read as step 0) and of each of its checkpoints. The lineage
 * workflow calls it once both ends are known. Writes drift.json and, beside it, the exact inputs as
 * summaries.jsonl (`npm run lineage -- drift` reproduces drift.json from them). Safe to retry.
 */
import type { ArtifactRef, CheckpointSummary } from '../../common/contracts';
import { storeKeys } from '../../common/config';
import { computeStageDrift } from '../../common/drift';
import { putBytes, putJson } from '../store';
import { loadEvaluationSummary, placedSummary } from './lookup';

export interface ComputeDriftInput {
  lineage: string;
  stageId: string;
  totalSteps: number;
  /** The stage's starting point (its parent's final evaluation), read as step 0 of this stage. */
  start: ArtifactRef;
  /** This stage's checkpoint evaluations (content-addressed summaries) by step. */
  checkpoints: Array<{ step: number; summary: ArtifactRef }>;
}
export interface DriftRow {
  category: string;
  stance: 'support' | 'neutral' | 'oppose';
  M: number;
  eta: number;
}
export interface ComputeDriftResult {
  drift: ArtifactRef;
  rows: DriftRow[];
}

export async function computeDrift(input: ComputeDriftInput): Promise<ComputeDriftResult> {
  const at = (step: number) => ({ lineage: input.lineage, stageId: input.stageId, step, totalSteps: input.totalSteps });
  const points = [{ step: 0, summary: input.start }, ...[...input.checkpoints].sort((a, b) => a.step - b.step)];
  const summaries: CheckpointSummary[] = await Promise.all(points.map(async (p) => placedSummary(await loadEvaluationSummary(p.summary), at(p.step))));
  const d = computeStageDrift({ summaries });
  await putBytes(storeKeys.driftInputs(input.lineage, input.stageId), summaries.map((x) => JSON.stringify(x)).join('\n') + '\n', 'application/x-ndjson');
  const drift = await putJson(storeKeys.drift(input.lineage, input.stageId), d);
  const rows: DriftRow[] = [];
  for (const [category, t] of Object.entries(d.topics)) {
    for (const stance of ['support', 'neutral', 'oppose'] as const) rows.push({ category, stance, M: t.stances[stance].M, eta: t.stances[stance].eta });
  }
  return { drift, rows };
}
