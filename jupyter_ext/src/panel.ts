import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { Cell, ICellModel } from '@jupyterlab/cells';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ILayoutRestorer } from '@jupyterlab/application';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { CommandIDs } from './commands';
import { renderDag } from './dag';
import { el, linkButton } from './dom';
import { LineageSection } from './lineage';
import { MetricsSection } from './metrics';
import { SchedulesSection } from './schedules';
import { kilnIcon } from './icons';
import { PipelineModel } from './model';
import { ProductionSection, runCostLine } from './production';
import { TagEditor, cellTags, tagChecker, writeCellTags } from './tageditor';
import { taskName } from './tags';
import { IKilnPipelines } from './tokens';
import { IDiagnostic } from './types';


function diagnosticPlace(d: IDiagnostic): string {
  if (d.cell_index === null) {
    return 'notebook';
  }
  let place = `cell ${d.cell_index}`;
  if (d.line !== null) {
    place += `, line ${d.line}`;
  }
  return place;
}

/**
 * The Pipeline side panel of the current notebook: a tag editor for the active cell, the DAG
 * (click a task → its first cell), the diagnostics (click → the cell and line) and the state of
 * the last run with its Dask dashboard and output notebook.
 */
export class PipelinePanel extends Widget {
  constructor(
    private readonly _pipelines: IKilnPipelines,
    private readonly _tracker: INotebookTracker,
    private readonly _commands: CommandRegistry
  ) {
    super();
    this.id = 'kiln-pipeline-panel';
    this.addClass('kiln-Panel');
    this.title.icon = kilnIcon;
    this.title.caption = 'Kiln pipeline';

    const header = el('div', 'kiln-Panel-header');
    this._title = el('div', 'kiln-Panel-title');
    const actions = el('div', 'kiln-Panel-actions');
    actions.append(
      this._commandButton(CommandIDs.run, 'kiln-Panel-run-button jp-mod-accept'),
      this._commandButton(CommandIDs.cancel, 'kiln-Panel-cancel-button jp-mod-warn'),
      this._commandButton(CommandIDs.openView, 'kiln-Panel-view-button'),
      this._commandButton(CommandIDs.exportPipeline, 'kiln-Panel-export-button'),
      this._commandButton(CommandIDs.splitByHeadings, ''),
      this._commandButton(CommandIDs.compile, '')
    );
    header.append(this._title, actions);

    this._runSection = el('div', 'kiln-Panel-section kiln-Panel-runstate');
    this._exportSection = el('div', 'kiln-Panel-section kiln-Panel-export');
    this._cellSection = el('div', 'kiln-Panel-section kiln-Panel-cell');
    this._lineage = new LineageSection(_commands);
    this._metrics = new MetricsSection();
    this.schedules = new SchedulesSection(_commands);
    this._production = new ProductionSection();
    this._graphSection = el('div', 'kiln-Panel-section kiln-Panel-graph');
    this._diagnosticsSection = el('div', 'kiln-Panel-section kiln-Panel-diagnostics');
    this.node.append(
      header,
      this._runSection,
      this._metrics.node,
      this._exportSection,
      this._cellSection,
      this._lineage.node,
      this._graphSection,
      this._diagnosticsSection,
      this.schedules.node,
      this._production.node
    );

    _pipelines.currentChanged.connect(this._onCurrentChanged, this);
    _tracker.activeCellChanged.connect(this._onActiveCellChanged, this);
    _commands.commandChanged.connect(this._refreshButtons, this);
    this._onCurrentChanged();
  }

  private _commandButton(id: string, extraClass: string): HTMLButtonElement {
    const button = el('button', `jp-Button jp-mod-styled kiln-Panel-button ${extraClass}`);
    button.dataset.command = id;
    button.addEventListener('click', () => {
      void this._commands.execute(id);
    });
    this._buttons.push(button);
    return button;
  }

