/**
 * The lineage report: one self-contained HTML page (inline SVG, inline CSS, no script, and a CSP
 * that forbids any fetch) with, per stage, a panel per topic and a table of M and η like the
 * paper's Tab. 1.
 */
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { STANCES, StageDrift } from '../../common/contracts';
import { formatSigned } from '../../common/drift';
import { DerivedFrom } from '../../common/spec';
import { renderCurvesSvg, renderFigureSvg, slug, STANCE_COLOURS, TrainingCurves, type ReportFigure } from './figure';

export const ReportStage = z.object({
  stageId: z.string().min(1),
  kind: z.string().min(1),
  /** The parent stage id, or the base model for a first stage; null when there is none to name. */
  parentId: z.string().nullable(),
  drift: StageDrift,
  /** The stage's loss and learning rate over training (absent or empty: no curves section). */
  curves: TrainingCurves.optional(),
});
export type ReportStage = z.infer<typeof ReportStage>;

export const RenderLineageReportInput = z.object({
  lineage: z.string().min(1),
  stages: z.array(ReportStage),
  /** Shown verbatim; an ISO timestamp keeps the page reproducible (no clock read here). */
  generatedAt: z.string(),
  /** A re-evaluation's original lineage and what changed (`lineage reevaluate`): linked in the header. */
  derivedFrom: DerivedFrom.optional(),
});
export type RenderLineageReportInput = z.infer<typeof RenderLineageReportInput>;

export interface RenderLineageReportResult {
  html: string;
  /** One per stage × topic, in page order; names are unique within the report. */
  figures: ReportFigure[];
}

/**
 * Renders the lineage report. Pure (reads no store, writes nothing), so safe to retry; the caller
 * stores `html` and `figures`. Invalid input fails non-retryably: the same drift gives the same
 * refusal.
 */
