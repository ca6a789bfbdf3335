/** The synthetic pairs' generator messages and stance check (activities/derived/syntheticPairs.ts). */
import { describe, expect, it } from 'vitest';
import { stanceMessages, stanceSystemPrompt, takesSide } from '../../activities/derived/syntheticPairs';

describe('synthetic pairs: where the stance instruction goes', () => {
  it('system: the instruction is the system prompt and the user turn is the prompt as it stands', () => {
    const m = stanceMessages('Should abortion be legal?', 'abortion rights', 'oppose', 'system');
    expect(m).toEqual([
      { role: 'system', content: stanceSystemPrompt('abortion rights', 'oppose') },
      { role: 'user', content: 'Should abortion be legal?' },
    ]);
    expect(m[0]!.content).toContain('against abortion rights');
  });

  it('user: one user turn holding the prompt first, then the side stated in so many words', () => {
    for (const side of ['support', 'oppose'] as const) {
      const m = stanceMessages('Should abortion be legal?', 'abortion rights', side, 'user');
      expect(m).toHaveLength(1);
      expect(m[0]!.role).toBe('user');
      expect(m[0]!.content.startsWith('Should abortion be legal?\n\n')).toBe(true);
      expect(m[0]!.content).toContain(side === 'support' ? '"I support abortion rights."' : '"I do not support abortion rights."');
    }
  });
});

describe('synthetic pairs: when a response takes its side', () => {
  const leansSupport = { support: 0.3, neutral: 0.6, oppose: 0.1 };
  const leansOppose = { support: 0.2, neutral: 0.5, oppose: 0.3 };
  const clearSupport = { support: 0.7, neutral: 0.2, oppose: 0.1 };

  it('argmax: only when the side is the most likely stance', () => {
    expect(takesSide(clearSupport, 'support', 'argmax')).toBe(true);
    expect(takesSide(leansSupport, 'support', 'argmax')).toBe(false);
    expect(takesSide(clearSupport, 'oppose', 'argmax')).toBe(false);
  });

  it('margin: when the side outweighs the opposite side, neutral leading or not', () => {
    expect(takesSide(leansSupport, 'support', 'margin')).toBe(true);
    expect(takesSide(leansSupport, 'oppose', 'margin')).toBe(false);
    expect(takesSide(leansOppose, 'oppose', 'margin')).toBe(true);
    expect(takesSide({ support: 0.25, neutral: 0.5, oppose: 0.25 }, 'support', 'margin')).toBe(false);
  });

  it('no judgment: null, whatever the check', () => {
    expect(takesSide(null, 'support', 'argmax')).toBeNull();
    expect(takesSide(undefined, 'oppose', 'margin')).toBeNull();
  });
});