  private _refreshButtons(): void {
    for (const button of this._buttons) {
      const id = button.dataset.command ?? '';
      if (!this._commands.hasCommand(id)) {
        button.hidden = true;
        continue;
      }
      button.hidden = false;
      button.textContent = this._commands.label(id, { panel: true });
      button.title = this._commands.caption(id);
      button.disabled = !this._commands.isEnabled(id);
      if (id === CommandIDs.cancel) {
        // (style, not `hidden`: the button class sets a display)
        button.style.display = button.disabled && this._model?.run?.status !== 'cancelling' ? 'none' : '';
      }
    }
  }

  private _onCurrentChanged(): void {
    const model = this._pipelines.current;
    if (model === this._model) {
      return;
    }
    this._model?.changed.disconnect(this._render, this);
    this._model = model;
    model?.changed.connect(this._render, this);
    this._render();
    this._onActiveCellChanged();
    this.schedules.update(model);
    this._production.update(model);
  }

  /** The Schedules section (the New Schedule command opens its form). */
  readonly schedules: SchedulesSection;

  private _updateLineage(): void {
    const model = this._model;
    const cell = this._cell;
    const info = model && cell ? model.cellTask(cell.model, model.panel.content.widgets.indexOf(cell)) : null;
    this._lineage.update(model, info?.task.name ?? null, info?.task.cells[0] ?? null);
  }

  private _onActiveCellChanged(): void {
    const cell = this._tracker.activeCell;
    if (this._cell !== cell) {
      this._cell?.model?.metadataChanged.disconnect(this._onCellMetadata, this);
      this._cell = cell;
      cell?.model.metadataChanged.connect(this._onCellMetadata, this);
    }
    this._renderCellEditor(true);
    this._renderGraph();
    this._updateLineage();
  }

  private _onCellMetadata(_: ICellModel): void {
    this._renderCellEditor(false);
  }

  private _render(): void {
    this._refreshButtons();
    const model = this._model;
    const spec = model?.compileResult?.spec;
    this._title.replaceChildren();
    if (!model) {
      this._title.append(el('span', 'kiln-Panel-name', 'No notebook'));
    } else {
      this._title.append(el('span', 'kiln-Panel-name', spec?.name ?? model.panel.context.localPath));
      if (spec) {
        const version = el('span', 'kiln-Panel-version', spec.version.slice(0, 8));
        version.title = `pipeline version ${spec.version}`;
        this._title.append(version);
      }
      if (model.compiling) {
        this._title.append(el('span', 'kiln-Panel-busy', 'compiling…'));
      }
    }
    this._renderRun();
    this._renderExport();
    this._renderCellEditor(false);
    this._updateLineage();
    this._metrics.update(model);
    this._renderGraph();
    this._renderDiagnostics();
  }

