import { CommandRegistry } from '@lumino/commands';

import { postKiln, requestKiln } from './api';
import { el, formatBytes, formatDuration, linkButton, relativeTime, showValue } from './dom';
import { costRow } from './production';
import { PipelineModel } from './model';
import { IArtifact, IFileRef, ILineageAnswer, ILineageRun, isFinalRun } from './types';

const RUNS_SHOWN = 5;

/** "178×14 · alcohol, malic_acid, … · float64" from an artifact's recorded summary. */
export function artifactSummary(artifact: IArtifact): string {
  const summary = artifact.summary ?? {};
  const parts: string[] = [];
  if (Array.isArray(summary.shape)) {
    parts.push(summary.shape.join('×'));
  } else if (typeof summary.len === 'number') {
    parts.push(`${summary.len} items`);
  }
  if (Array.isArray(summary.columns) && summary.columns.length) {
    const shown = summary.columns.slice(0, 4).join(', ');
    parts.push(summary.columns.length > 4 ? `${shown}, … (${summary.columns.length} columns)` : shown);
  }
  if (typeof summary.dtype === 'string') {
    parts.push(summary.dtype);
  }
  // Two different figures, both labelled: the runtime's in-memory estimate of the value and
  // the bytes of the file the store keeps (a model's pickle is far larger than sys.getsizeof).
  const memory = formatBytes(artifact.size);
  if (memory) {
    parts.push(`${memory} in memory`);
  }
  const stored = formatBytes(artifact.stored_bytes);
  if (stored) {
    parts.push(`${stored} stored`);
  }
  return parts.join(' · ');
}

/**
 * The lineage of the active cell's task: its recent runs from the lineage database (status,
 * version, duration, cache hit, parameters, artifacts with their summaries, files read and
 * written), each run's output notebook one click away. Refreshed when the task changes and when
 * a run of the notebook ends.
 */
export class LineageSection {
  readonly node = el('div', 'kiln-Panel-section kiln-Lineage');

  constructor(private readonly _commands: CommandRegistry) {
    this.node.hidden = true;
  }

  /**
   * Show the lineage of `task` in `model` (null: nothing to show). `cellId`, the cell the task
   * starts at, is its identity: runs recorded under an earlier name of the task are its own.
   */
  update(model: PipelineModel | null, task: string | null, cellId: string | null = null): void {
    const run = model?.run;
    const finishedRun = run && isFinalRun(run.status) ? run.run_id : '';
    const key = model && task ? `${model.path}|${task}|${cellId}|${finishedRun}` : '';
    if (key === this._key) {
      return;
    }
    this._key = key;
    this._model = model;
    this._task = task;
    this._cellId = cellId;
    if (!model || !task) {
      this.node.hidden = true;
      this.node.replaceChildren();
      return;
    }
    void this.refresh();
  }

  async refresh(): Promise<void> {
    const model = this._model;
    const task = this._task;
    if (!model || !task) {
      return;
    }
    const request = ++this._request;
    this._renderHeader(task, true);
    const query = new URLSearchParams({ path: model.path, task, limit: '20' });
    if (this._cellId) {
      query.set('cell', this._cellId);
    }
    if (model.settings.lineageUrl) {
      query.set('lineage_db', model.settings.lineageUrl);
    }
    try {
      const answer = await requestKiln<ILineageAnswer>(`lineage?${query.toString()}`);
      if (request === this._request) {
        this._render(model, task, answer.runs);
      }
    } catch (error) {
      if (request === this._request) {
        this._renderHeader(task, false);
        this.node.append(el('div', 'kiln-Panel-error', (error as Error).message));
      }
    }
  }

  private _renderHeader(task: string, busy: boolean): void {
    this.node.hidden = false;
    if (!busy || !this.node.firstChild) {
      this.node.replaceChildren();
      const heading = el('h3', 'kiln-Panel-heading kiln-Lineage-heading', `Lineage · ${task}`);
      heading.append(
        linkButton('kiln-Lineage-refresh', '↻', 'Reload this task’s runs from the lineage database', () => {
          void this.refresh();
        })
      );
      this.node.append(heading);
    }
  }

  private _render(model: PipelineModel, task: string, runs: ILineageRun[]): void {
    this._renderHeader(task, false);
    if (runs.length === 0) {
      this.node.append(el('div', 'kiln-Panel-empty', 'No recorded runs of this task yet: run the pipeline.'));
      return;
    }
    runs.slice(0, RUNS_SHOWN).forEach((run, index) => {
      this.node.append(this._runItem(model, run, index === 0));
    });
    if (runs.length > RUNS_SHOWN) {
      this.node.append(el('div', 'kiln-Panel-empty', `${runs.length - RUNS_SHOWN} older run(s) in the lineage database (kiln runs).`));
    }
  }

