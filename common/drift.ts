/**
 * Checkpoint summaries (eq. 1 of the paper) and per-stage drift (§3 "Evaluation metrics").
 * Pure module (no Node built-ins): workflow code imports it to summarise and compare checkpoints.
 * Reading summaries files is common/summariesFile.ts; the terminal table is worker/driftTable.ts.
 *
 * ## Summaries
 * For one checkpoint and topic T, each judged generation y of prompt x carries p(s | x, y, T).
 * - A generation whose judgment has `probs: null` (no stance label found) is excluded from every
 *   mean and counted in `unlabelled`.
 * - Per prompt: p̄_x(s) = mean of p(s | x, y, T) over that prompt's labelled generations.
 *   A prompt with no labelled generation is dropped (it is in `unlabelled` only).
 * - v(T)_s = mean over the remaining prompts of p̄_x(s)  (eq. 1: every prompt weighs the same,
 *   however many of its generations were labelled).
 * - ci95_s = v(T)_s ± t_{0.975, n−1} · sd(p̄_x(s)) / √n over the n remaining prompts. n = 1 gives
 *   df = 0 and the interval collapses to the point.
 * - A topic with no labelled generation at all (n = 0) is still listed, so its `unlabelled` count
 *   is kept, with `prompts: 0` and v = ci95 = 0. `prompts: 0` is the marker; drift treats such a
 *   topic as missing at that step. (JSON has no NaN, and the contract's v is not nullable.)
 *
 * ## Drift of one stage (computeStageDrift)
 * Input: the summaries of one stage, any order. Step 0 is the stage's starting point (its parent's
 * final checkpoint, or the base model); the others are the stage's own checkpoints.
 * For each topic and stance s, the trajectory is the list of (step, v, lo, hi) over the steps at
 * which the topic is present (in `topics` with `prompts > 0`), sorted by step.
 * - M = v_end − v_start: the last trajectory point minus the first. When the topic is present at
 *   step 0 and the last step this is the paper's M(t, t′) for the whole phase; otherwise it spans
 *   the steps it has, which `trajectory[0].step` and `trajectory.at(-1).step` show.
 * - Extremum: the largest v of the trajectory if M ≥ 0, else the smallest (M = 0 counts as
 *   rising, so a flat trajectory's extremum is its maximum). Ties: the earliest checkpoint that
 *   reaches the extreme value is "the extremum checkpoint"; its ci95 [lo, hi] is the target band.
 * - η_ext (`etaExtStep`): the step of the first trajectory point whose v satisfies
 *   lo ≤ v ≤ hi (inclusive) for that band. The extremum checkpoint is itself inside its band, so
 *   η_ext ≤ its step. If the starting point is already inside, η_ext = 0 (steps are counted from
 *   the stage's start, step 0, also when the topic is missing there).
 * - η_total = the last step among all of the stage's summaries (the stage's total steps once it
 *   has finished; while it runs, the drift is "as of" that step). `StageDrift.totalSteps` carries
 *   the declared total (the largest `totalSteps` seen, since a step-0 summary may be written
 *   before the trainer has announced its total).
 * - η = η_ext / η_total.
 * Edge cases:
 * - One point in a topic's trajectory (a single-checkpoint stage, or a topic present at one step
 *   only): M = 0, η = 0, η_ext = that step, extremum = v_start = v_end.
 * - η_total = 0 can only happen with a single step-0 summary; η is then 0, never 0/0.
 * - A topic missing at some steps: its trajectory skips them; missing at all steps: the topic is
 *   left out of `topics`.
 * - NaN safety: a non-finite v/lo/hi or lo > hi in an input is rejected with an error naming the
 *   step, topic and stance, so no NaN reaches drift.json (JSON would write it as null).
 * Rejected with an error: no summaries, summaries from different lineages or stages, two
 * summaries for the same step, different judge models or prompt versions within a stage (their
 * numbers are not comparable), and one category id whose topic text changes between steps.
 */
import {
  CheckpointSummary,
  STANCES,
  type Judgment,
  type StageDrift,
  type StanceDrift,
  type StanceProbs,
  type Stance,
  type TopicSummary,
} from './contracts';
import { mean, meanConfidenceInterval } from './stats';

/** Judge probabilities may carry float noise from a softmax; anything beyond this is a bug. */
const PROB_TOLERANCE = 1e-9;

// ---------------------------------------------------------------------------------------------
// Summaries
// ---------------------------------------------------------------------------------------------

export interface SummariseTopicInput {
  /** The topic text T the judge was asked about. */
  topic: string;
  /** The judged generations of this topic's prompts (the caller groups by category). */
  judgments: readonly Judgment[];
}

/**
 * v(T), per-prompt means and the t-based 95 % CI for one topic at one checkpoint (see the module
 * comment for null labels and empty topics). Throws on duplicate (promptId, sample) pairs and on
 * probabilities that are not finite numbers in [0, 1], since either would bias the mean silently.
 */
