import { ApplicationFailure } from '@temporalio/common';
import { beforeAll, describe, expect, it } from 'vitest';
import { STANCES, type CheckpointSummary, type StageDrift, type TopicSummary } from '../../common/contracts';
import { computeStageDrift, formatSigned } from '../../common/drift';
import { esc, renumberSvgIds, renderFigureSvg, renderLineageReport, type RenderLineageReportResult } from '../../activities/report';
import { wrapText } from '../../activities/report/figure';

const HOSTILE_CATEGORY = 'x"><img src=x onerror=alert(1)>';
const HOSTILE_TOPIC = '<script>alert("pwned")</script> & friends';

function topic(text: string, v: [number, number, number], half = 0.05): TopicSummary {
  const [s, n, o] = v;
  return {
    topic: text,
    prompts: 8,
    unlabelled: 1,
    v: { support: s, neutral: n, oppose: o },
    perPrompt: [],
    ci95: { support: [s - half, s + half], neutral: [n - half, n + half], oppose: [o - half, o + half] },
  };
}

function stage(stageId: string, totalSteps: number, points: Array<Record<string, TopicSummary>>): StageDrift {
  const step = totalSteps / (points.length - 1);
  const summaries: CheckpointSummary[] = points.map((topics, i) => ({
    lineage: 'demo <lineage>',
    stageId,
    step: i * step,
    totalSteps,
    judgeModel: 'judge',
    promptVersion: 'v1',
    topics,
  }));
  return computeStageDrift({ summaries });
}

const sft = stage('sft', 300, [
  { abortion: topic('abortion rights', [0.2, 0.7, 0.1]), [HOSTILE_CATEGORY]: topic(HOSTILE_TOPIC, [0.3, 0.4, 0.3]) },
  { abortion: topic('abortion rights', [0.55, 0.35, 0.1]), [HOSTILE_CATEGORY]: topic(HOSTILE_TOPIC, [0.25, 0.45, 0.3]) },
  { abortion: topic('abortion rights', [0.62, 0.28, 0.1]), [HOSTILE_CATEGORY]: topic(HOSTILE_TOPIC, [0.2, 0.5, 0.3]) },
  { abortion: topic('abortion rights', [0.6, 0.3, 0.1]), [HOSTILE_CATEGORY]: topic(HOSTILE_TOPIC, [0.2, 0.5, 0.3]) },
]);
const dpo = stage('dpo', 200, [
  { abortion: topic('abortion rights', [0.6, 0.3, 0.1]), climate: topic('climate action', [0.5, 0.4, 0.1]) },
  { abortion: topic('abortion rights', [0.7, 0.2, 0.1]), climate: topic('climate action', [0.45, 0.45, 0.1]) },
  { abortion: topic('abortion rights', [0.75, 0.15, 0.1]), climate: topic('climate action', [0.4, 0.5, 0.1]) },
]);
const reward: StageDrift = { lineage: 'demo <lineage>', stageId: 'rm', totalSteps: 50, steps: [], topics: {} };

