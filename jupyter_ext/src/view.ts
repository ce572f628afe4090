import { JupyterFrontEnd, JupyterFrontEndPlugin, ILayoutRestorer } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { requestKiln } from './api';
import { CommandIDs } from './commands';
import { contextTarget, formatDuration, renderDag } from './dag';
import { el, relativeTime } from './dom';
import { kilnIcon } from './icons';
import { PipelineModel } from './model';
import { barsFromEvents, barsFromRecord, renderTimeline } from './timeline';
import { IKilnPipelines } from './tokens';
import { ILineageAnswer, ILineageRun, isFinalRun } from './types';

/**
 * The smallest zoom: the smallest text in the view's graph is 12 px, so it never shows below
 * ~10 px. A graph that does not fit at this zoom is panned (drag) instead of shrunk.
 */
const MIN_ZOOM = 0.84;
const MAX_ZOOM = 2.5;
const HISTORY_LIMIT = 10;

/** Zoom (wheel, buttons) and pan (drag) over an SVG graph, kept across redraws. */
class GraphViewport {
  readonly node = el('div', 'kiln-View-graph');

  /** Draw `graph`; the zoom and position stay unless the graph's tasks changed. */
  show(graph: SVGSVGElement | null, signature: string): void {
    this.node.replaceChildren();
    this._svg = graph;
    if (!graph) {
      return;
    }
    const width = Number(graph.getAttribute('width'));
    const height = Number(graph.getAttribute('height'));
    this._size = { width, height };
    const viewport = document.createElementNS('http://www.w3.org/2000/svg', 'g');
    viewport.setAttribute('class', 'kiln-Dag-viewport');
    viewport.append(...Array.from(graph.childNodes).filter(n => n.nodeName !== 'defs'));
    graph.append(viewport);
    graph.removeAttribute('viewBox');
    graph.setAttribute('width', '100%');
    graph.setAttribute('height', '100%');
    this._group = viewport;
    this.node.append(graph);
    if (signature !== this._signature) {
      this._signature = signature;
      this.fit();
    } else {
      this._apply();
    }
  }

  get zoom(): number {
    return this._k;
  }

  /** Whole graph in view when it fits at a readable size, else its top-left at the minimum zoom. */
  fit(): void {
    const box = this.node.getBoundingClientRect();
    if (!this._svg || box.width === 0 || box.height === 0) {
      this._fitPending = true;
      return;
    }
    this._fitPending = false;
    // Up to 100%: a small graph is not blown up past its natural size.
    const k = Math.min(box.width / this._size.width, box.height / this._size.height, 1);
    this._k = Math.max(MIN_ZOOM, k);
    this._tx = Math.max(0, (box.width - this._size.width * this._k) / 2);
    this._ty = Math.max(0, (box.height - this._size.height * this._k) / 2);
    // Too wide even at the readable floor: start where the pipeline starts (its sources, on
    // the left) and pan right from there. Centring cut off both ends, the sources included.
    // (this._tx stays 0 from the Math.max above.)
    this._apply();
  }

  /** After a resize: fit again, unless the user has zoomed or panned since the last fit. */
  refit(): void {
    if (this._fitPending || !this._moved) {
      this.fit();
    }
  }

  zoomBy(factor: number, cx?: number, cy?: number): void {
    const box = this.node.getBoundingClientRect();
    const x = cx ?? box.width / 2;
    const y = cy ?? box.height / 2;
    const k = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this._k * factor));
    this._tx = x - ((x - this._tx) * k) / this._k;
    this._ty = y - ((y - this._ty) * k) / this._k;
    this._k = k;
    this._moved = true;
    this._apply();
  }

  attachInput(onZoom: () => void): void {
    this.node.addEventListener(
      'wheel',
      event => {
        event.preventDefault();
        const box = this.node.getBoundingClientRect();
        this.zoomBy(event.deltaY < 0 ? 1.12 : 1 / 1.12, event.clientX - box.left, event.clientY - box.top);
        onZoom();
      },
      { passive: false }
    );
    this.node.addEventListener('pointerdown', event => {
      if (event.button !== 0 || (event.target as Element).closest('.kiln-Dag-node')) {
        return; // a click on a task goes to the task
      }
      const start = { x: event.clientX, y: event.clientY, tx: this._tx, ty: this._ty };
      this.node.setPointerCapture(event.pointerId);
      this.node.classList.add('kiln-mod-panning');
      const move = (e: PointerEvent) => {
        this._moved = true;
        this._tx = start.tx + e.clientX - start.x;
        this._ty = start.ty + e.clientY - start.y;
        this._apply();
      };
      const up = () => {
        this.node.classList.remove('kiln-mod-panning');
        this.node.removeEventListener('pointermove', move);
        this.node.removeEventListener('pointerup', up);
      };
      this.node.addEventListener('pointermove', move);
      this.node.addEventListener('pointerup', up);
    });
  }

  private _apply(): void {
    this._group?.setAttribute('transform', `translate(${this._tx} ${this._ty}) scale(${this._k})`);
    this.node.dataset.zoom = this._k.toFixed(3);
  }

  private _svg: SVGSVGElement | null = null;
  private _group: SVGGElement | null = null;
  private _size = { width: 1, height: 1 };
  private _signature = '';
  private _k = 1;
  private _tx = 0;
  private _ty = 0;
  private _fitPending = false;
  private _moved = false;
}

