/**
 * The overlap goal on a finished lineage: per stage, wall time ≤ 1.05 × (training + the last
 * checkpoint's evaluation), from the workflow histories on the running stack (server event times:
 * stage workflow started → completed; trainStage started → completed; the final checkpoint's
 * evaluation workflow initiated → completed). Prints one line per stage, then one JSON line.
 *
 *   npx tsx bench/overlap.ts <lineage>        (or: npm run bench -- overlap <lineage>)
 * Reads TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE (and TLS / API key) like the CLI; default: the local stack.
 */
import { workflowIds } from '../common/config';
import { cliSettings } from '../worker/cliSettings';
import { temporalClient } from '../worker/connection';
import { defineCommand, parseScriptArgs } from '../worker/cliArgs';
import { OVERLAP_GOAL, stageChildren, stageOverlap, type StageOverlap } from './overlapHistory';

const CLI = defineCommand({
  name: 'bench/overlap.ts',
  summary: `A finished lineage's stages against the overlap goal: wall ≤ ${OVERLAP_GOAL} × (training + last checkpoint's evaluation), from their histories.`,
  args: [{ name: 'lineage', description: 'the lineage name (its workflow is valuedrift/<lineage>)' }],
  options: {},
});

export interface OverlapResult {
  bench: 'overlap';
  lineage: string;
  goal: number;
  stages: StageOverlap[];
  measured: number;
  passing: number;
  worstRatio: number | null;
  /** The same after each stage's wait for its training (slot queue, failed attempts). */
  passingAfterWait: number;
  worstRatioAfterWait: number | null;
}

export function summariseOverlap(lineage: string, stages: StageOverlap[]): OverlapResult {
  const measured = stages.filter((s) => s.status === 'measured');
  const ratios = measured.map((s) => s.ratio as number);
  return {
    bench: 'overlap',
    lineage,
    goal: OVERLAP_GOAL,
    stages,
    measured: measured.length,
    passing: measured.filter((s) => s.ok).length,
    worstRatio: ratios.length ? Math.max(...ratios) : null,
    passingAfterWait: measured.filter((s) => s.okAfterWait).length,
    worstRatioAfterWait: measured.length ? Math.max(...measured.map((s) => s.ratioAfterWait as number)) : null,
  };
}

const f = (x: number | null, digits = 1) => (x === null ? '-' : x.toFixed(digits));

async function main(): Promise<void> {
  const lineage = parseScriptArgs(CLI, ({ args }) => args.lineage);
  const client = await temporalClient(cliSettings());
  try {
    const lineageHistory = await client.workflow.getHandle(workflowIds.lineage(lineage)).fetchHistory();
    const stages: StageOverlap[] = [];
    for (const id of stageChildren(lineageHistory)) {
      stages.push(stageOverlap(id, await client.workflow.getHandle(id).fetchHistory()));
    }
    const result = summariseOverlap(lineage, stages);
    for (const s of stages) {
      const verdict = s.ok === null ? s.status : s.ok ? 'ok' : 'OVER';
      console.log(
        `${s.workflowId}  wall ${f(s.wallSeconds)} s  training ${f(s.trainingSeconds)} s  last eval (step ${s.lastStep ?? '-'}) ${f(s.lastEvaluationSeconds)} s  ratio ${f(s.ratio, 3)}  ${verdict}  (waited ${f(s.waitSeconds ?? null)} s before training; after it ${f(s.ratioAfterWait ?? null, 3)} ${s.okAfterWait ? 'ok' : s.okAfterWait === false ? 'OVER' : ''})`,
      );
    }
    console.log(`${result.passing}/${result.measured} measured stage(s) within ${OVERLAP_GOAL}×; worst ratio ${f(result.worstRatio, 3)}; after the wait for training: ${result.passingAfterWait}/${result.measured}, worst ${f(result.worstRatioAfterWait, 3)}`);
    console.log(JSON.stringify(result));
  } finally {
    await client.connection.close();
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