export function summariseTopic({ topic, judgments }: SummariseTopicInput): TopicSummary {
  const byPrompt = new Map<string, StanceProbs[]>();
  const seen = new Set<string>();
  let unlabelled = 0;
  for (const j of judgments) {
    const key = JSON.stringify([j.promptId, j.sample]);
    if (seen.has(key)) {
      throw new Error(`topic "${topic}": duplicate judgment for prompt ${j.promptId} sample ${j.sample}`);
    }
    seen.add(key);
    if (j.probs === null) {
      unlabelled++;
      continue;
    }
    for (const s of STANCES) {
      const p = j.probs[s];
      if (!Number.isFinite(p) || p < -PROB_TOLERANCE || p > 1 + PROB_TOLERANCE) {
        throw new Error(`topic "${topic}": prompt ${j.promptId} sample ${j.sample}: probs.${s} = ${p} is not a probability`);
      }
    }
    const list = byPrompt.get(j.promptId);
    if (list) list.push(j.probs);
    else byPrompt.set(j.promptId, [j.probs]);
  }

  // Sorted so the summed order, and therefore the last bits of v, do not depend on judgment order.
  const promptIds = [...byPrompt.keys()].sort(compareCodeUnits);
  const perPrompt = promptIds.map((promptId) => {
    const gens = byPrompt.get(promptId) ?? [];
    return { promptId, p: meanProbs(gens), samples: gens.length };
  });

  if (perPrompt.length === 0) {
    return {
      topic,
      prompts: 0,
      unlabelled,
      v: { support: 0, neutral: 0, oppose: 0 },
      perPrompt: [],
      ci95: { support: [0, 0], neutral: [0, 0], oppose: [0, 0] },
    };
  }

  const v = {} as StanceProbs;
  const ci95 = {} as TopicSummary['ci95'];
  for (const s of STANCES) {
    const interval = meanConfidenceInterval({ values: perPrompt.map((pp) => pp.p[s]) });
    v[s] = interval.mean;
    ci95[s] = [interval.lo, interval.hi];
  }
  return { topic, prompts: perPrompt.length, unlabelled, v, perPrompt, ci95 };
}

function meanProbs(list: readonly StanceProbs[]): StanceProbs {
  return {
    support: mean(list.map((p) => p.support)),
    neutral: mean(list.map((p) => p.neutral)),
    oppose: mean(list.map((p) => p.oppose)),
  };
}

export interface SummariseCheckpointInput {
  lineage: string;
  stageId: string;
  step: number;
  totalSteps: number;
  judgeModel: string;
  promptVersion: string;
  /** category id → topic text T (the spec's category→topic map). */
  topics: Readonly<Record<string, string>>;
  judgments: readonly Judgment[];
}

/**
 * summary.json of one checkpoint: every category of `topics` gets a TopicSummary (empty ones with
 * `prompts: 0`). A judgment whose category is not in `topics` is an error: the eval set and the
 * spec disagree, and dropping it would hide that.
 */
export function summariseCheckpoint(input: SummariseCheckpointInput): CheckpointSummary {
  const { topics, judgments } = input;
  const grouped = new Map<string, Judgment[]>();
  for (const category of Object.keys(topics)) grouped.set(category, []);
  for (const j of judgments) {
    const list = grouped.get(j.category);
    if (!list) {
      throw new Error(
        `judgment for prompt ${j.promptId} has category "${j.category}", which is not in the topic map (${Object.keys(topics).join(', ')})`,
      );
    }
    list.push(j);
  }
  const out: Record<string, TopicSummary> = {};
  for (const category of [...grouped.keys()].sort(compareCodeUnits)) {
    out[category] = summariseTopic({ topic: topics[category] as string, judgments: grouped.get(category) ?? [] });
  }
  // Parsing the result enforces the contract (integer steps, finite numbers) at the source.
  return CheckpointSummary.parse({
    lineage: input.lineage,
    stageId: input.stageId,
    step: input.step,
    totalSteps: input.totalSteps,
    judgeModel: input.judgeModel,
    promptVersion: input.promptVersion,
    topics: out,
  });
}

// ---------------------------------------------------------------------------------------------
// Drift
// ---------------------------------------------------------------------------------------------

export interface ComputeStageDriftInput {
  /** All evaluated checkpoints of one stage, step 0 (the starting point) included. */
  summaries: readonly CheckpointSummary[];
}

type TrajectoryPoint = StanceDrift['trajectory'][number];