  private _renderRun(): void {
    const section = this._runSection;
    section.replaceChildren();
    const model = this._model;
    const run = model?.run;
    if (!model || (!run && !model.runError)) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    if (run) {
      const states = Object.values(run.tasks);
      const finished = states.filter(s => ['done', 'cached'].includes(s.status)).length;
      const line = el('div', `kiln-Run kiln-mod-run-${run.status}`);
      line.dataset.runId = run.run_id;
      line.append(
        el('span', 'kiln-Run-status', run.status),
        el('span', 'kiln-Run-id', `run ${run.run_id.slice(0, 8)}`),
        el('span', 'kiln-Run-count', `${finished}/${model.tasks.length || states.length} tasks done`)
      );
      section.append(line);
      const where = run.scheduler ? `on ${run.scheduler}` : 'on a local Dask cluster';
      section.append(el('div', 'kiln-Run-where', where));
      const cost = runCostLine(run.tasks);
      if (cost) {
        section.append(cost);
      }
      const links = el('div', 'kiln-Run-links');
      if (run.dashboard_proxy) {
        // Through this Jupyter server (jupyter-server-proxy): works from a remote browser and
        // is gone with the cluster.
        const a = el('a', 'kiln-Run-dashboard', 'Dask dashboard ↗');
        a.href = URLExt.join(PageConfig.getBaseUrl(), run.dashboard_proxy);
        a.target = '_blank';
        a.rel = 'noopener';
        links.append(a);
      }
      if (run.output_notebook) {
        const path = run.output_notebook;
        const a = el('a', 'kiln-Run-output', 'Output notebook');
        a.href = '#';
        a.title = path;
        a.addEventListener('click', event => {
          event.preventDefault();
          void this._commands.execute(CommandIDs.openOutput, { path });
        });
        links.append(a);
      }
      if (links.childElementCount > 0) {
        section.append(links);
      }
      if (run.error) {
        section.append(el('div', 'kiln-Run-error', run.error));
      }
      for (const [name, state] of Object.entries(run.tasks)) {
        if (state.status !== 'failed' || !state.error) {
          continue;
        }
        const error = state.error;
        const item = el('button', 'kiln-Run-taskerror');
        const where = error.line ? ` (cell ${error.cell_index ?? '?'}, line ${error.line})` : '';
        item.textContent = `${name}: ${error.ename ?? 'Error'}: ${error.evalue ?? ''}${where}`;
        item.title = 'Go to the cell and line that failed';
        item.addEventListener('click', () => {
          void model.revealCell(error.cell_id, error.cell_index, error.line);
        });
        section.append(item);
      }
    }
    if (model.runError) {
      section.append(el('div', 'kiln-Run-error', model.runError));
    }
  }

  private _renderExport(): void {
    const section = this._exportSection;
    section.replaceChildren();
    const model = this._model;
    const exported = model?.exported;
    if (!model || (!exported && !model.exportError && !model.exporting)) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    if (model.exporting) {
      section.append(el('div', 'kiln-Export-busy', 'Exporting…'));
    } else if (exported) {
      const line = el('div', 'kiln-Export');
      line.append(
        el('span', 'kiln-Export-state', exported.created ? 'exported' : 'already exported'),
        el('span', 'kiln-Export-version', `${exported.name} ${exported.version.slice(0, 8)}`)
      );
      section.append(line);
      const path = exported.path;
      section.append(
        linkButton('kiln-Export-path', `${path}/`, `Show the bundle in the file browser: ${exported.files.join(', ')}`, () => {
          void this._commands.execute('filebrowser:go-to-path', { path });
        })
      );
    }
    if (model.exportError) {
      section.append(el('div', 'kiln-Run-error kiln-Export-error', model.exportError));
    }
  }

