import {
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip
} from 'chart.js';
import { Cell } from '@jupyterlab/cells';
import { PanelLayout, Widget } from '@lumino/widgets';

import { requestKiln } from './api';
import { el, linkButton, relativeTime } from './dom';
import { PipelineModel } from './model';
import { isFinalRun } from './types';

// Only the parts of Chart.js a line chart uses (tree-shaken: ~60 KB of the bundle, not 200).
Chart.register(LineController, LineElement, PointElement, LinearScale, CategoryScale, Tooltip, Legend);

const RUNS_CHARTED = 10;

/** A check, warn or drift verdict of one run (compiler/lineage/metrics.py `_verdicts_of`). */
export interface IVerdict {
  kind: 'check' | 'warn' | 'drift';
  subject: string;
  passed: boolean;
  value: number | null;
  threshold: number | null;
  baseline_value: number | null;
  baseline_run: string | null;
  message: string | null;
  tag: string | null;
  drifted_columns: string[];
}

export interface IMetricsRun {
  run_id: string;
  status: string;
  flagged: boolean;
  started_at: string | null;
  version: string;
  parameters: { [name: string]: unknown };
  baseline_run: string | null;
  error: string | null;
  metrics: { [name: string]: number | boolean };
  verdicts: IVerdict[];
}

/** GET /kiln/metrics: the notebook's last runs, oldest first. */
export interface IMetricsHistory {
  path: string;
  metrics: string[];
  runs: IMetricsRun[];
  baseline: { run_id: string; pinned: boolean } | null;
}

interface IMetricsCellSpec {
  cell_id: string;
  cell_index: number;
}

function metricsCellOf(model: PipelineModel): IMetricsCellSpec | null {
  const spec = model.compileResult?.spec as { metrics_cell?: IMetricsCellSpec | null } | null | undefined;
  return spec?.metrics_cell ?? null;
}

function numeric(value: number | boolean | undefined): number | null {
  if (value === undefined) {
    return null;
  }
  return typeof value === 'boolean' ? Number(value) : value;
}

export function formatMetric(value: number | boolean | undefined): string {
  if (value === undefined) {
    return '–';
  }
  if (typeof value === 'boolean') {
    return value ? 'true' : 'false';
  }
  return Number.isInteger(value) ? String(value) : value.toPrecision(4).replace(/\.?0+$/, '');
}

export function runStatusText(run: IMetricsRun): string {
  return run.status === 'succeeded' && run.flagged ? 'succeeded · flagged' : run.status;
}

function statusClass(run: IMetricsRun): string {
  return run.status === 'succeeded' && run.flagged ? 'flagged' : run.status;
}

const STATUS_COLOURS: { [status: string]: string } = {
  succeeded: '#2e7d32',
  flagged: '#ef6c00',
  failed: '#c62828'
};

/**
 * The Metrics section of the Pipeline panel: one Chart.js line chart per metric across the
 * notebook's last runs (points coloured by the run's verdict, the baseline run drawn larger,
 * absolute check thresholds as dashed lines), the latest run's verdicts, its drifted inputs.
 * Also keeps the metrics cell's badge (latest values and verdicts) in step. Refreshed when the
 * notebook changes and when a run of it ends.
 */
export class MetricsSection {
  readonly node = el('div', 'kiln-Panel-section kiln-Metrics');

  constructor() {
    this.node.hidden = true;
  }

  update(model: PipelineModel | null): void {
    const run = model?.run;
    const finished = run && isFinalRun(run.status) ? run.run_id : '';
    const cell = model ? metricsCellOf(model) : null;
    const key = model && cell ? `${model.path}|${finished}|${cell.cell_id}` : '';
    if (key === this._key) {
      if (model && this._history) {
        this._badge(model, this._history); // cells may have been re-rendered
      }
      return;
    }
    this._key = key;
    this._model = model;
    if (!model || !cell) {
      this._clear();
      return;
    }
    void this.refresh();
  }

  async refresh(): Promise<void> {
    const model = this._model;
    if (!model) {
      return;
    }
    const request = ++this._request;
    const query = new URLSearchParams({ path: model.path, limit: String(RUNS_CHARTED) });
    if (model.settings.lineageUrl) {
      query.set('lineage_db', model.settings.lineageUrl);
    }
    try {
      const history = await requestKiln<IMetricsHistory>(`metrics?${query.toString()}`);
      if (request === this._request) {
        this._history = history;
        this._render(history);
        this._badge(model, history);
      }
    } catch (error) {
      if (request === this._request) {
        this._heading();
        this.node.append(el('div', 'kiln-Panel-error', (error as Error).message));
      }
    }
  }

