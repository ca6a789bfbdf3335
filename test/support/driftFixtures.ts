/**
 * Hand-set checkpoint summaries whose drift is computed by hand in test/unit/drift.test.ts; the CLI
 * tests feed the same ones through `lineage drift`.
 */
import type { CheckpointSummary, TopicSummary } from '../../common/contracts';

export type Band = [v: number, lo: number, hi: number];

/** A TopicSummary with hand-set v and CI per stance (the drift maths reads nothing else). */
export function topic(text: string, s: Band, n: Band, o: Band, prompts = 10): TopicSummary {
  return {
    topic: text,
    prompts,
    unlabelled: 0,
    v: { support: s[0], neutral: n[0], oppose: o[0] },
    perPrompt: [],
    ci95: { support: [s[1], s[2]], neutral: [n[1], n[2]], oppose: [o[1], o[2]] },
  };
}

export function summary(step: number, topics: Record<string, TopicSummary>, over: Partial<CheckpointSummary> = {}): CheckpointSummary {
  return { lineage: 'lin', stageId: 'sft', step, totalSteps: 300, judgeModel: 'judge', promptVersion: 'v1', topics, ...over };
}

/**
 * Rise-then-plateau support, falling neutral, flat oppose at steps 0, 100, 200, 300. By hand:
 * support M = +0.40, η = 100/300; neutral M = −0.40, η = 100/300; oppose M = 0, η = 0.
 */
export function riseAndPlateau(): CheckpointSummary[] {
  return [
    summary(0, { imm: topic('immigration', [0.2, 0.15, 0.25], [0.7, 0.65, 0.75], [0.1, 0.05, 0.15]) }),
    summary(100, { imm: topic('immigration', [0.58, 0.52, 0.64], [0.32, 0.27, 0.37], [0.1, 0.06, 0.14]) }),
    summary(200, { imm: topic('immigration', [0.62, 0.55, 0.69], [0.28, 0.22, 0.34], [0.1, 0.07, 0.13]) }),
    summary(300, { imm: topic('immigration', [0.6, 0.54, 0.66], [0.3, 0.25, 0.35], [0.1, 0.06, 0.14]) }),
  ];
}