/**
 * The Pipeline view of one notebook, in the main area: its DAG (zoom, pan, readable text),
 * run controls, the timeline of the current or a chosen run and the run history.
 */
export class PipelineView extends Widget {
  constructor(
    readonly path: string,
    private readonly _pipelines: IKilnPipelines,
    private readonly _commands: CommandRegistry
  ) {
    super();
    this.addClass('kiln-View');
    this.node.dataset.path = path;

    const controls = el('div', 'kiln-View-controls');
    this._status = el('div', 'kiln-View-status');
    const zoom = el('div', 'kiln-View-zoom');
    const zoomOut = this._button('−', 'Zoom out', 'kiln-View-zoomout', () => this._graph.zoomBy(1 / 1.25));
    const zoomIn = this._button('+', 'Zoom in', 'kiln-View-zoomin', () => this._graph.zoomBy(1.25));
    const fit = this._button('Fit', 'Fit the graph to the view (never below a readable size)', 'kiln-View-fit', () => this._graph.fit());
    this._zoomLabel = el('span', 'kiln-View-zoomlabel');
    zoom.append(zoomOut, this._zoomLabel, zoomIn, fit);
    this._runButtons = el('div', 'kiln-View-run');
    controls.append(this._runButtons, this._status, zoom);

    const body = el('div', 'kiln-View-body');
    const main = el('div', 'kiln-View-main');
    this._timeline = el('div', 'kiln-View-timeline');
    main.append(this._graph.node, this._timeline);
    this._history = el('div', 'kiln-View-history');
    body.append(main, this._history);
    this.node.append(controls, body);
    this._graph.attachInput(() => this._showZoom());

    _pipelines.modelAdded.connect(this._findModel, this);
    _commands.commandChanged.connect(this._renderRunButtons, this);
    this._findModel();
  }

  get model(): PipelineModel | null {
    return this._model;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model?.changed.disconnect(this._render, this);
    this._pipelines.modelAdded.disconnect(this._findModel, this);
    this._commands.commandChanged.disconnect(this._renderRunButtons, this);
    window.clearInterval(this._ticker);
    super.dispose();
  }

  protected onAfterShow(_msg: Message): void {
    this._graph.refit();
    void this._loadHistory();
  }

  protected onResize(_msg: Message): void {
    this._graph.refit();
    this._renderTimeline();
  }

  private _button(text: string, title: string, className: string, action: () => void): HTMLButtonElement {
    const button = el('button', `jp-Button jp-mod-styled kiln-View-button ${className}`, text);
    button.type = 'button';
    button.title = title;
    button.addEventListener('click', () => {
      action();
      this._showZoom();
    });
    return button;
  }

  private _findModel(): void {
    const model = this._pipelines.modelForPath(this.path);
    if (model === this._model) {
      return;
    }
    this._model?.changed.disconnect(this._render, this);
    this._model = model;
    model?.changed.connect(this._render, this);
    model?.disposed.connect(() => {
      this._model = null;
      this._render();
    });
    this._render();
    void this._loadHistory();
  }

  private _renderRunButtons(): void {
    const box = this._runButtons;
    box.replaceChildren();
    const args = { path: this.path };
    for (const [id, className] of [
      [CommandIDs.run, 'kiln-View-runbutton jp-mod-accept'],
      [CommandIDs.runNoCache, 'kiln-View-nocache'],
      [CommandIDs.cancel, 'kiln-View-cancel jp-mod-warn']
    ]) {
      if (!this._commands.hasCommand(id)) {
        continue;
      }
      const enabled = this._commands.isEnabled(id, args);
      if (id === CommandIDs.cancel && !enabled && this._model?.run?.status !== 'cancelling') {
        continue; // Cancel only while there is a run to cancel
      }
      const button = el('button', `jp-Button jp-mod-styled kiln-View-button ${className}`);
      button.textContent = this._commands.label(id, args);
      button.title = this._commands.caption(id, args);
      button.disabled = !this._commands.isEnabled(id, args);
      button.dataset.command = id;
      button.addEventListener('click', () => void this._commands.execute(id, args));
      box.append(button);
    }
  }

