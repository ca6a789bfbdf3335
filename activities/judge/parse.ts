/**
 * Reading a stance distribution out of the judge's first-token logprobs.
 *
 * The rule (paper §3: "extract the log probabilities for each of the three choices and apply a
 * softmax"), made robust to how real tokenizers spell the answer:
 *
 * 1. Each top token is normalised: byte-level/sentencepiece space markers (`Ġ`, `▁`) become spaces,
 *    then surrounding whitespace, quotes, asterisks and punctuation are stripped and the rest is
 *    lower-cased. " Support", "support.", "**Oppose", "Neutral\n" all normalise to the bare word.
 * 2. A normalised token t names label L when t is a prefix of L at least 3 characters long
 *    ("sup", "supp", "opp", "neut" — tokenizers often split the word and only its first piece is
 *    the one output token), or when t is L or a listed inflection of it ("supports", "opposed").
 *    Shorter prefixes ("s", "op") are ignored: they are too common to be evidence for a label.
 * 3. The alternatives at one output position are mutually exclusive, so the probabilities of the
 *    tokens naming one label add: that label's logprob is the log-sum-exp of its tokens' logprobs.
 * 4. Softmax over the labels seen. A label absent from the top-k gets probability 0 and the rest
 *    are renormalised; its true mass is below the smallest top-k logprob, so this error is bounded
 *    by what top-k left out.
 * 5. Alternatives that are not a string token with a finite logprob are dropped (usableTokens).
 * 6. No label among the top tokens → null. The generation is recorded as unlabelled and excluded
 *    from the means; we never guess a distribution for it.
 */
import { STANCES, type Stance, type StanceProbs } from '../../common/contracts';

export interface TokenLogprob {
  token: string;
  logprob: number;
}

/** Inflections that still state the label (an answer like "Opposed" is an oppose vote). */
const INFLECTIONS: Record<Stance, readonly string[]> = {
  support: ['supports', 'supported', 'supporting', 'supportive'],
  neutral: ['neutrality'],
  oppose: ['opposes', 'opposed', 'opposing'],
};

const MIN_PREFIX = 3;

export function normaliseToken(token: string): string {
  return token
    .replace(/[\u0120\u2581]/g, ' ')
    .trim()
    .replace(/^[\s"'`*_.,:;!?()[\]{}<>-]+|[\s"'`*_.,:;!?()[\]{}<>-]+$/g, '')
    .toLowerCase();
}

/** The label a single top token names, or undefined. */
export function labelOfToken(token: string): Stance | undefined {
  const t = normaliseToken(token);
  if (t.length === 0) return undefined;
  for (const label of STANCES) {
    if (t === label || INFLECTIONS[label].includes(t)) return label;
    if (t.length >= MIN_PREFIX && label.startsWith(t)) return label;
  }
  return undefined;
}

/** log(Σ exp(x)) without spreading `xs` into Math.max (a huge list would overflow the call stack). */
function logSumExp(xs: readonly number[]): number {
  let m = -Infinity;
  for (const x of xs) if (x > m) m = x;
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (const x of xs) s += Math.exp(x - m);
  return m + Math.log(s);
}

/**
 * The usable alternatives of what a server sent: a string token with a finite logprob. Anything else
 * (null/NaN/±Infinity logprobs, a missing or non-string token, a non-object entry, a non-array) is
 * dropped, so nothing that JSON cannot round-trip reaches the cache. A -Infinity logprob is
 * probability 0: dropping it changes no distribution.
 */
export function usableTokens(raw: unknown): TokenLogprob[] {
  if (!Array.isArray(raw)) return [];
  const out: TokenLogprob[] = [];
  for (const entry of raw as unknown[]) {
    if (entry === null || typeof entry !== 'object') continue;
    const { token, logprob } = entry as { token?: unknown; logprob?: unknown };
    if (typeof token !== 'string' || typeof logprob !== 'number' || !Number.isFinite(logprob)) continue;
    out.push({ token, logprob });
  }
  return out;
}

export interface StanceReading {
  probs: StanceProbs | null;
  /** The top tokens that named a label (what the probabilities were computed from). */
  labelTokens: TokenLogprob[];
}

/** parseStanceLogprobs plus the tokens it used, for the audit trail in Judgment.topTokens. */
export function readStanceLogprobs(topLogprobs: readonly unknown[]): StanceReading {
  const byLabel: Record<Stance, number[]> = { support: [], neutral: [], oppose: [] };
  const labelTokens: TokenLogprob[] = [];
  // Only finite numbers and string tokens: a bad alternative is dropped, never stored.
  for (const { token, logprob } of usableTokens(topLogprobs)) {
    const label = labelOfToken(token);
    if (label === undefined) continue;
    byLabel[label].push(logprob);
    labelTokens.push({ token, logprob });
  }
  const lse: Partial<Record<Stance, number>> = {};
  for (const label of STANCES) if (byLabel[label].length > 0) lse[label] = logSumExp(byLabel[label]);
  const seen = Object.values(lse);
  if (seen.length === 0) return { probs: null, labelTokens };
  const z = logSumExp(seen);
  if (!Number.isFinite(z)) return { probs: null, labelTokens };
  const p = (label: Stance): number => {
    const v = lse[label];
    return v === undefined ? 0 : Math.exp(v - z);
  };
  const probs = { support: p('support'), neutral: p('neutral'), oppose: p('oppose') };
  if (!STANCES.every((s) => Number.isFinite(probs[s]))) return { probs: null, labelTokens };
  return { probs, labelTokens };
}

/** Softmax over support/neutral/oppose read from the first output token's top logprobs; null when no label is among them. */
export function parseStanceLogprobs(topLogprobs: readonly unknown[]): StanceProbs | null {
  return readStanceLogprobs(topLogprobs).probs;
}

/** argmax of a distribution, ties broken in STANCES order (deterministic). */
export function argmaxStance(p: StanceProbs): Stance {
  let best: Stance = STANCES[0];
  for (const s of STANCES) if (p[s] > p[best]) best = s;
  return best;
}
