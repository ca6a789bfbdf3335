/**
 * One stage × topic panel like the paper's Fig. 3/4/7: support/neutral/oppose v(T) over training
 * steps with shaded 95 % CI bands. Vega-Lite 5 compiles the spec and Vega 5's headless View renders
 * SVG in-process (vega-lite 6 / vega 6 need Node 22; this project supports Node 20).
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { z } from 'zod';
import { STANCES, type StageDrift } from '../../common/contracts';

/** The paper's stance colours (support green, neutral blue, oppose red). */
export const STANCE_COLOURS: Readonly<Record<(typeof STANCES)[number], string>> = {
  support: '#2ca02c',
  neutral: '#1f77b4',
  oppose: '#d62728',
};

export interface ReportFigure {
  /** File-name-safe, without extension: `<stage>.<topic>` with other characters replaced by "_". */
  name: string;
  svg: string;
  /** Not produced: PNG would need node-canvas, a native build. */
  png?: Uint8Array;
}

export interface RenderFigureInput {
  drift: StageDrift;
  /** Category id: a key of drift.topics. */
  category: string;
  /** Plot area in px; the legend and titles add to it. */
  width?: number;
  height?: number;
  /**
   * Prefix for the SVG's internal ids (clip paths); the figure name unless told. Several figures
   * inlined in one HTML page need distinct prefixes or they would share clip paths.
   */
  idPrefix?: string;
}

/** Renders one stage/topic panel to SVG. Pure: reads nothing, writes nothing, safe to repeat. */
export async function renderFigureSvg({ drift, category, width = 210, height = 130, idPrefix }: RenderFigureInput): Promise<ReportFigure> {
  const entry = drift.topics[category];
  if (!entry) throw new Error(`stage ${drift.stageId} has no drift for topic "${category}"`);
  const rows = STANCES.flatMap((stance) =>
    entry.stances[stance].trajectory.map((pt) => ({ stance, step: pt.step, v: pt.v, lo: pt.lo, hi: pt.hi })),
  );
  const lastStep = Math.max(drift.totalSteps, ...drift.steps, 1);
  const spec: TopLevelSpec = {
    width,
    height,
    background: 'white',
    padding: 6,
    title: {
      text: category,
      // Topic texts come from user specs and can be long: wrap them ourselves, because headless
      // Vega only estimates text widths and its own truncation cuts short texts too early.
      subtitle: padLines(wrapText({ text: entry.topic, maxChars: Math.max(20, Math.round(width / 6.5)), maxLines: SUBTITLE_LINES }), SUBTITLE_LINES),
      anchor: 'start',
      fontSize: 12,
      subtitleFontSize: 10,
      subtitleColor: '#555',
      limit: 10_000,
    },
    data: { values: rows },
    encoding: {
      x: {
        field: 'step',
        type: 'quantitative',
        title: 'training step',
        scale: { domain: [0, lastStep], nice: false },
        // SI prefixes only where plain integers would crowd the axis; "~s" writes 0 as "0k" otherwise.
        axis: { tickCount: 5, format: lastStep >= 100_000 ? '~s' : 'd' },
      },
      color: {
        field: 'stance',
        type: 'nominal',
        scale: { domain: [...STANCES], range: STANCES.map((s) => STANCE_COLOURS[s]) },
        // Opaque symbols: the legend would otherwise take its opacity from the faint CI band layer.
        legend: {
          orient: 'bottom',
          direction: 'horizontal',
          title: null,
          labelFontSize: 10,
          symbolType: 'stroke',
          symbolOpacity: 1,
          symbolStrokeWidth: 2.5,
        },
      },
    },
    layer: [
      {
        // Clipped: a t-interval over few prompts can reach past 0 or 1.
        mark: { type: 'area', opacity: 0.16, clip: true },
        encoding: {
          y: { field: 'lo', type: 'quantitative', stack: null, scale: { domain: [0, 1] }, title: 'p(stance)' },
          y2: { field: 'hi' },
        },
      },
      {
        // Unclipped: v lies in [0, 1] anyway, and clipping would halve the points on the plot edges.
        mark: { type: 'line', strokeWidth: 1.8, point: { size: 16, filled: true } },
        encoding: { y: { field: 'v', type: 'quantitative', scale: { domain: [0, 1] } } },
      },
    ],
    config: {
      font: 'sans-serif',
      axis: { labelFontSize: 9, titleFontSize: 10, titleFontWeight: 'normal', gridColor: '#eee' },
      view: { stroke: '#ccc' },
    },
  };
  const name = figureName(drift.stageId, category);
  const svg = await toSvg(spec);
  return { name, svg: renumberSvgIds(svg, idPrefix ?? `${name}-`) };
}

const SUBTITLE_LINES = 2;

/** Same number of subtitle lines in every panel, so plot areas line up across a row of panels. */
function padLines(lines: string[], count: number): string[] {
  // A no-break space: Vega drops the height of an empty line.
  return lines.length >= count ? lines : [...lines, ...Array.from({ length: count - lines.length }, () => '\u00a0')];
}