  private _render(): void {
    this.title.label = `Pipeline: ${this.path.split('/').pop()}`;
    this._renderRunButtons();
    const model = this._model;
    this._status.replaceChildren();
    if (!model) {
      this._graph.show(null, '');
      const open = el('button', 'kiln-LinkButton', `Open ${this.path} to see its pipeline`);
      open.addEventListener('click', () => void this._commands.execute('docmanager:open', { path: this.path }));
      this._graph.node.append(open);
      this._timeline.replaceChildren();
      return;
    }
    this._renderStatus(model);
    const tasks = model.graphTasks;
    const box = this._graph.node.getBoundingClientRect();
    const svg = renderDag(model, null, task => {
      const first = task.code[0];
      // The notebook comes to the front (it is open: docmanager:open only activates it).
      void this._commands
        .execute('docmanager:open', { path: this.path })
        .then(() => model.revealCell(first?.cell_id, first?.cell_index));
    }, { aspect: box.width > 0 && box.height > 0 ? box.width / box.height : 1.6 });
    if (svg) {
      svg.dataset.path = this.path;
    }
    this._graph.show(svg, JSON.stringify(tasks.map(t => [t.name, t.upstream])));
    if (!svg) {
      this._graph.node.append(
        el('div', 'kiln-Panel-empty', model.compileResult ? 'No tasks yet.' : 'Compiling…')
      );
    }
    if (model.graphStale) {
      this._graph.node.append(
        el('div', 'kiln-View-stale', 'The notebook does not compile: this is the last graph that did. Diagnostics are in the Pipeline panel.')
      );
    }
    this._showZoom();
    this._renderTimeline();
    const run = model.run;
    const live = run !== null && !isFinalRun(run.status);
    window.clearInterval(this._ticker);
    if (live) {
      this._ticker = window.setInterval(() => this._renderTimeline(), 1000);
    }
    if (run && isFinalRun(run.status) && this._historyFor !== run.run_id) {
      this._historyFor = run.run_id;
      void this._loadHistory(); // the run that just ended is in the lineage database now
    }
  }

  private _renderStatus(model: PipelineModel): void {
    const shown = model.shownRecord;
    const run = model.run;
    if (shown) {
      this._status.append(
        el('span', `kiln-Chip kiln-mod-run-${shown.status}`, shown.status),
        el('span', '', ` recorded run ${shown.run_id.slice(0, 8)} · ${relativeTime(shown.started_at)}`)
      );
      const back = el('button', 'kiln-LinkButton kiln-View-latest', 'show the latest run');
      back.addEventListener('click', () => model.showRecord(null));
      this._status.append(' ', back);
    } else if (run) {
      const line = el('span', `kiln-Run kiln-mod-run-${run.status}`);
      line.dataset.runId = run.run_id;
      line.append(el('span', 'kiln-Run-status', run.status), el('span', 'kiln-Run-id', ` run ${run.run_id.slice(0, 8)}`));
      this._status.append(line);
      if (run.dashboard_proxy) {
        const a = el('a', 'kiln-Run-dashboard', 'Dask dashboard ↗');
        a.href = URLExt.join(PageConfig.getBaseUrl(), run.dashboard_proxy);
        a.target = '_blank';
        a.rel = 'noopener';
        this._status.append(' ', a);
      }
    }
    const output = shown ? (shown.has_output ? { run_id: shown.run_id } : null) : run?.output_notebook ? { path: run.output_notebook } : null;
    if (output) {
      const link = el('button', 'kiln-LinkButton kiln-View-output', 'Output notebook');
      link.addEventListener('click', () => void this._commands.execute(CommandIDs.openOutput, { notebook: this.path, ...output }));
      this._status.append(' ', link);
    }
  }

  private _renderTimeline(): void {
    const model = this._model;
    const box = this._timeline;
    box.replaceChildren();
    if (!model) {
      return;
    }
    const width = Math.max(400, box.getBoundingClientRect().width || this.node.getBoundingClientRect().width - 320);
    const shown = model.shownRecord;
    let bars;
    let heading: string;
    if (shown) {
      bars = barsFromRecord(shown);
      heading = `Timeline of run ${shown.run_id.slice(0, 8)}`;
    } else if (model.run && model.runEvents.length > 0) {
      const run = model.run;
      const end = isFinalRun(run.status) ? Math.max(...model.runEvents.map(e => e.at)) : Date.now() / 1000;
      bars = barsFromEvents(model.runEvents, end).bars;
      heading = `Timeline of run ${run.run_id.slice(0, 8)}`;
    } else {
      box.append(el('h3', 'kiln-Panel-heading', 'Timeline'), el('div', 'kiln-Panel-empty', 'Run the pipeline, or pick a run in the history, to see where the time went.'));
      return;
    }
    box.append(el('h3', 'kiln-Panel-heading', heading));
    if (bars.length === 0) {
      box.append(el('div', 'kiln-Panel-empty', 'No task has started yet.'));
      return;
    }
    box.append(renderTimeline(model.graphTasks, bars, width));
  }