  private _clear(): void {
    this._destroyCharts();
    this._history = null;
    this.node.hidden = true;
    this.node.replaceChildren();
  }

  private _destroyCharts(): void {
    for (const chart of this._charts) {
      chart.destroy();
    }
    this._charts = [];
  }

  private _heading(): void {
    this._destroyCharts();
    this.node.hidden = false;
    this.node.replaceChildren();
    const heading = el('h3', 'kiln-Panel-heading kiln-Metrics-heading', 'Metrics');
    heading.append(
      linkButton('kiln-Metrics-refresh', '↻', 'Reload the metrics from the lineage database', () => {
        void this.refresh();
      })
    );
    this.node.append(heading);
  }

  private _render(history: IMetricsHistory): void {
    this._heading();
    const runs = history.runs;
    if (runs.length === 0 || history.metrics.length === 0) {
      this.node.append(el('div', 'kiln-Panel-empty', 'No metrics recorded yet: run the pipeline.'));
      return;
    }
    const latest = runs[runs.length - 1];
    const summary = el('div', 'kiln-Metrics-summary');
    const status = el('span', `kiln-Metrics-status kiln-mod-${statusClass(latest)}`, runStatusText(latest));
    summary.append(
      el('span', 'kiln-Metrics-latest', `Latest run ${latest.run_id.slice(0, 8)} · ${relativeTime(latest.started_at)}: `),
      status
    );
    this.node.append(summary);
    const baseline = history.baseline;
    this.node.append(
      el(
        'div',
        'kiln-Metrics-baseline',
        baseline
          ? `Baseline: run ${baseline.run_id.slice(0, 8)} (${baseline.pinned ? 'pinned with kiln baseline set' : 'last succeeded run'}) ◆ in the charts`
          : 'Baseline: none yet (relative checks are not judged)'
      )
    );
    this._renderVerdicts(latest);
    const charts = el('div', 'kiln-Metrics-charts');
    this.node.append(charts);
    for (const name of history.metrics) {
      charts.append(this._chart(history, name));
    }
  }

  private _renderVerdicts(run: IMetricsRun): void {
    const list = el('ul', 'kiln-Metrics-verdicts');
    for (const verdict of run.verdicts) {
      const item = el('li', `kiln-Verdict kiln-mod-${verdict.passed ? 'passed' : verdict.kind === 'check' ? 'failed' : 'flagged'}`);
      item.dataset.kind = verdict.kind;
      item.append(el('span', 'kiln-Verdict-mark', verdict.passed ? '✓' : verdict.kind === 'check' ? '✗' : '⚠'));
      const text =
        verdict.kind === 'drift'
          ? verdict.passed
            ? `input ${verdict.subject}: no drift`
            : `input ${verdict.subject} drifted: ${verdict.drifted_columns.join(', ')}`
          : verdict.message ?? `${verdict.kind} ${verdict.subject}`;
      item.append(el('span', 'kiln-Verdict-text', text));
      list.append(item);
    }
    if (run.verdicts.length) {
      this.node.append(list);
    }
  }

  private _chart(history: IMetricsHistory, name: string): HTMLElement {
    const box = el('div', 'kiln-MetricChart');
    box.dataset.metric = name;
    const runs = history.runs;
    const latest = runs[runs.length - 1];
    const title = el('div', 'kiln-MetricChart-title');
    title.append(
      el('span', 'kiln-MetricChart-name', name),
      el('span', 'kiln-MetricChart-value', formatMetric(latest.metrics[name]))
    );
    box.append(title);
    const holder = el('div', 'kiln-MetricChart-canvas');
    const canvas = el('canvas');
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', `${name} across the last ${runs.length} runs`);
    holder.append(canvas);
    box.append(holder);
    const baseline = history.baseline?.run_id;
    const colours = runs.map(r => STATUS_COLOURS[statusClass(r)] ?? '#757575');
    const datasets: any[] = [
      {
        label: name,
        data: runs.map(r => numeric(r.metrics[name])),
        borderColor: '#1976d2',
        backgroundColor: colours,
        pointBackgroundColor: colours,
        pointBorderColor: colours,
        pointStyle: runs.map(r => (r.run_id === baseline ? 'rectRot' : 'circle')),
        pointRadius: runs.map(r => (r.run_id === baseline ? 7 : 4)),
        spanGaps: true,
        tension: 0.2
      }
    ];
    // The thresholds of the latest run's checks on this metric, as dashed lines, each point the
    // threshold that run was judged by: a relative check's moves with its baseline, and a run
    // made before the check existed has no point.
    for (const v of latest.verdicts) {
      if (v.kind !== 'drift' && v.subject === name && v.threshold !== null) {
        const same = (w: IVerdict) => w.kind === v.kind && w.subject === name && w.tag === v.tag;
        datasets.push({
          label: v.tag ?? `${v.kind} ${name}`,
          data: runs.map(r => r.verdicts.find(same)?.threshold ?? null),
          spanGaps: true,
          borderColor: v.kind === 'check' ? '#c62828' : '#ef6c00',
          borderDash: [4, 4],
          borderWidth: 1,
          pointRadius: 0,
          fill: false
        });
      }
    }
    const chart = new Chart(canvas, {
      type: 'line',
      data: { labels: runs.map(r => r.run_id.slice(0, 6)), datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: {
          legend: { display: datasets.length > 1, labels: { boxWidth: 10, font: { size: 10 } } },
          tooltip: {
            callbacks: {
              afterLabel: ctx => {
                const run = runs[ctx.dataIndex];
                return run ? `${runStatusText(run)}${run.run_id === baseline ? ' · baseline' : ''}` : '';
              }
            }
          }
        },
        scales: {
          x: { ticks: { font: { size: 9 } } },
          y: { ticks: { font: { size: 9 } } }
        }
      }
    });
    this._charts.push(chart);
    return box;
  }

