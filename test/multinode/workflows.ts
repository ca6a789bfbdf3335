/**
 * A test workflow for multi-node groups: the stage workflow's `trainGroup` with the real member
 * proxies (workflows/proxies.ts: the multi-node queue, one run per group attempt, cancellation waited
 * for) and quick group retries.
 */
import type { TrainStageInput, TrainStageResult } from '../../activities/training';
import { trainGroup } from '../../workflows/stage';

export async function groupTraining(input: TrainStageInput, maximumAttempts: number): Promise<TrainStageResult> {
  return trainGroup(input, { initialIntervalMs: 50, backoffCoefficient: 1, maximumIntervalMs: 50, maximumAttempts });
}
