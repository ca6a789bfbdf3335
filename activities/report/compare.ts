/**
 * The comparison page of `lineage compare`: several lineages' stages side by side, like the paper's
 * Tab. 1 (rows: topics; column groups: algorithm × preference dataset; per stance M and η) and its
 * Figs. 3/4/7 (per topic and stance, v over training steps, one line per stage with its 95 % band).
 * One self-contained HTML page with inline SVG and no script, rendered as the lineage report is
 * (figure.ts's Vega-Lite → SVG path, html.ts's styles and escaping). Pure: reads and writes nothing.
 */
import type { TopLevelSpec } from 'vega-lite';
import { z } from 'zod';
import { STANCES, StageDrift, type Stance } from '../../common/contracts';
import { compareCodeUnits, formatSigned } from '../../common/drift';
import { renumberSvgIds, STANCE_COLOURS, toSvg } from './figure';
import { CSS, documentHead, esc, shade } from './html';

/** Display names of the stage kinds (the algorithm of a column group). */
export const ALGORITHM_NAMES: Readonly<Record<string, string>> = { sft: 'SFT', reward: 'Reward', ppo: 'PPO', dpo: 'DPO', simpo: 'SimPO' };

/** One compared stage: a column group of the table and a line in every plot. */
export const CompareStage = z.object({
  /** `<lineage>/<stage id>`: unique within a comparison. */
  key: z.string().min(1),
  lineage: z.string().min(1),
  stageId: z.string().min(1),
  kind: z.string().min(1),
  /** The stage's dataset (its name in the spec); null when the spec could not be read. */
  dataset: z.string().nullable(),
  /** How a stance-pairs set was labelled (`support-aligned`, …); null for SFT or an unknown spec. */
  alignment: z.string().nullable(),
  drift: StageDrift,
});
export type CompareStage = z.infer<typeof CompareStage>;

export const RenderComparePageInput = z.object({
  stages: z.array(CompareStage).min(1),
  /** Shown verbatim (the caller's clock), so the same input renders the same page. */
  generatedAt: z.string(),
});
export type RenderComparePageInput = z.infer<typeof RenderComparePageInput>;

/** "DPO × demo-stance-pairs (support-aligned)": the column group's label, as in the paper's Tab. 1. */
export function stageLabel(s: Pick<CompareStage, 'kind' | 'dataset' | 'alignment'>): string {
  const algorithm = ALGORITHM_NAMES[s.kind] ?? s.kind;
  const aligned = s.alignment && s.alignment !== 'as-is' ? ` (${s.alignment})` : '';
  return s.dataset === null ? algorithm : `${algorithm} × ${s.dataset}${aligned}`;
}

/** Every category any compared stage has drift for, in code-unit order. */
export function comparedCategories(stages: readonly CompareStage[]): string[] {
  return [...new Set(stages.flatMap((s) => Object.keys(s.drift.topics)))].sort(compareCodeUnits);
}

/** ↑ for a rise, ↓ for a fall, → when M rounds to 0.00 (the table's precision). */
export function driftArrow(M: number): string {
  return M >= 0.005 ? '↑' : M <= -0.005 ? '↓' : '→';
}

/** Line colours of the compared stages (Tableau 10; stages beyond ten repeat them). */
export const STAGE_COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'] as const;
const colourOf = (i: number): string => STAGE_COLOURS[i % STAGE_COLOURS.length] as string;

export interface RenderComparePageResult {
  html: string;
  /** Plots on the page: one per topic × stance. */
  figures: number;
}