  /** The metrics cell's badge: latest values and verdicts, above its input. */
  private _badge(model: PipelineModel, history: IMetricsHistory): void {
    const where = metricsCellOf(model);
    const ref = where ? model.findCell(where.cell_id, where.cell_index) : null;
    if (!ref) {
      return;
    }
    const badge = metricsBadgeOf(ref.cell);
    const latest = history.runs[history.runs.length - 1];
    const node = badge.node;
    node.replaceChildren();
    if (!latest) {
      node.append(el('span', 'kiln-Chip kiln-mod-role kiln-mod-metrics', 'metrics'));
      node.append(el('span', 'kiln-MetricsBadge-empty', 'no run recorded yet'));
      badge.show();
      return;
    }
    node.append(el('span', 'kiln-Chip kiln-mod-role kiln-mod-metrics', 'metrics'));
    const status = el('span', `kiln-Metrics-status kiln-mod-${statusClass(latest)}`, runStatusText(latest));
    node.append(status);
    for (const name of history.metrics.slice(0, 6)) {
      if (latest.metrics[name] !== undefined) {
        node.append(el('span', 'kiln-MetricsBadge-value', `${name} ${formatMetric(latest.metrics[name])}`));
      }
    }
    const failed = latest.verdicts.filter(v => !v.passed);
    if (failed.length) {
      // A failed check failed the run (red); a failed warn or a drifted input only flagged it
      // (orange), as in the panel's verdict list.
      const text = el('span', 'kiln-MetricsBadge-verdicts');
      failed.forEach((v, i) => {
        if (i > 0) {
          text.append(' · ');
        }
        const words =
          v.kind === 'drift'
            ? `drift: ${v.subject}${v.drifted_columns.length ? ` (${v.drifted_columns.join(', ')})` : ''}`
            : `${v.kind} failed: ${v.tag ?? v.subject}`;
        const item = el('span', `kiln-MetricsBadge-verdict kiln-mod-${v.kind === 'check' ? 'failed' : 'flagged'}`, words);
        item.title = v.message ?? '';
        text.append(item);
      });
      node.append(text);
    } else if (latest.verdicts.length) {
      node.append(el('span', 'kiln-MetricsBadge-verdicts kiln-mod-passed', `${latest.verdicts.length} checks passed`));
    }
    badge.show();
  }

  private _model: PipelineModel | null = null;
  private _key = '';
  private _request = 0;
  private _history: IMetricsHistory | null = null;
  private _charts: Chart[] = [];
}

const badges = new WeakMap<Cell, Widget>();

/** The badge widget above a metrics cell's input (made once per cell). */
function metricsBadgeOf(cell: Cell): Widget {
  let badge = badges.get(cell);
  if (!badge || badge.isDisposed) {
    badge = new Widget();
    badge.addClass('kiln-MetricsBadge');
    const layout = cell.layout as PanelLayout;
    const inputWrapper = cell.inputArea?.parent;
    const at = inputWrapper ? layout.widgets.indexOf(inputWrapper) : -1;
    layout.insertWidget(at < 0 ? 0 : at, badge);
    badges.set(cell, badge);
  }
  return badge;
}