  private _runItem(model: PipelineModel, run: ILineageRun, open: boolean): HTMLElement {
    const record = run.task;
    const status = record?.status ?? run.status;
    const item = el('details', `kiln-LineageRun kiln-mod-status-${status}`);
    item.open = open;
    item.dataset.runId = run.run_id;
    const summary = el('summary', 'kiln-LineageRun-summary');
    summary.append(
      el('span', 'kiln-LineageRun-status', status),
      el('span', 'kiln-LineageRun-id', run.run_id.slice(0, 8)),
      el('span', 'kiln-LineageRun-duration', formatDuration(record?.duration)),
      el('span', `kiln-LineageRun-cache ${record?.cached ? 'kiln-mod-hit' : ''}`, record?.cached ? 'cache hit' : 'computed'),
      el('span', 'kiln-LineageRun-when', relativeTime(run.started_at))
    );
    if (run.recorded_as && run.recorded_as !== this._task) {
      // The same task (same cell) under its earlier name: a rename keeps the lineage.
      summary.append(el('span', 'kiln-LineageRun-alias', `as ${run.recorded_as}`));
    }
    summary.title = `run ${run.run_id}, pipeline version ${run.pipeline_version}`;
    item.append(summary);

    const body = el('div', 'kiln-LineageRun-body');
    if (record) {
      const facts = el('div', 'kiln-LineageRun-facts');
      facts.append(
        this._fact('version', record.version.slice(0, 8), record.version),
        this._fact('attempts', String(record.attempts ?? 0))
      );
      body.append(facts, ...costRow(record));
      const parameters = Object.entries(record.parameters);
      if (parameters.length) {
        body.append(
          this._row('params', parameters.map(([k, v]) => `${k}=${showValue(v)}`).join('  '), 'kiln-LineageRun-params')
        );
      }
      if (record.error?.message) {
        const where = record.error.line ? ` (cell ${record.error.cell_index ?? '?'}, line ${record.error.line})` : '';
        body.append(el('div', 'kiln-Run-error', `${record.error.message}${where}`));
      }
      if (record.inputs.length) {
        body.append(
          this._row('inputs', record.inputs.map(i => `${i.name} ← ${i.producer}`).join(', '), 'kiln-LineageRun-inputs')
        );
      }
      for (const artifact of record.outputs) {
        const line = el('div', 'kiln-Artifact');
        line.title = `${artifact.type ?? ''} sha256:${artifact.digest}`;
        line.append(
          el('span', 'kiln-Artifact-name', artifact.name),
          el('span', 'kiln-Artifact-type', (artifact.type ?? '').replace(/^builtins\./, '')),
          el('span', 'kiln-Artifact-summary', artifactSummary(artifact))
        );
        body.append(line);
      }
      body.append(...this._files('read', record.reads), ...this._files('wrote', record.writes));
    }
    if (run.has_output) {
      body.append(
        linkButton('kiln-LineageRun-output', 'Open output notebook', `The notebook as run ${run.run_id} executed it`, () => {
          void this._openOutput(model, run.run_id, item);
        })
      );
    }
    item.append(body);
    return item;
  }

  private _fact(label: string, value: string, title = ''): HTMLElement {
    const fact = el('span', 'kiln-Fact');
    fact.append(el('span', 'kiln-Fact-label', label), el('span', 'kiln-Fact-value', value));
    fact.title = title;
    return fact;
  }

  private _row(label: string, text: string, className: string): HTMLElement {
    const row = el('div', `kiln-LineageRun-row ${className}`);
    row.append(el('span', 'kiln-Fact-label', label), el('span', 'kiln-LineageRun-text', text));
    return row;
  }

  private _files(direction: 'read' | 'wrote', files: IFileRef[]): HTMLElement[] {
    return files.map(file => {
      const row = el('div', `kiln-File kiln-mod-${direction}`);
      row.append(el('span', 'kiln-Fact-label', direction));
      const path = file.path;
      if (path) {
        row.append(
          linkButton('kiln-File-name', file.name, `${path}\nsha256:${file.digest ?? '?'}`, () => {
            void this._commands.execute('docmanager:open', { path });
          })
        );
      } else {
        row.append(el('span', 'kiln-File-name', file.name));
      }
      return row;
    });
  }

  private async _openOutput(model: PipelineModel, runId: string, item: HTMLElement): Promise<void> {
    try {
      const { path } = await postKiln<{ path: string }>('outputs', {
        path: model.path,
        run_id: runId,
        lineage_db: model.settings.lineageUrl || undefined
      });
      await this._commands.execute('kiln:open-output', { path }); // read-only viewer
    } catch (error) {
      item.append(el('div', 'kiln-Panel-error', (error as Error).message));
    }
  }

  private _model: PipelineModel | null = null;
  private _task: string | null = null;
  private _cellId: string | null = null;
  private _key = '';
  private _request = 0;
}