/** Renders the page; invalid input (wrong shapes, a key twice) is an Error naming what is wrong. */
export async function renderComparePage(input: RenderComparePageInput): Promise<RenderComparePageResult> {
  const { stages, generatedAt } = RenderComparePageInput.parse(input);
  const keys = new Set<string>();
  for (const s of stages) {
    if (keys.has(s.key)) throw new Error(`stage ${s.key} is compared twice`);
    keys.add(s.key);
  }
  const categories = comparedCategories(stages);
  const lineages = [...new Set(stages.map((s) => s.lineage))];
  let figures = 0;
  const topicRows: string[] = [];
  for (const category of categories) {
    const panels: string[] = [];
    for (const stance of STANCES) {
      const svg = await renderStanceFigure({ stages, category, stance, idPrefix: `cmp${figures}-` });
      figures++;
      panels.push(`<figure class="panel" data-topic="${esc(category)}" data-stance="${stance}" aria-label="${esc(`${category}: ${stance}`)}">${svg}</figure>`);
    }
    const texts = [...new Set(stages.map((s) => s.drift.topics[category]?.topic).filter((t): t is string => t !== undefined))];
    topicRows.push(
      `<section class="topic" data-topic="${esc(category)}"><h3>${esc(category)} <span class="topic-text">${esc(texts.join(' / '))}</span></h3><div class="grid3">${panels.join('')}</div></section>`,
    );
  }

  const html = `${documentHead(`Value drift — ${lineages.join(' vs ')}`, CSS + COMPARE_CSS)}
<body>
<header>
<h1>Value drift — comparison</h1>
<p class="meta">Generated ${esc(generatedAt)} · ${lineages.length} lineage${lineages.length === 1 ? '' : 's'} · ${stages.length} stage${stages.length === 1 ? '' : 's'}</p>
<ol class="stages">${stages.map((s, i) => `<li data-stage="${esc(s.key)}"><i style="background:${colourOf(i)}"></i><b>${esc(stageLabel(s))}</b> <span class="key">${esc(s.key)}</span> <span class="meta">${s.drift.totalSteps} steps, evaluated at ${esc(s.drift.steps.join(', ') || 'none')}</span></li>`).join('')}</ol>
<p class="defs"><b>M</b> = v<sub>end</sub> − v<sub>start</sub> over a stage (↑ rise, ↓ fall, → below 0.005); <b>η</b> = the fraction of the stage's steps until v first lies inside the 95&nbsp;% interval of its extremum. Plots: v(T) per stance over each stage's own training steps (step 0 is the stage's starting point), bands are 95&nbsp;% t-intervals over prompts.</p>
</header>
<main>
<section class="stage">
<h2>Drift magnitude and time</h2>
${categories.length === 0 ? '<p class="empty">No compared stage has a topic with labelled generations.</p>' : renderCompareTable(stages, categories)}
</section>
<section class="stage">
<h2>Trajectories</h2>
${topicRows.join('\n')}
</section>
</main>
</body>
</html>
`;
  return { html, figures };
}

function renderCompareTable(stages: readonly CompareStage[], categories: readonly string[]): string {
  const groups = stages
    .map((s, i) => `<th colspan="${STANCES.length * 2}" class="group" data-stage="${esc(s.key)}" scope="colgroup"><i style="background:${colourOf(i)}"></i>${esc(stageLabel(s))}<span class="key">${esc(s.key)}</span></th>`)
    .join('');
  const stanceRow = stages.map(() => STANCES.map((st) => `<th colspan="2" class="stance-${st}">${st}</th>`).join('')).join('');
  const metricRow = stages.map(() => STANCES.map(() => '<th>M</th><th>η</th>').join('')).join('');
  const head = `<thead><tr><th rowspan="3">topic</th>${groups}</tr>\n<tr>${stanceRow}</tr>\n<tr>${metricRow}</tr></thead>`;
  const rows = categories.map((category) => {
    const cells = stages
      .map((s) => {
        const entry = s.drift.topics[category];
        return STANCES.map((stance) => {
          const attrs = (metric: string): string => `data-stage="${esc(s.key)}" data-topic="${esc(category)}" data-stance="${stance}" data-metric="${metric}"`;
          if (!entry) return `<td class="num missing" ${attrs('M')}>–</td><td class="num missing" ${attrs('eta')}>–</td>`;
          const sd = entry.stances[stance];
          const mTitle = `M = ${sd.vEnd.toFixed(4)} − ${sd.vStart.toFixed(4)} = ${sd.M.toFixed(4)}`;
          const etaTitle = `η_ext = step ${sd.etaExtStep} of ${s.drift.steps[s.drift.steps.length - 1] ?? 0}, η = ${sd.eta.toFixed(4)}`;
          return `<td class="num" ${attrs('M')} style="background:${shade(sd.M)}" title="${esc(mTitle)}">${driftArrow(sd.M)}${esc(formatSigned(sd.M))}</td><td class="num" ${attrs('eta')} title="${esc(etaTitle)}">${sd.eta.toFixed(2)}</td>`;
        }).join('');
      })
      .join('');
    return `<tr data-topic="${esc(category)}"><th scope="row" class="topic">${esc(category)}</th>${cells}</tr>`;
  });
  return `<div class="scroll"><table class="drift compare">${head}<tbody>${rows.join('\n')}</tbody></table></div>`;
}

