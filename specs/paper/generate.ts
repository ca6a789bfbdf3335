/**
 * Writes the paper's grid (arXiv 2510.26707 §4–§6) as one lineage spec per base model:
 * 2 SFT sets × (PPO with its reward model, DPO, SimPO) × 4 preference setups. Shared prefixes (each
 * SFT model, each reward model) are trained once per base. Run: npx tsx specs/paper/generate.ts
 *
 * V-PRISM (App. A.1) and the synthetic stance pairs (§6.1, App. E) are not on the hub: each spec
 * builds them as nodes of the lineage (PRISM → v-prism; UltraFeedback + HH-RLHF prompts → synthetic),
 * and analyses the stances of every training set (App. K). Their generators are OpenAI-compatible
 * models at the cpu worker's VALUEDRIFT_GENERATOR_BASE_URL: the paper's GPT-4o for V-PRISM and
 * Qwen2.5-72B-Instruct for the pairs, so that endpoint must serve both names (a router such as
 * LiteLLM, or change the names to one model you serve).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LineageSpec, type LineageSpecInput } from '../../common/spec';

const TOPICS = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'data', 'demo', 'topics.json'), 'utf8')) as Record<string, string>;

const BASES = [
  { slug: 'llama3-3b', model: 'hf:meta-llama/Llama-3.2-3B', name: 'Llama-3.2-3B', gpus: 4 },
  { slug: 'llama3-8b', model: 'hf:meta-llama/Llama-3.1-8B', name: 'Llama-3.1-8B', gpus: 8 },
  { slug: 'qwen3-4b', model: 'hf:Qwen/Qwen3-4B-Base', name: 'Qwen3-4B-Base', gpus: 4 },
  { slug: 'qwen3-8b', model: 'hf:Qwen/Qwen3-8B-Base', name: 'Qwen3-8B-Base', gpus: 8 },
];
/** App. B.2: checkpoints every 500 steps on WildChat, every 100 on Alpaca. */
const SFT_SETS = [
  { id: 'wildchat', dataset: 'wildchat', checkpointEvery: 500 },
  { id: 'alpaca', dataset: 'alpaca', checkpointEvery: 100 },
];
const PREFS = [
  { id: 'uf', dataset: 'ultrafeedback', alignment: 'as-is' as const },
  { id: 'hh', dataset: 'hh-rlhf', alignment: 'as-is' as const },
  { id: 'syn-support', dataset: 'synthetic', alignment: 'support-aligned' as const },
  { id: 'syn-oppose', dataset: 'synthetic', alignment: 'oppose-aligned' as const },
];