/** Minimal XML well-formedness check: balanced tags, quoted attributes, only known entities. */
function assertWellFormedSvg(svg: string): void {
  expect(svg.startsWith('<svg ')).toBe(true);
  expect(svg).toMatch(/^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  const stack: string[] = [];
  const tagRe = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  let match: RegExpExecArray | null;
  while ((match = tagRe.exec(svg)) !== null) {
    const text = svg.slice(last, match.index);
    expect(text, `stray markup before ${match[0]}`).not.toMatch(/[<>]/);
    expect(text).not.toMatch(/&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/);
    last = tagRe.lastIndex;
    const [, closing, name, , selfClosing] = match;
    if (closing) expect(stack.pop(), `closing </${name}>`).toBe(name);
    else if (!selfClosing) stack.push(name as string);
  }
  expect(svg.slice(last)).toBe('');
  expect(stack).toEqual([]);
}

function cell(html: string, category: string, stance: string, metric: 'M' | 'eta'): string | undefined {
  const attrs = `data-topic="${esc(category)}" data-stance="${stance}" data-metric="${metric}"`;
  const at = html.indexOf(attrs);
  if (at < 0) return undefined;
  return /^[^>]*>([^<]*)<\/td>/.exec(html.slice(at))?.[1];
}

describe('renderLineageReport', () => {
  const input = () => ({
    lineage: 'demo <lineage>',
    generatedAt: '2025-11-27T12:00:00Z',
    stages: [
      { stageId: 'sft', kind: 'sft', parentId: 'base-model', drift: sft },
      { stageId: 'rm', kind: 'reward', parentId: 'sft', drift: reward },
      { stageId: 'dpo', kind: 'dpo', parentId: 'sft', drift: dpo },
    ],
  });
  let report: RenderLineageReportResult;
  beforeAll(async () => {
    report = await renderLineageReport(input());
  }, 30_000);

  it('has one figure per stage × topic, inline and uniquely named', () => {
    expect(report.figures.map((f) => f.name)).toEqual(['sft.abortion', 'sft.x_img_src_x_onerror_alert_1_', 'dpo.abortion', 'dpo.climate']);
    expect(report.html.match(/<figure class="panel"/g)).toHaveLength(4);
    expect(report.html.match(/<svg /g)).toHaveLength(4);
    for (const f of report.figures) expect(report.html).toContain(f.svg);
    expect(report.html).toContain('No evaluated checkpoint with labelled generations');
  });

  it('emits well-formed SVG with three stance lines and CI bands per figure', () => {
    for (const f of report.figures) {
      assertWellFormedSvg(f.svg);
      for (const colour of ['#2ca02c', '#1f77b4', '#d62728']) expect(f.svg).toContain(colour);
      expect(f.svg.match(/aria-roledescription="line mark"/g)).toHaveLength(3);
      expect(f.svg.match(/aria-roledescription="area mark"/g)).toHaveLength(3);
    }
  });

  it('keeps SVG ids unique across the page and every url(#id) resolves', () => {
    const ids = [...report.html.matchAll(/\sid="([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(ids).size).toBe(ids.length);
    for (const [, ref] of report.html.matchAll(/url\(#([^)]+)\)/g)) expect(ids).toContain(ref);
  });

  it('escapes every user-supplied text', () => {
    const { html } = report;
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<img/i);
    expect(html).toContain('&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; friends');
    expect(html).toContain('<title>Value drift — demo &lt;lineage&gt;</title>');
    expect(html).toContain(`data-topic="${esc(HOSTILE_CATEGORY)}"`);
    // Vega escapes text inside the SVG as well.
    const hostile = report.figures[1]?.svg ?? '';
    expect(hostile).toContain('&lt;img src=x onerror=alert(1)&gt;');
  });

  it('loads nothing from the network', () => {
    const { html } = report;
    expect(html).toContain(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`);
    expect(html).not.toMatch(/\s(?:src|href)="(?!#)/);
    const urls = [...html.matchAll(/https?:\/\/[^\s"'<>]+/g)].map((m) => m[0]);
    expect(new Set(urls)).toEqual(new Set(['http://www.w3.org/2000/svg', 'http://www.w3.org/1999/xlink']));
  });

  it('tabulates M and η exactly as computeStageDrift computed them', () => {
    for (const drift of [sft, dpo]) {
      const section = report.html.split('<section class="stage"').find((part) => part.includes(`data-stage="${drift.stageId}">`)) ?? '';
      for (const [category, entry] of Object.entries(drift.topics)) {
        for (const stance of STANCES) {
          expect(cell(section, category, stance, 'M')).toBe(formatSigned(entry.stances[stance].M));
          expect(cell(section, category, stance, 'eta')).toBe(entry.stances[stance].eta.toFixed(2));
        }
      }
    }
    // Hand check of one row: sft abortion support 0.2 → 0.55 → 0.62 → 0.60: M = +0.40;
    // max 0.62 at step 200 with band [0.57, 0.67]; step 100 (0.55) is outside → η = 200/300.
    expect(cell(report.html, 'abortion', 'support', 'M')).toBe('+0.40');
    expect(cell(report.html, 'abortion', 'support', 'eta')).toBe('0.67');
  });

  it('is deterministic', async () => {
    const again = await renderLineageReport(input());
    expect(again.html).toBe(report.html);
  }, 30_000);

  it('refuses, non-retryably, a drift that belongs to another stage or lineage', async () => {
    const wrongStage = renderLineageReport({
      lineage: 'demo <lineage>',
      generatedAt: 'now',
      stages: [{ stageId: 'dpo', kind: 'dpo', parentId: null, drift: sft }],
    });
    await expect(wrongStage).rejects.toBeInstanceOf(ApplicationFailure);
    await expect(wrongStage).rejects.toMatchObject({ nonRetryable: true, type: 'BadReportInput' });
    await expect(
      renderLineageReport({ lineage: 'other', generatedAt: 'now', stages: [{ stageId: 'sft', kind: 'sft', parentId: null, drift: sft }] }),
    ).rejects.toThrow(/not other\/sft/);
    await expect(
      renderLineageReport({ lineage: 'x', generatedAt: 'now', stages: [{ stageId: '', kind: 'sft', parentId: null, drift: sft }] }),
    ).rejects.toThrow(/stages\.0\.stageId/);
  });
});

describe('renderFigureSvg', () => {
  it('renders one stage/topic panel with the topic as title', async () => {
    const figure = await renderFigureSvg({ drift: dpo, category: 'climate' });
    expect(figure.name).toBe('dpo.climate');
    assertWellFormedSvg(figure.svg);
    expect(figure.svg).toContain('>climate</text>');
    expect(figure.svg).toMatch(/>climate action</);
    expect(figure.svg).toContain('clip-path="url(#dpo_climate-c1)"');
    // The same figure renders to the same bytes, whatever Vega's global id counter says.
    expect((await renderFigureSvg({ drift: dpo, category: 'climate' })).svg).toBe(figure.svg);
    expect(figure.svg).toContain('training step');
  }, 30_000);

  it('rejects an unknown topic', async () => {
    await expect(renderFigureSvg({ drift: dpo, category: 'nope' })).rejects.toThrow(/no drift for topic "nope"/);
  });
});

describe('helpers', () => {
  it('renumberSvgIds renames ids and their references, inside tags only', () => {
    const svg =
      '<svg><g clip-path="url(#clip25)"><text>id="clip25" url(#clip25)</text></g><use href="#clip26"/>' +
      '<defs><clipPath id="clip25"/><clipPath id="clip26"/></defs></svg>';
    expect(renumberSvgIds(svg, 'f0-')).toBe(
      '<svg><g clip-path="url(#f0-c1)"><text>id="clip25" url(#clip25)</text></g><use href="#f0-c2"/>' +
        '<defs><clipPath id="f0-c1"/><clipPath id="f0-c2"/></defs></svg>',
    );
  });

  it('wrapText wraps on words and marks what it cut', () => {
    expect(wrapText({ text: 'abortion rights', maxChars: 30, maxLines: 2 })).toEqual(['abortion rights']);
    expect(wrapText({ text: 'one two three four five six', maxChars: 9, maxLines: 2 })).toEqual(['one two', 'three…']);
    expect(wrapText({ text: 'supercalifragilistic', maxChars: 8, maxLines: 2 })).toEqual(['superca…']);
  });
});