  private _showZoom(): void {
    this._zoomLabel.textContent = `${Math.round(this._graph.zoom * 100)}%`;
  }

  private async _loadHistory(): Promise<void> {
    const box = this._history;
    let answer: ILineageAnswer;
    try {
      answer = await requestKiln<ILineageAnswer>(
        `lineage?path=${encodeURIComponent(this.path)}&limit=${HISTORY_LIMIT}`
      );
    } catch (error) {
      box.replaceChildren(el('h3', 'kiln-Panel-heading', 'Run history'), el('div', 'kiln-Panel-error', (error as Error).message));
      return;
    }
    box.replaceChildren(el('h3', 'kiln-Panel-heading', 'Run history'));
    if (answer.runs.length === 0) {
      box.append(el('div', 'kiln-Panel-empty', 'No recorded runs yet.'));
      return;
    }
    const list = el('ul', 'kiln-History');
    for (const run of answer.runs) {
      list.append(this._historyItem(run));
    }
    box.append(list);
  }

  private _historyItem(run: ILineageRun): HTMLLIElement {
    const item = el('li', 'kiln-History-run');
    item.dataset.runId = run.run_id;
    item.tabIndex = 0;
    const top = el('div', 'kiln-History-top');
    top.append(
      el('span', `kiln-Chip kiln-History-status kiln-mod-run-${run.status}`, run.status),
      el('span', 'kiln-History-when', relativeTime(run.started_at))
    );
    const details = el(
      'div',
      'kiln-History-details',
      [formatDuration(run.duration ?? undefined) || '–', run.user ?? '', `v ${run.pipeline_version.slice(0, 8)}`]
        .filter(Boolean)
        .join(' · ')
    );
    item.title = `run ${run.run_id}, started ${run.started_at}: click to show its badges, timeline and output`;
    item.append(top, details);
    const select = () => {
      this._model?.showRecord(run);
      for (const other of Array.from(this._history.querySelectorAll('.kiln-History-run'))) {
        other.classList.toggle('kiln-mod-selected', other === item);
      }
    };
    item.addEventListener('click', select);
    item.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        select();
      }
    });
    return item;
  }

  private _model: PipelineModel | null = null;
  private _graph = new GraphViewport();
  private _status: HTMLDivElement;
  private _zoomLabel: HTMLSpanElement;
  private _runButtons: HTMLDivElement;
  private _timeline: HTMLDivElement;
  private _history: HTMLDivElement;
  private _historyFor = '';
  private _ticker = 0;
}

/** The Pipeline view: opened from the panel, the palette and a task's context menu. */
export const viewPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:view',
  description: 'The Pipeline view in the main area: the DAG, the run timeline and history.',
  autoStart: true,
  requires: [IKilnPipelines],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    pipelines: IKilnPipelines,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const tracker = new WidgetTracker<MainAreaWidget<PipelineView>>({ namespace: 'kiln-pipeline-view' });
    const pathOf = (args: { [key: string]: unknown }): string | null => {
      if (typeof args.path === 'string' && args.path) {
        return args.path;
      }
      return contextTarget.path ?? pipelines.current?.path ?? null;
    };
    app.commands.addCommand(CommandIDs.openView, {
      label: 'Open Pipeline View',
      caption: 'Show the pipeline graph, its runs and their timeline in the main area',
      icon: kilnIcon,
      isEnabled: args => pathOf(args) !== null,
      execute: async args => {
        const path = pathOf(args);
        if (!path) {
          return;
        }
        let widget = tracker.find(w => w.content.path === path);
        if (!widget) {
          const content = new PipelineView(path, pipelines, app.commands);
          widget = new MainAreaWidget({ content });
          widget.id = `kiln-view-${path.replace(/[^A-Za-z0-9]/g, '-')}`;
          widget.title.icon = kilnIcon;
          widget.title.label = `Pipeline: ${path.split('/').pop()}`;
          widget.title.caption = `Kiln pipeline of ${path}`;
          widget.title.closable = true;
          app.shell.add(widget, 'main', { mode: 'tab-after' });
          await tracker.add(widget);
        }
        app.shell.activateById(widget.id);
        return widget;
      }
    });
    palette?.addItem({ command: CommandIDs.openView, category: 'Kiln Pipeline' });
    app.contextMenu.addItem({ command: CommandIDs.openView, selector: '.kiln-Dag-node', rank: 1 });
    if (restorer) {
      void restorer.restore(tracker, {
        command: CommandIDs.openView,
        args: widget => ({ path: widget.content.path }),
        name: widget => widget.content.path
      });
    }
  }
};