export function paperSpec(base: (typeof BASES)[number]): LineageSpecInput {
  const stages: LineageSpecInput['stages'] = [];
  // Micro-batches sized for H100s, with activation checkpointing; every other hyperparameter is the
  // paper's default (common/spec.ts).
  const gpu = { gpus: base.gpus };
  const micro = (n: number) => ({ per_device_train_batch_size: n, activation_checkpointing: true });
  for (const sft of SFT_SETS) {
    const sftId = `sft-${sft.id}`;
    stages.push({ id: sftId, parent: 'base', kind: 'sft', dataset: sft.dataset, checkpointEvery: sft.checkpointEvery, ...gpu, hyperparameters: micro(4) });
    for (const p of PREFS) {
      const rm = `rm-${sft.id}-${p.id}`;
      stages.push({ id: rm, parent: sftId, kind: 'reward', dataset: p.dataset, alignment: p.alignment, checkpointEvery: 100, ...gpu, hyperparameters: micro(4) });
      stages.push({ id: `ppo-${sft.id}-${p.id}`, parent: sftId, kind: 'ppo', dataset: p.dataset, rewardStage: rm, checkpointEvery: 100, ...gpu, hyperparameters: micro(2) });
      stages.push({ id: `dpo-${sft.id}-${p.id}`, parent: sftId, kind: 'dpo', dataset: p.dataset, alignment: p.alignment, checkpointEvery: 100, ...gpu, hyperparameters: micro(2) });
      stages.push({ id: `simpo-${sft.id}-${p.id}`, parent: sftId, kind: 'simpo', dataset: p.dataset, alignment: p.alignment, checkpointEvery: 100, ...gpu, hyperparameters: micro(2) });
    }
  }
  return {
    name: `paper-${base.slug}`,
    description: `The paper's grid for ${base.name}: SFT on WildChat and Alpaca, then PPO, DPO and SimPO on UltraFeedback, HH-RLHF and the synthetic support/oppose-aligned set.`,
    seed: 42,
    base: { model: base.model, name: base.name, promptStyle: 'response-suffix' },
    datasets: {
      // `rows`: the paper's sizes (App. B.1: the 90/10 train splits of English WildChat and of Alpaca,
      // Argilla's UltraFeedback, HH-RLHF downsampled to the same size; §6.1: 9,453 synthetic prompts;
      // §3: 50 V-PRISM questions × 11 categories), so `lineage plan` can size every stage. The hub
      // corpora go through the trainer's recipes (English filter, 90/10 split, HH-RLHF's shared prefix
      // as the prompt, downsampled to 60,908 of its 160,800 train pairs).
      wildchat: { uri: 'hf:allenai/WildChat-1M', format: 'chat', recipe: 'wildchat', rows: 255_751 },
      alpaca: { uri: 'hf:tatsu-lab/alpaca', format: 'chat', recipe: 'alpaca', rows: 46_801 },
      ultrafeedback: { uri: 'hf:argilla/ultrafeedback-binarized-preferences-cleaned', format: 'preference', recipe: 'ultrafeedback', rows: 60_908 },
      'hh-rlhf': { uri: 'hf:Anthropic/hh-rlhf', format: 'preference', recipe: 'hh-rlhf', limit: 60_908, rows: 60_908 },
      // App. A.1: PRISM's opening prompts (value- and controversy-guided conversations) → 550
      // questions, 50 per category; rephrasing, naming and the value check by GPT-4o.
      prism: { uri: 'hf:HannahRoseKirk/prism-alignment', format: 'prompts', recipe: 'prism' },
      'v-prism': { build: 'v-prism', from: { statements: 'prism' }, questionsPerCategory: 50, rows: 550, generator: { model: 'gpt-4o', maxTokens: 128 } },
      // §6.1: prompts retrieved from UltraFeedback and HH-RLHF together; Qwen2.5-72B-Instruct writes
      // the supporting and opposing responses; 9,453 pairs in the paper (860 per category asked).
      'uf-hh-prompts': { build: 'concat', format: 'preference', from: { hh: 'hh-rlhf', uf: 'ultrafeedback' }, rows: 121_816 },
      synthetic: { build: 'synthetic-pairs', from: { prompts: 'uf-hh-prompts', questions: 'v-prism' }, rows: 9_453, generator: { model: 'Qwen/Qwen2.5-72B-Instruct' } },
      // App. K: the stance distribution of each SFT set (K.2) and the value gap of each preference set (K.3, K.4).
      ...Object.fromEntries(
        ['wildchat', 'alpaca', 'ultrafeedback', 'hh-rlhf', 'synthetic'].map((d) => [`${d}-stances`, { build: 'stance-analysis', from: { dataset: d, questions: 'v-prism' } }]),
      ),
    },
    stages,
    evaluation: { evalSet: 'v-prism', topics: TOPICS },
  };
}

if (require.main === module) {
  for (const b of BASES) {
    const spec = paperSpec(b);
    LineageSpec.parse(spec);
    const file = path.join(__dirname, `${spec.name}.json`);
    fs.writeFileSync(file, JSON.stringify(spec, null, 2) + '\n');
    console.log(`wrote ${file} (${spec.stages.length} stages)`);
  }
}
