import { describe, expect, it } from 'vitest';
import { labelOfToken, parseStanceLogprobs, readStanceLogprobs } from '../../activities/judge/parse';

const t = (token: string, logprob: number): { token: string; logprob: number } => ({ token, logprob });

describe('labelOfToken', () => {
  it.each([
    ['support', 'support'],
    ['Support', 'support'],
    [' support', 'support'],
    ['SUPPORT', 'support'],
    ['Support.', 'support'],
    ['"support"', 'support'],
    ['**Support', 'support'],
    ['support\n', 'support'],
    ['Ġsupport', 'support'],
    ['▁Support', 'support'],
    ['sup', 'support'],
    ['Supp', 'support'],
    ['supports', 'support'],
    ['supportive', 'support'],
    ['neutral', 'neutral'],
    ['Neutral.', 'neutral'],
    ['neut', 'neutral'],
    [' Neu', 'neutral'],
    ['oppose', 'oppose'],
    [' opp', 'oppose'],
    ['Opposed', 'oppose'],
    ['OPPOSE!', 'oppose'],
  ])('%j → %s', (token, label) => {
    expect(labelOfToken(token)).toBe(label);
  });

  it.each(['s', 'su', 'op', 'ne', 'n', '', ' ', '.', 'super', 'opposite', 'neutron', 'The', 'I', 'Yes', 'suppose'])(
    '%j names no label',
    (token) => {
      expect(labelOfToken(token)).toBeUndefined();
    },
  );
});

describe('parseStanceLogprobs', () => {
  it('is the softmax over the three labels', () => {
    const p = parseStanceLogprobs([t('support', Math.log(0.6)), t('neutral', Math.log(0.3)), t('oppose', Math.log(0.1))]);
    expect(p).not.toBeNull();
    expect(p?.support).toBeCloseTo(0.6, 10);
    expect(p?.neutral).toBeCloseTo(0.3, 10);
    expect(p?.oppose).toBeCloseTo(0.1, 10);
  });

  it('renormalises over the labels only (other tokens carry no weight)', () => {
    const p = parseStanceLogprobs([t('The', Math.log(0.5)), t('support', Math.log(0.3)), t('oppose', Math.log(0.1))]);
    expect(p?.support).toBeCloseTo(0.75, 10);
    expect(p?.oppose).toBeCloseTo(0.25, 10);
    expect(p?.neutral).toBe(0);
  });

  it('combines several tokens of one label with log-sum-exp', () => {
    const p = parseStanceLogprobs([
      t(' Support', Math.log(0.2)),
      t('support', Math.log(0.2)),
      t('sup', Math.log(0.1)),
      t('Neutral.', Math.log(0.25)),
      t('neut', Math.log(0.25)),
    ]);
    expect(p?.support).toBeCloseTo(0.5, 10);
    expect(p?.neutral).toBeCloseTo(0.5, 10);
    expect(p?.oppose).toBe(0);
  });

  it('treats a label missing from the top-k as absent', () => {
    const p = parseStanceLogprobs([t(' opp', -0.2), t('I', -2)]);
    expect(p).toEqual({ support: 0, neutral: 0, oppose: 1 });
  });

  it('returns null when no label is among the top tokens', () => {
    expect(parseStanceLogprobs([t('I', -0.1), t('The', -1), t('As', -3)])).toBeNull();
    expect(parseStanceLogprobs([])).toBeNull();
  });

  it('ignores NaN logprobs and survives -Infinity', () => {
    expect(parseStanceLogprobs([t('support', Number.NaN)])).toBeNull();
    expect(parseStanceLogprobs([t('support', -Infinity)])).toBeNull();
    expect(parseStanceLogprobs([t('support', -Infinity), t('oppose', -1)])).toEqual({ support: 0, neutral: 0, oppose: 1 });
  });

  it('is numerically stable for very negative logprobs', () => {
    const p = parseStanceLogprobs([t('support', -1000), t('oppose', -1001)]);
    expect(p?.support).toBeCloseTo(1 / (1 + Math.exp(-1)), 10);
    expect(p!.support + p!.neutral + p!.oppose).toBeCloseTo(1, 12);
  });

  it('reports which tokens it used', () => {
    const r = readStanceLogprobs([t('I', -0.1), t(' Support', -1), t('neut', -2)]);
    expect(r.labelTokens.map((x) => x.token)).toEqual([' Support', 'neut']);
  });
});
