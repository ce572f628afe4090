import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Cell } from '@jupyterlab/cells';
import { INotebookTracker } from '@jupyterlab/notebook';
import { PanelLayout, Widget } from '@lumino/widgets';

import { statusText } from './dag';
import { PipelineModel } from './model';
import { readTagForm } from './tags';
import { cellTags } from './tageditor';
import { IKilnPipelines } from './tokens';

const TASK_CELL_CLASS = 'kiln-mod-task-cell';

/** The badge row above a cell's input: its task (or role), run status and error. */
class CellBadge extends Widget {
  constructor() {
    super();
    this.addClass('kiln-CellBadge');
  }

  /** Redraw; returns false when the badge has nothing to show. */
  render(model: PipelineModel, cell: Cell, index: number): boolean {
    const node = this.node;
    node.replaceChildren();
    node.className = 'lm-Widget kiln-CellBadge';
    const info = model.cellTask(cell.model, index);
    const form = readTagForm(cellTags(cell));
    const role = form.role;
    cell.toggleClass(TASK_CELL_CLASS, info !== null);
    if (info) {
      cell.node.style.setProperty('--kiln-task-color', info.color);
      node.style.setProperty('--kiln-task-color', info.color);
      node.dataset.task = info.task.name;
      const chip = document.createElement('span');
      chip.className = `kiln-Chip${info.first ? '' : ' kiln-mod-member'}`;
      chip.textContent = info.first ? info.task.name : `↳ ${info.task.name}`;
      chip.title = info.first
        ? `Task ${info.task.name} starts here (${info.task.code.length} cell(s))`
        : `Part of task ${info.task.name}`;
      node.append(chip);
      const state = model.taskState(info.task.name);
      if (state && info.first) {
        const status = document.createElement('span');
        status.className = `kiln-Status kiln-mod-status-${state.status}`;
        status.dataset.status = state.status;
        status.textContent = statusText(state);
        if (model.taskOutdated(info.task.name)) {
          status.classList.add('kiln-mod-outdated');
          status.textContent += ' · outdated';
          status.title = 'The task\u2019s code changed since this run: run again to update';
        }
        node.append(status);
      }
      const error = state?.status === 'failed' ? state.error : undefined;
      const here = error && model.findCell(error.cell_id, error.cell_index)?.cell === cell;
      if (error && (here || (info.first && !model.findCell(error.cell_id, error.cell_index)))) {
        const message = document.createElement('button');
        message.className = 'kiln-CellBadge-error';
        message.textContent = `${error.ename ?? 'Error'}: ${error.evalue ?? ''}${
          error.line ? ` (line ${error.line})` : ''
        }`;
        message.title = 'Put the cursor on the line that failed';
        message.addEventListener('click', () => {
          void model.revealCell(error.cell_id, error.cell_index, error.line);
        });
        node.append(message);
      }
      return true;
    }
    cell.node.style.removeProperty('--kiln-task-color');
    delete node.dataset.task;
    if (cell.model.type === 'code' && role === 'task' && model.compileResult?.spec === null) {
      // The notebook does not compile: show the cell's own tag until it does.
      const chip = document.createElement('span');
      chip.className = 'kiln-Chip kiln-mod-unresolved';
      chip.textContent = `task:${form.name}`;
      chip.title = 'Not in the pipeline until the errors in the Pipeline panel are fixed';
      node.append(chip);
      return true;
    }
    if (cell.model.type === 'code' && (role === 'setup' || role === 'parameters' || role === 'skip')) {
      const chip = document.createElement('span');
      chip.className = `kiln-Chip kiln-mod-role kiln-mod-${role}`;
      chip.textContent = role;
      node.append(chip);
      return true;
    }
    return false;
  }
}

/** Keeps one badge per cell of a notebook in step with its pipeline model. */
class NotebookBadges {
  constructor(private readonly _model: PipelineModel) {
    _model.changed.connect(this._refresh, this);
    _model.panel.content.model?.cells.changed.connect(this._refresh, this);
    _model.panel.content.modelContentChanged.connect(this._refreshSoon, this);
    this._refresh();
  }

  private _refreshSoon(): void {
    // Tags edited in place (property inspector) change roles before the next compile. This
    // fires on every keystroke: redraw at most once a frame, and only when a tag changed.
    if (this._pending) {
      return;
    }
    this._pending = true;
    window.requestAnimationFrame(() => {
      this._pending = false;
      if (!this._model.isDisposed && this._tagSignature() !== this._drawnTags) {
        this._refresh();
      }
    });
  }

  private _tagSignature(): string {
    return JSON.stringify(this._model.panel.content.widgets.map(cell => cellTags(cell)));
  }

  private _refresh(): void {
    if (this._model.isDisposed) {
      return;
    }
    this._drawnTags = this._tagSignature();
    this._model.panel.content.widgets.forEach((cell, index) => {
      let badge = this._badges.get(cell);
      if (!badge || badge.isDisposed) {
        badge = new CellBadge();
        const layout = cell.layout as PanelLayout;
        const inputWrapper = cell.inputArea?.parent;
        const at = inputWrapper ? layout.widgets.indexOf(inputWrapper) : -1;
        layout.insertWidget(at < 0 ? 0 : at, badge);
        this._badges.set(cell, badge);
      }
      badge.setHidden(!badge.render(this._model, cell, index));
    });
  }

  private _badges = new WeakMap<Cell, CellBadge>();
  private _pending = false;
  private _drawnTags = '';
}

/** Task badges on cells: task name and colour, membership, roles, live run status. */
export const badgesPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:badges',
  description: 'Shows each cell\u2019s task, role and run status above its input.',
  autoStart: true,
  requires: [IKilnPipelines, INotebookTracker],
  activate: (_app: JupyterFrontEnd, pipelines: IKilnPipelines, tracker: INotebookTracker) => {
    const seen = new WeakSet<PipelineModel>();
    const attach = (model: PipelineModel) => {
      if (seen.has(model)) {
        return;
      }
      seen.add(model);
      void model.panel.context.ready.then(() => new NotebookBadges(model));
    };
    pipelines.modelAdded.connect((_, model) => attach(model));
    tracker.forEach(panel => attach(pipelines.modelFor(panel)));
  }
};