  private _renderCellEditor(force: boolean): void {
    const section = this._cellSection;
    const cell = this._model ? this._cell : null;
    const tags = cell ? cellTags(cell) : [];
    const base = cell ? `${cell.model.id}|${JSON.stringify(tags)}|` : '';
    const key = cell ? `${base}${this._model?.tasks.length}` : '';
    if (!force && key === this._cellKey) {
      return; // keep what the user is typing
    }
    if (!force && cell && this._model && this._editor?.touched && this._cellKey.startsWith(base)) {
      // Only the task list changed (a compile landed) while the user types in the form: keep
      // the form, refresh its heading (the cell's task chip); its task-name suggestions are
      // refreshed next time the cell is selected.
      section.querySelector('.kiln-Panel-heading')?.replaceWith(this._cellHeading(this._model, cell));
      return;
    }
    this._cellKey = key;
    this._editor?.dispose(); // detaches its node first, while it is still in the section
    this._editor = null;
    section.replaceChildren();
    const model = this._model;
    if (!cell || !model) {
      section.append(el('div', 'kiln-Panel-empty', 'Select a cell to tag it.'));
      return;
    }
    const index = model.panel.content.widgets.indexOf(cell);
    const info = model.cellTask(cell.model, index);
    section.append(this._cellHeading(model, cell));
    if (cell.model.type !== 'code') {
      section.append(
        el('div', 'kiln-Panel-empty', 'Markdown cells are not part of tasks; their headings can name tasks (Split by Headings).')
      );
      return;
    }
    const editor = new TagEditor(
      tags,
      model.tasks.map(t => t.name).filter(n => n !== info?.task.name),
      tagChecker(model, cell as Cell)
    );
    const apply = el('button', 'jp-Button jp-mod-styled jp-mod-accept kiln-Panel-apply', 'Apply tags');
    // The compiler's verdict on the tags the form would write, as you type (TagEditor): an
    // error blocks Apply; warnings (a check on a metric nothing produces) are shown only.
    apply.disabled = !editor.valid;
    editor.verdictChanged.connect((_, ok) => {
      apply.disabled = !ok;
    });
    const submit = async () => {
      apply.disabled = true; // until the compiler has seen what is about to be written
      const form = editor.getValue(); // what settle() asks about, whatever is typed meanwhile
      const ok = await editor.settle();
      if (editor.isDisposed) {
        return; // another cell was selected meanwhile
      }
      apply.disabled = !ok;
      if (ok) {
        writeCellTags(cell as Cell, form);
      }
    };
    apply.addEventListener('click', () => void submit());
    const note = el('div', 'kiln-TagEditor-note');
    const renameNote = () => {
      const form = editor.getValue();
      // The compile that knows this cell's task may have landed after the form was made.
      const info = model.cellTask(cell.model, model.panel.content.widgets.indexOf(cell));
      const renamed = info?.first && form.role === 'task' && form.name && taskName(form.name) !== info.task.name;
      note.textContent = renamed
        ? `Renaming keeps the lineage: this cell’s runs recorded as “${info!.task.name}” stay in the history of “${taskName(form.name)}”.`
        : form.role === 'task' && form.name && taskName(form.name) !== form.name
          ? `Saved as task:${taskName(form.name)} (task names are snake_case).`
          : '';
    };
    editor.node.addEventListener('input', renameNote);
    editor.node.addEventListener('change', renameNote);
    editor.node.addEventListener('keydown', event => {
      if (event.key === 'Enter' && (event.target as HTMLElement).tagName === 'INPUT') {
        event.preventDefault();
        void submit();
      }
    });
    const tagList = el('div', 'kiln-Panel-tags');
    tagList.textContent = tags.length ? `tags: ${tags.join('  ')}` : 'no tags';
    Widget.attach(editor, section);
    section.append(apply, note, tagList);
    this._editor = editor;
  }

  /** "Cell N" and the chip of the task it belongs to (the last compile's). */
  private _cellHeading(model: PipelineModel, cell: Cell): HTMLElement {
    const index = model.panel.content.widgets.indexOf(cell);
    const heading = el('h3', 'kiln-Panel-heading', `Cell ${index}`);
    const info = model.cellTask(cell.model, index);
    if (info) {
      const chip = el('span', 'kiln-Chip', info.task.name);
      chip.style.setProperty('--kiln-task-color', info.color);
      heading.append(' ', chip);
    }
    return heading;
  }

  private _renderGraph(): void {
    const section = this._graphSection;
    section.replaceChildren();
    const model = this._model;
    const heading = el('h3', 'kiln-Panel-heading', 'Graph');
    if (model) {
      heading.append(
        ' ',
        linkButton('kiln-Panel-openview', 'open view ↗', 'Open the Pipeline view in the main area (zoom, pan, timeline, history)', () => {
          void this._commands.execute(CommandIDs.openView, { path: model.path });
        })
      );
    }
    section.append(heading);
    if (!model) {
      return;
    }
    if (model.compileError) {
      section.append(el('div', 'kiln-Panel-error', model.compileError));
      return;
    }
    const active = this._cell ? model.cellTask(this._cell.model, model.panel.content.widgets.indexOf(this._cell)) : null;
    const svg = renderDag(
      model,
      active?.task.name ?? null,
      task => {
        const first = task.code[0];
        void model.revealCell(first?.cell_id, first?.cell_index);
      },
      { compact: true }
    );
    if (svg) {
      svg.dataset.path = model.path;
      section.append(svg);
      if (model.graphTasks.length > 12) {
        section.append(el('div', 'kiln-Panel-empty', `${model.graphTasks.length} tasks: open the view to read them (zoom, pan).`));
      }
      if (model.graphStale) {
        section.append(el('div', 'kiln-Panel-empty kiln-Panel-stale', 'Last graph that compiled: fix the errors below to update it.'));
      }
    } else if (model.compileResult && !model.compileResult.ok) {
      section.append(el('div', 'kiln-Panel-empty', 'Fix the errors below to see the graph.'));
    } else if (model.compileResult) {
      section.append(el('div', 'kiln-Panel-empty', 'No tasks: add code cells.'));
    } else {
      section.append(el('div', 'kiln-Panel-empty', 'Compiling…'));
    }
  }