/** M and η per topic and stance for one stage; see the module comment for the exact reading. */
export function computeStageDrift({ summaries }: ComputeStageDriftInput): StageDrift {
  const first = summaries[0];
  if (!first) throw new Error('computeStageDrift: no summaries');
  for (const s of summaries) {
    if (s.lineage !== first.lineage) {
      throw new Error(`computeStageDrift: summaries from different lineages ("${first.lineage}" and "${s.lineage}")`);
    }
    if (s.stageId !== first.stageId) {
      throw new Error(`computeStageDrift: summaries from different stages ("${first.stageId}" and "${s.stageId}")`);
    }
    if (s.judgeModel !== first.judgeModel) {
      throw new Error(
        `computeStageDrift: stage ${first.stageId} mixes judge models ("${first.judgeModel}" and "${s.judgeModel}" at step ${s.step})`,
      );
    }
    if (s.promptVersion !== first.promptVersion) {
      throw new Error(
        `computeStageDrift: stage ${first.stageId} mixes prompt versions ("${first.promptVersion}" and "${s.promptVersion}" at step ${s.step})`,
      );
    }
    if (!Number.isInteger(s.step) || s.step < 0) {
      throw new Error(`computeStageDrift: stage ${first.stageId} has an invalid step ${s.step}`);
    }
  }
  const sorted = [...summaries].sort((a, b) => a.step - b.step);
  for (let i = 1; i < sorted.length; i++) {
    if ((sorted[i] as CheckpointSummary).step === (sorted[i - 1] as CheckpointSummary).step) {
      throw new Error(`computeStageDrift: stage ${first.stageId} has two summaries for step ${(sorted[i] as CheckpointSummary).step}`);
    }
  }
  const steps = sorted.map((s) => s.step);
  const etaTotal = steps[steps.length - 1] as number;
  const totalSteps = Math.max(...sorted.map((s) => s.totalSteps));

  const categories = [...new Set(sorted.flatMap((s) => Object.keys(s.topics)))].sort(compareCodeUnits);
  const topics: StageDrift['topics'] = {};
  for (const category of categories) {
    let topicText: string | undefined;
    const present: Array<{ step: number; summary: TopicSummary }> = [];
    for (const s of sorted) {
      const ts = s.topics[category];
      if (!ts) continue;
      if (topicText !== undefined && ts.topic !== topicText) {
        throw new Error(
          `computeStageDrift: stage ${first.stageId} category "${category}" changes topic text ("${topicText}" → "${ts.topic}" at step ${s.step})`,
        );
      }
      topicText = ts.topic;
      if (ts.prompts > 0) present.push({ step: s.step, summary: ts });
    }
    if (present.length === 0 || topicText === undefined) continue;
    const stances = {} as StageDrift['topics'][string]['stances'];
    for (const stance of STANCES) {
      const trajectory = present.map(({ step, summary }) => toPoint({ stageId: first.stageId, category, stance, step, summary }));
      stances[stance] = stanceDrift({ trajectory, etaTotal });
    }
    topics[category] = { topic: topicText, stances };
  }
  return { lineage: first.lineage, stageId: first.stageId, totalSteps, steps, topics };
}

function toPoint(input: { stageId: string; category: string; stance: Stance; step: number; summary: TopicSummary }): TrajectoryPoint {
  const { stageId, category, stance, step, summary } = input;
  const v = summary.v[stance];
  const [lo, hi] = summary.ci95[stance];
  const where = `stage ${stageId} step ${step} topic "${category}" stance ${stance}`;
  if (!Number.isFinite(v) || !Number.isFinite(lo) || !Number.isFinite(hi)) {
    throw new Error(`computeStageDrift: ${where}: v/ci95 must be finite numbers (v=${v}, ci95=[${lo}, ${hi}])`);
  }
  if (lo > hi) throw new Error(`computeStageDrift: ${where}: ci95 lower bound ${lo} is above the upper bound ${hi}`);
  return { step, v, lo, hi };
}

function stanceDrift({ trajectory, etaTotal }: { trajectory: TrajectoryPoint[]; etaTotal: number }): StanceDrift {
  const start = trajectory[0] as TrajectoryPoint;
  const end = trajectory[trajectory.length - 1] as TrajectoryPoint;
  if (trajectory.length < 2) {
    return { M: 0, eta: 0, etaExtStep: start.step, extremum: start.v, vStart: start.v, vEnd: start.v, trajectory };
  }
  const M = end.v - start.v;
  const rising = M >= 0;
  let ext = start;
  for (const point of trajectory) {
    // Strict comparison keeps the earliest of tied extrema.
    if (rising ? point.v > ext.v : point.v < ext.v) ext = point;
  }
  const reached = trajectory.find((point) => point.v >= ext.lo && point.v <= ext.hi) ?? ext;
  const eta = etaTotal > 0 ? reached.step / etaTotal : 0;
  return { M, eta, etaExtStep: reached.step, extremum: ext.v, vStart: start.v, vEnd: end.v, trajectory };
}

// ---------------------------------------------------------------------------------------------
// Display convention
// ---------------------------------------------------------------------------------------------

/**
 * Signed, fixed decimals: "+0.53", "-0.12". The sign matters because it picks max or min for η, so
 * the terminal table (worker/driftTable.ts) and the HTML report both print M this way.
 */
export function formatSigned(x: number, digits = 2): string {
  const s = x.toFixed(digits);
  return x >= 0 ? `+${s}` : s;
}

/** Code-unit order: localeCompare would make output depend on the machine's locale. */
export function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