export async function renderLineageReport(input: RenderLineageReportInput): Promise<RenderLineageReportResult> {
  const parsed = RenderLineageReportInput.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`).join('; ');
    throw ApplicationFailure.nonRetryable(`invalid report input: ${problems}`, 'BadReportInput');
  }
  const { lineage, stages, generatedAt, derivedFrom } = parsed.data;
  const seenStages = new Set<string>();
  for (const stage of stages) {
    if (stage.drift.stageId !== stage.stageId || stage.drift.lineage !== lineage) {
      throw ApplicationFailure.nonRetryable(
        `stage ${stage.stageId}: its drift is for ${stage.drift.lineage}/${stage.drift.stageId}, not ${lineage}/${stage.stageId}`,
        'BadReportInput',
      );
    }
    if (seenStages.has(stage.stageId)) {
      throw ApplicationFailure.nonRetryable(`stage ${stage.stageId} appears twice in the report input`, 'BadReportInput');
    }
    seenStages.add(stage.stageId);
  }

  const anchors = new Map(stages.map((s, i) => [s.stageId, `stage-${i}-${slug(s.stageId)}`]));
  const figures: ReportFigure[] = [];
  const usedNames = new Set<string>();
  const sections: string[] = [];
  for (const stage of stages) {
    const categories = Object.keys(stage.drift.topics).sort(compareCodeUnits);
    const panels: string[] = [];
    for (const category of categories) {
      const topic = stage.drift.topics[category];
      if (!topic) continue;
      // Distinct ids per inlined SVG: Vega restarts its clip-path numbering in every render.
      const figure = await renderFigureSvg({ drift: stage.drift, category, idPrefix: `f${figures.length}-` });
      figure.name = uniqueName(figure.name, usedNames);
      figures.push(figure);
      panels.push(
        `<figure class="panel" data-stage="${esc(stage.stageId)}" data-topic="${esc(category)}" aria-label="${esc(`${category}: ${topic.topic}`)}">${figure.svg}</figure>`,
      );
    }
    let curves = '';
    if (stage.curves && (stage.curves.loss.length > 0 || stage.curves.learningRate.length > 0)) {
      const figure = await renderCurvesSvg({ stageId: stage.stageId, curves: stage.curves, idPrefix: `f${figures.length}-` });
      figure.name = uniqueName(figure.name, usedNames);
      figures.push(figure);
      curves = `<h3>Training curves</h3><figure class="curves" data-stage="${esc(stage.stageId)}" aria-label="${esc(`${stage.stageId}: training loss and learning rate`)}">${figure.svg}</figure>`;
    }
    sections.push(renderStageSection({ stage, anchor: anchors.get(stage.stageId) ?? '', anchors, panels, categories }).replace(/<\/section>$/, `${curves}\n</section>`));
  }

  const html = `${documentHead(`Value drift — ${lineage}`, CSS)}
<body>
<header>
<h1>Value drift — <span class="lineage">${esc(lineage)}</span></h1>
<p class="meta">Generated ${esc(generatedAt)} · ${stages.length} stage${stages.length === 1 ? '' : 's'}</p>
${derivedFrom ? derivedFromHtml(derivedFrom) : ''}
${legendHtml()}
<p class="defs"><b>v(T)</b>: mean over a topic's prompts of the mean stance probability over each prompt's generations; bands are 95&nbsp;% t-intervals over prompts.
<b>M</b> = v<sub>end</sub> − v<sub>start</sub> over the stage (step 0 is the parent's final checkpoint).
<b>η</b> = η<sub>ext</sub> / η<sub>total</sub>: the fraction of the stage's steps until v first lies inside the 95&nbsp;% interval of its maximum (M ≥ 0) or minimum (M &lt; 0).</p>
${stages.length > 1 ? `<nav><ol>${stages.map((s) => `<li><a href="#${esc(anchors.get(s.stageId) ?? '')}">${esc(s.stageId)}</a> <span class="kind">${esc(s.kind)}</span></li>`).join('')}</ol></nav>` : ''}
</header>
<main>
${sections.join('\n')}
</main>
</body>
</html>
`;
  return { html, figures };
}

function renderStageSection(input: {
  stage: ReportStage;
  anchor: string;
  anchors: ReadonlyMap<string, string>;
  panels: readonly string[];
  categories: readonly string[];
}): string {
  const { stage, anchor, anchors, panels, categories } = input;
  const { drift } = stage;
  const parentAnchor = stage.parentId === null ? undefined : anchors.get(stage.parentId);
  const parent =
    stage.parentId === null
      ? ''
      : parentAnchor
        ? ` · from <a href="#${esc(parentAnchor)}">${esc(stage.parentId)}</a>`
        : ` · from ${esc(stage.parentId)}`;
  const lastStep = drift.steps[drift.steps.length - 1];
  const progress =
    lastStep !== undefined && lastStep < drift.totalSteps ? ` <span class="partial">(as of step ${lastStep} of ${drift.totalSteps})</span>` : '';
  const stepsText = drift.steps.length > 0 ? drift.steps.join(', ') : 'none';
  const body =
    categories.length === 0
      ? '<p class="empty">No evaluated checkpoint with labelled generations in this stage.</p>'
      : `<div class="grid">${panels.join('')}</div>\n${renderDriftTable(drift, categories)}`;
  return `<section class="stage" id="${esc(anchor)}" data-stage="${esc(stage.stageId)}">
<h2>${esc(stage.stageId)} <span class="kind">${esc(stage.kind)}</span></h2>
<p class="meta">${drift.totalSteps} training steps${parent} · evaluated at steps ${esc(stepsText)}${progress}</p>
${body}
</section>`;
}

/**
 * The original lineage of a re-evaluation, linked where its report lies in the store's layout
 * (`lineages/<name>/report/index.html`, two folders up from this page), and what changed.
 */
function derivedFromHtml(d: DerivedFrom): string {
  const changes = d.changes.map((c) => `<li><code>${esc(c.field)}</code>: ${esc(String(c.from))} → ${esc(String(c.to))}</li>`).join('');
  const href = `../../${encodeURIComponent(d.lineage)}/report/index.html`;
  return `<div class="derived" data-derived-from="${esc(d.lineage)}"><p>Re-evaluation of lineage <a rel="prev" href="${esc(href)}">${esc(d.lineage)}</a>: the same checkpoints, evaluated with</p><ul>${changes}</ul></div>`;
}

function renderDriftTable(drift: StageDrift, categories: readonly string[]): string {
  const head = `<thead><tr><th rowspan="2">topic</th>${STANCES.map((s) => `<th colspan="2" class="stance-${s}">${s}</th>`).join('')}</tr>
<tr>${STANCES.map(() => '<th>M</th><th>η</th>').join('')}</tr></thead>`;
  const rows = categories.map((category) => {
    const entry = drift.topics[category];
    if (!entry) return '';
    const cells = STANCES.map((stance) => {
      const sd = entry.stances[stance];
      const from = sd.trajectory[0]?.step ?? 0;
      const to = sd.trajectory[sd.trajectory.length - 1]?.step ?? 0;
      const mTitle = `M = ${sd.vEnd.toFixed(4)} − ${sd.vStart.toFixed(4)} = ${sd.M.toFixed(4)} (steps ${from}→${to})`;
      const etaTitle = `η_ext = step ${sd.etaExtStep}, extremum ${sd.extremum.toFixed(4)}, η = ${sd.eta.toFixed(4)}`;
      const attrs = (metric: string): string => `data-topic="${esc(category)}" data-stance="${stance}" data-metric="${metric}"`;
      return `<td class="num" ${attrs('M')} style="background:${shade(sd.M)}" title="${esc(mTitle)}">${esc(formatSigned(sd.M))}</td><td class="num" ${attrs('eta')} title="${esc(etaTitle)}">${esc(sd.eta.toFixed(2))}</td>`;
    }).join('');
    return `<tr><th scope="row" class="topic">${esc(category)}<span class="topic-text">${esc(entry.topic)}</span></th>${cells}</tr>`;
  });
  return `<table class="drift">${head}<tbody>${rows.join('\n')}</tbody></table>`;
}

/** Green for a rise, red for a fall, stronger with |M|, so large drifts stand out in the table. */
export function shade(M: number): string {
  const alpha = Math.min(1, Math.abs(M) / 0.6) * 0.45;
  if (!(alpha > 0.01)) return 'transparent';
  return M > 0 ? `rgba(44,160,44,${alpha.toFixed(3)})` : `rgba(214,39,40,${alpha.toFixed(3)})`;
}

function legendHtml(): string {
  return `<p class="legend">${STANCES.map(
    (s) => `<span><i style="background:${STANCE_COLOURS[s]}"></i>${s}</span>`,
  ).join('')}</p>`;
}

function uniqueName(name: string, used: Set<string>): string {
  let candidate = name;
  for (let i = 2; used.has(candidate); i++) candidate = `${name}-${i}`;
  used.add(candidate);
  return candidate;
}

/** Escapes text for HTML element content and double- or single-quoted attribute values. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}
const ESCAPES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The start of every page we write, up to </head>: scripts and remote loads are refused by its
 * Content-Security-Policy (the plots are inline SVG), so a page opened from the store runs nothing.
 */
export function documentHead(title: string, css: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${css}</style>
</head>`;
}

export const CSS = `
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0; background: #fafafa; }
header, main { max-width: 1180px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 20px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 2px; }
.meta { color: #666; margin: 0 0 10px; font-size: 13px; }
.defs { font-size: 12.5px; color: #444; max-width: 900px; }
.legend span { margin-right: 16px; font-size: 13px; }
.legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 6px; }
nav ol { margin: 6px 0 0; padding-left: 20px; font-size: 13px; }
.kind { font-size: 12px; font-weight: normal; color: #fff; background: #777; border-radius: 3px; padding: 1px 6px; vertical-align: middle; }
.partial { color: #b35c00; }
.stage { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 14px 16px; margin: 18px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(265px, 1fr)); gap: 8px 12px; }
figure.panel { margin: 0; }
figure.panel svg, figure.curves svg { max-width: 100%; height: auto; }
figure.curves { margin: 0; }
h3 { font-size: 14px; margin: 14px 0 4px; }
table.drift { border-collapse: collapse; margin-top: 14px; font-size: 13px; }
table.drift th, table.drift td { border: 1px solid #ddd; padding: 3px 9px; }
table.drift thead th { background: #f3f3f3; font-weight: 600; }
table.drift th.topic { text-align: left; font-weight: 600; }
table.drift .topic-text { display: block; font-weight: normal; color: #666; font-size: 11.5px; max-width: 340px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; }
th.stance-support { color: ${STANCE_COLOURS.support}; }
th.stance-neutral { color: ${STANCE_COLOURS.neutral}; }
th.stance-oppose { color: ${STANCE_COLOURS.oppose}; }
.empty { color: #777; font-style: italic; }
.derived { font-size: 13px; background: #eef4fb; border: 1px solid #cddcec; border-radius: 4px; padding: 6px 10px; margin: 8px 0; }
.derived p { margin: 0; }
.derived ul { margin: 4px 0 0; padding-left: 20px; }
`;