  private _renderDiagnostics(): void {
    const section = this._diagnosticsSection;
    section.replaceChildren();
    const model = this._model;
    if (!model) {
      return;
    }
    // The compile result's diagnostics only: replaced on every compile, never added to.
    const diagnostics = model.diagnostics;
    section.append(el('h3', 'kiln-Panel-heading', `Diagnostics (${diagnostics.length})`));
    if (diagnostics.length === 0) {
      section.append(el('div', 'kiln-Panel-empty', model.compileResult ? 'None.' : ''));
      return;
    }
    const list = el('ul', 'kiln-Diagnostics');
    for (const d of diagnostics) {
      const item = el('li', `kiln-Diagnostic kiln-mod-${d.severity}`);
      item.tabIndex = 0;
      item.title = `${d.code}: click to go to ${diagnosticPlace(d)}`;
      item.append(
        el('span', 'kiln-Diagnostic-severity', d.severity),
        el('span', 'kiln-Diagnostic-place', diagnosticPlace(d)),
        el('span', 'kiln-Diagnostic-message', d.message)
      );
      const reveal = () => void model.revealCell(d.cell_id, d.cell_index, d.line, d.col);
      item.addEventListener('click', reveal);
      item.addEventListener('keydown', event => {
        if (event.key === 'Enter') {
          reveal();
        }
      });
      list.append(item);
    }
    section.append(list);
  }

  private _model: PipelineModel | null = null;
  private _cell: Cell | null = null;
  private _cellKey = '';
  private _editor: TagEditor | null = null;
  private _buttons: HTMLButtonElement[] = [];
  private _title: HTMLDivElement;
  private _runSection: HTMLDivElement;
  private _exportSection: HTMLDivElement;
  private _lineage: LineageSection;
  private readonly _production: ProductionSection;
  private _metrics: MetricsSection;
  private _cellSection: HTMLDivElement;
  private _graphSection: HTMLDivElement;
  private _diagnosticsSection: HTMLDivElement;
}

/** The Pipeline side panel, and the command that shows it. */
export const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:panel',
  description: 'The Pipeline side panel: tag editor, DAG, diagnostics and run state.',
  autoStart: true,
  requires: [IKilnPipelines, INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    pipelines: IKilnPipelines,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new PipelinePanel(pipelines, tracker, app.commands);
    app.shell.add(panel, 'right', { rank: 200 });
    // Open again after a page reload if it was open (the workspace remembers).
    restorer?.add(panel, 'kiln-pipeline-panel');
    app.commands.addCommand(CommandIDs.showPanel, {
      label: 'Show Pipeline Panel',
      caption: 'Open the Kiln pipeline side panel',
      icon: kilnIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: CommandIDs.showPanel, category: 'Kiln Pipeline' });
    app.commands.addCommand(CommandIDs.newSchedule, {
      label: 'New Pipeline Schedule…',
      caption: 'Run this notebook on a cron schedule (through papermill), from the Pipeline panel',
      isEnabled: () => pipelines.current !== null,
      execute: () => {
        app.shell.activateById(panel.id);
        panel.schedules.showForm();
      }
    });
    palette?.addItem({ command: CommandIDs.newSchedule, category: 'Kiln Pipeline' });
  }
};
