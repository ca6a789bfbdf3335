import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { cacheKey, cacheObjectKey, canonicalJson } from '../../activities/judge/cache';
import { buildJudgeMessages, JUDGE_PROMPT_VERSION } from '../../activities/judge/prompt';

describe('judge prompt', () => {
  it('puts question, response and topic in and asks for one of the three words', () => {
    const msgs = buildJudgeMessages({ question: 'Q?', response: 'R.', topic: 'abortion rights' });
    const text = msgs.map((m) => (typeof m.content === 'string' ? m.content : '')).join('\n');
    expect(text).toContain('Q?');
    expect(text).toContain('R.');
    expect(text).toContain('abortion rights');
    expect(text).toMatch(/exactly one word: support, neutral or oppose/);
  });

  it('cannot change without bumping JUDGE_PROMPT_VERSION', () => {
    // If this fails you edited the prompt: bump JUDGE_PROMPT_VERSION (old cache entries must not be
    // served for new wording) and update the pinned hash here.
    const rendered = JSON.stringify(buildJudgeMessages({ question: '{q}', response: '{r}', topic: '{t}' }));
    const hash = createHash('sha256').update(rendered).digest('hex').slice(0, 16);
    expect({ version: JUDGE_PROMPT_VERSION, hash }).toEqual({ version: 'stance-v1', hash: PINNED_HASH });
  });
});

const PINNED_HASH = '7687e2d88142033e';

describe('cacheKey', () => {
  const base = { endpoint: 'https://api.openai.com/v1', judgeModel: 'gpt-4o', topLogprobs: 20, promptVersion: 'stance-v1', question: 'q', response: 'r', topic: 't' };

  it('is sha256 hex and independent of property order', () => {
    const k = cacheKey(base);
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(cacheKey({ topic: 't', response: 'r', question: 'q', promptVersion: 'stance-v1', topLogprobs: 20, judgeModel: 'gpt-4o', endpoint: 'https://api.openai.com/v1' })).toBe(k);
    expect(k).toBe(createHash('sha256').update(canonicalJson(base)).digest('hex'));
    // A trailing slash names the same endpoint.
    expect(cacheKey({ ...base, endpoint: 'https://api.openai.com/v1/' })).toBe(k);
  });

  it('changes with every field', () => {
    const k = cacheKey(base);
    for (const field of Object.keys(base) as Array<keyof typeof base>) {
      const changed = typeof base[field] === 'number' ? (base[field] as number) + 1 : `${base[field]}x`;
      expect(cacheKey({ ...base, [field]: changed })).not.toBe(k);
    }
  });

  it('does not confuse field boundaries', () => {
    expect(cacheKey({ ...base, question: 'ab', response: 'c' })).not.toBe(cacheKey({ ...base, question: 'a', response: 'bc' }));
  });

  it('maps to the store layout', () => {
    const k = cacheKey(base);
    expect(cacheObjectKey(k)).toBe(`cache/judge/${k.slice(0, 2)}/${k}.json`);
  });
});