/** One topic × stance panel: v over each stage's steps, one coloured line and band per stage. */
export async function renderStanceFigure(input: {
  stages: readonly CompareStage[];
  category: string;
  stance: Stance;
  idPrefix: string;
  width?: number;
  height?: number;
}): Promise<string> {
  const { stages, category, stance, idPrefix, width = 250, height = 140 } = input;
  const rows = stages.flatMap((s) =>
    (s.drift.topics[category]?.stances[stance].trajectory ?? []).map((pt) => ({ stage: s.key, step: pt.step, v: pt.v, lo: pt.lo, hi: pt.hi })),
  );
  const lastStep = Math.max(1, ...stages.map((s) => Math.max(s.drift.totalSteps, ...s.drift.steps)));
  const colour = { field: 'stage', type: 'nominal', legend: null, scale: { domain: stages.map((s) => s.key), range: stages.map((_, i) => colourOf(i)) } } as const;
  const spec: TopLevelSpec = {
    width,
    height,
    background: 'white',
    padding: 6,
    title: { text: stance, anchor: 'start', fontSize: 12, color: STANCE_COLOURS[stance] },
    data: { values: rows },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'training step', scale: { domain: [0, lastStep], nice: false }, axis: { tickCount: 5, format: lastStep >= 100_000 ? '~s' : 'd' } },
      color: colour,
    },
    layer: [
      {
        mark: { type: 'area', opacity: 0.14, clip: true },
        encoding: { y: { field: 'lo', type: 'quantitative', stack: null, scale: { domain: [0, 1] }, title: `p(${stance})` }, y2: { field: 'hi' } },
      },
      {
        mark: { type: 'line', strokeWidth: 1.8, point: { size: 16, filled: true } },
        encoding: { y: { field: 'v', type: 'quantitative', scale: { domain: [0, 1] } } },
      },
    ],
    config: { font: 'sans-serif', axis: { labelFontSize: 9, titleFontSize: 10, titleFontWeight: 'normal', gridColor: '#eee' }, view: { stroke: '#ccc' } },
  };
  return renumberSvgIds(await toSvg(spec), idPrefix);
}

const COMPARE_CSS = `
header, main { max-width: 1400px; }
ol.stages { margin: 6px 0; padding-left: 22px; font-size: 13px; }
ol.stages i, th.group i { display: inline-block; width: 16px; height: 4px; vertical-align: middle; margin-right: 6px; }
.key { color: #666; font-size: 11.5px; margin-left: 6px; font-weight: normal; }
th.group .key { display: block; margin: 0; }
.scroll { overflow-x: auto; }
table.compare td.missing { color: #aaa; }
table.compare th.group { border-bottom: 2px solid #bbb; }
section.topic { margin: 12px 0 4px; }
section.topic h3 { font-size: 15px; margin: 0 0 4px; }
section.topic .topic-text { font-weight: normal; color: #666; font-size: 12px; }
.grid3 { display: grid; grid-template-columns: repeat(3, minmax(260px, 1fr)); gap: 8px 12px; }
`;