/** A loader that refuses every fetch: the data is inline, and the worker may have no network. */
const offlineLoader: vega.Loader = {
  load: (uri) => Promise.reject(new Error(`report figures load no external data (asked for ${uri})`)),
  sanitize: (uri) => Promise.reject(new Error(`report figures load no external data (asked for ${uri})`)),
  http: (uri) => Promise.reject(new Error(`report figures load no external data (asked for ${uri})`)),
  file: (uri) => Promise.reject(new Error(`report figures load no external data (asked for ${uri})`)),
};

/** Compiles a Vega-Lite spec and renders it to SVG in-process, loading nothing (the report and `lineage compare` pages). */
export async function toSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none', loader: offlineLoader });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export function slug(text: string): string {
  const s = text.replace(/[^A-Za-z0-9_-]+/g, '_');
  return s === '' ? '_' : s;
}

export function figureName(stageId: string, category: string): string {
  return `${slug(stageId)}.${slug(category)}`;
}

/**
 * Renames every id to `<prefix>c<n>` (n by first appearance) and rewrites url(#x) and href="#x"
 * to match. Vega draws its clip ids from a process-wide counter ("clip25" in the third figure), so
 * without this the same drift would render different bytes in different processes. Works inside
 * tags only: Vega entity-escapes text (no raw "<"), so a topic named `id="a"` stays untouched.
 */
export function renumberSvgIds(svg: string, prefix: string): string {
  const safe = slug(prefix);
  const names = new Map<string, string>();
  const rename = (id: string): string => {
    let renamed = names.get(id);
    if (renamed === undefined) {
      renamed = `${safe}c${names.size + 1}`;
      names.set(id, renamed);
    }
    return renamed;
  };
  return svg.replace(/<[^>]*>/g, (tag) =>
    tag
      .replace(/(\s)id="([^"]*)"/g, (_m, space: string, id: string) => `${space}id="${rename(id)}"`)
      .replace(/url\(#([^)]*)\)/g, (_m, id: string) => `url(#${rename(id)})`)
      .replace(/(\s(?:xlink:)?href)="#([^"]*)"/g, (_m, attr: string, id: string) => `${attr}="#${rename(id)}"`),
  );
}

/** Greedy word wrap to at most maxLines lines; the last line ends in "…" when text is left over. */
export function wrapText({ text, maxChars, maxLines }: { text: string; maxChars: number; maxLines: number }): string[] {
  const words = text.trim().split(/\s+/).filter((w) => w !== '');
  const lines: string[] = [];
  let current = '';
  let i = 0;
  for (; i < words.length; i++) {
    const word = words[i] as string;
    const next = current === '' ? word : `${current} ${word}`;
    if (next.length <= maxChars || current === '') {
      current = next;
      continue;
    }
    lines.push(current);
    current = word;
    if (lines.length === maxLines) break;
  }
  if (lines.length < maxLines && current !== '') {
    lines.push(current);
    current = '';
  }
  const truncated = i < words.length || current !== '';
  const out = lines.map((l) => (l.length > maxChars ? `${l.slice(0, maxChars - 1)}…` : l));
  if (truncated && out.length > 0) {
    const last = out[out.length - 1] as string;
    out[out.length - 1] = last.endsWith('…') ? last : `${last.slice(0, maxChars - 1).trimEnd()}…`;
  }
  return out.length > 0 ? out : [''];
}

// ---- training curves

const CurvePoint = z.object({ step: z.number().int().nonnegative(), value: z.number().finite() });
/** A stage's loss and learning rate per optimizer step (from the trainer's scalars, all attempts merged). */
export const TrainingCurves = z.object({ loss: z.array(CurvePoint), learningRate: z.array(CurvePoint) });
export type TrainingCurves = z.infer<typeof TrainingCurves>;

/** Renders a stage's loss and learning-rate curves side by side. Pure, like renderFigureSvg. */
export async function renderCurvesSvg({
  stageId,
  curves,
  width = 250,
  height = 120,
  idPrefix,
}: {
  stageId: string;
  curves: TrainingCurves;
  width?: number;
  height?: number;
  idPrefix?: string;
}): Promise<ReportFigure> {
  const panel = (title: string, field: string, points: TrainingCurves['loss'], colour: string, format: string) => ({
    width,
    height,
    title: { text: title, anchor: 'start' as const, fontSize: 12 },
    data: { values: points.map((p) => ({ step: p.step, [field]: p.value })) },
    mark: { type: 'line' as const, strokeWidth: 1.6, color: colour, point: points.length <= 40 ? { size: 14, filled: true, color: colour } : false },
    encoding: {
      x: { field: 'step', type: 'quantitative' as const, title: 'training step', axis: { tickCount: 5, format: 'd' } },
      y: { field, type: 'quantitative' as const, title: field, scale: { zero: false }, axis: { format } },
    },
  });
  const spec: TopLevelSpec = {
    background: 'white',
    padding: 6,
    hconcat: [
      panel('training loss', 'loss', curves.loss, '#444', '~g'),
      panel('learning rate', 'learning_rate', curves.learningRate, '#9467bd', '.1e'),
    ],
    config: {
      font: 'sans-serif',
      axis: { labelFontSize: 9, titleFontSize: 10, titleFontWeight: 'normal', gridColor: '#eee' },
      view: { stroke: '#ccc' },
    },
  };
  const name = `${slug(stageId)}.training`;
  return { name, svg: renumberSvgIds(await toSvg(spec), idPrefix ?? `${name}-`) };
}
