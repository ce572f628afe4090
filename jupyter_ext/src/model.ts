import { Cell, ICellModel } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { KilnRequestError, postKiln, requestKiln } from './api';
import {
  ICompileResult,
  IDiagnostic,
  IExportResult,
  IKilnSettings,
  ILineageRun,
  IPipelineSpec,
  IRunEvent,
  IRunState,
  ITaskSpec,
  ITaskState,
  isFinalRun
} from './types';

/** Task colours, by the task's position in the spec (stable while the DAG is). */
export const TASK_COLORS = [
  '#4e79a7',
  '#f28e2b',
  '#59a14f',
  '#b07aa1',
  '#e15759',
  '#76b7b2',
  '#edc948',
  '#9c755f',
  '#ff9da7',
  '#bab0ac'
];

/** Between polls of a server that does not hold them (one without `version`). */
const POLL_MS = 500;
/** How long the server may hold a poll until the run changes (its long poll, seconds). */
const LONG_POLL_S = 25;

/** Which task a cell belongs to, as the last compile result says. */
export interface ICellTask {
  task: ITaskSpec;
  first: boolean;
  color: string;
}

/** A cell widget and its index in the notebook. */
export interface ICellRef {
  cell: Cell;
  index: number;
}

/**
 * The pipeline of one notebook: the last compile result of its current content (refreshed
 * from /kiln/compile, debounced, as the notebook changes) and the state of its last run.
 */
export class PipelineModel implements IDisposable {
  constructor(
    readonly panel: NotebookPanel,
    private readonly _settings: () => IKilnSettings
  ) {
    panel.context.ready.then(() => {
      if (this._disposed) {
        return;
      }
      panel.model?.contentChanged.connect(this._onContentChanged, this);
      void this.compileNow();
      void this._resumeLatestRun();
    });
    panel.context.pathChanged.connect(this._onContentChanged, this);
    panel.disposed.connect(() => this.dispose());
  }

  /** Emitted whenever the compile result, the run state or the busy flags change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get disposed(): ISignal<this, void> {
    return this._disposedSignal;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  get path(): string {
    return this.panel.context.localPath;
  }

  get compileResult(): ICompileResult | null {
    return this._compileResult;
  }

  /** Why the last compile request failed (unreadable notebook, server down), or null. */
  get compileError(): string | null {
    return this._compileError;
  }

  get compiling(): boolean {
    return this._compiling;
  }

  get run(): IRunState | null {
    return this._run;
  }

  /** Why the last run could not start, or null. */
  get runError(): string | null {
    return this._runError;
  }

  get runDiagnostics(): IDiagnostic[] {
    return this._runDiagnostics;
  }

  get running(): boolean {
    return this._starting || (this._run !== null && !isFinalRun(this._run.status));
  }

  /** Kiln's settings (settings registry) as they are now. */
  get settings(): IKilnSettings {
    return this._settings();
  }

  get exporting(): boolean {
    return this._exporting;
  }

  /** The last export of this notebook (this session), or null. */
  get exported(): IExportResult | null {
    return this._exported;
  }

  /** Why the last export failed, or null. */
  get exportError(): string | null {
    return this._exportError;
  }

  get tasks(): ITaskSpec[] {
    return this._compileResult?.spec?.tasks ?? [];
  }

  /** The tasks to draw: the current spec's, else the last spec that compiled (greyed). */
  get graphTasks(): ITaskSpec[] {
    return this._compileResult?.spec?.tasks ?? this._lastGoodSpec?.tasks ?? [];
  }

  /** True while the graph shown is the last good one, not the current content's. */
  get graphStale(): boolean {
    return !this._compileResult?.spec && this._lastGoodSpec !== null;
  }

  /** Every event of the current run so far (each with `at`, the server's epoch seconds). */
  get runEvents(): IRunEvent[] {
    return this._events;
  }

  /** The task and everything downstream of it, in spec order (Rerun from this task). */
  downstreamOf(name: string): string[] {
    const chosen = new Set([name]);
    for (const task of this.tasks) {
      if (task.upstream.some(u => chosen.has(u))) {
        chosen.add(task.name);
      }
    }
    return this.tasks.map(t => t.name).filter(n => chosen.has(n));
  }

  get diagnostics(): IDiagnostic[] {
    return this._compileResult?.diagnostics ?? [];
  }

  taskColor(name: string): string {
    const index = this.graphTasks.findIndex(t => t.name === name);
    return TASK_COLORS[(index < 0 ? 0 : index) % TASK_COLORS.length];
  }

  taskState(name: string): ITaskState | null {
    if (this._shownRecord) {
      const task = this._shownRecord.tasks?.[name];
      return task ? { status: task.status as ITaskState['status'], duration: task.duration ?? undefined } : null;
    }
    return this._run?.tasks[name] ?? null;
  }

  /**
   * True when a cell of this task changed since the shown run started: its badge is marked
   * outdated (the status describes code that is no longer there).
   */
  taskOutdated(name: string): boolean {
    const task = this.graphTasks.find(t => t.name === name);
    if (!task || this._shownRecord || !this._run) {
      return false;
    }
    return task.code.some(code => {
      const ran = this._runSources.get(code.cell_id);
      const cell = this.findCell(code.cell_id, null)?.cell;
      return ran !== undefined && cell !== undefined && cell.model.sharedModel.getSource() !== ran;
    });
  }

  /** A recorded run picked in the run history: badges, graph and timeline show it. */
  get shownRecord(): ILineageRun | null {
    return this._shownRecord;
  }

  showRecord(run: ILineageRun | null): void {
    this._shownRecord = run;
    this._changed.emit();
  }

  /** The task a cell belongs to, from the last compile result. */
  cellTask(model: ICellModel, index: number): ICellTask | null {
    const hit = this._cellTasks.byId.get(model.id) ?? this._cellTasks.byIndex.get(index);
    return hit ?? null;
  }

  /** A cell by the id the compiler or runtime reported, else by its index. */
  findCell(cellId: string | null | undefined, cellIndex: number | null | undefined): ICellRef | null {
    const cells = this.panel.content.widgets;
    if (cellId) {
      const index = cells.findIndex(c => c.model.id === cellId);
      if (index >= 0) {
        return { cell: cells[index], index };
      }
    }
    if (cellIndex !== null && cellIndex !== undefined && cellIndex >= 0 && cellIndex < cells.length) {
      return { cell: cells[cellIndex], index: cellIndex };
    }
    return null;
  }

  /** Make a cell the active one, scroll to it and put the cursor on `line` (1-based). */
  async revealCell(
    cellId: string | null | undefined,
    cellIndex: number | null | undefined,
    line?: number | null,
    col?: number | null
  ): Promise<boolean> {
    const ref = this.findCell(cellId, cellIndex);
    if (!ref) {
      return false;
    }
    const notebook = this.panel.content;
    notebook.deselectAll();
    notebook.activeCellIndex = ref.index;
    await notebook.scrollToCell(ref.cell, 'center');
    if (line && ref.cell.editor) {
      ref.cell.editor.setCursorPosition({ line: Math.max(0, line - 1), column: Math.max(0, (col ?? 1) - 1) });
      ref.cell.editor.focus();
    }
    return true;
  }

  /** Compile soon (debounced): called on every content change. */
  scheduleCompile(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      void this.compileNow();
    }, this._settings().compileDelayMs);
  }

  /** Post the notebook's current content (outputs left out) to /kiln/compile. */
  async compileNow(force = false): Promise<void> {
    if (!this.panel.model || this._disposed) {
      return;
    }
    const notebook = this._notebookJSON();
    const signature = JSON.stringify([this.path, notebook.cells]);
    if (!force && signature === this._lastSignature) {
      return; // outputs or selection changed, not the pipeline
    }
    this._lastSignature = signature;
    const request = ++this._compileRequest;
    this._compiling = true;
    this._changed.emit();
    try {
      const result = await postKiln<ICompileResult>('compile', { path: this.path, notebook });
      if (request !== this._compileRequest || this._disposed) {
        return; // a newer compile is on its way
      }
      this._compileResult = result;
      this._compileError = null;
      if (result.spec) {
        this._lastGoodSpec = result.spec;
      }
      if (this._runErrorFromCompile) {
        // "cannot run: the notebook does not compile" is about the content before this compile.
        this._runError = null;
        this._runErrorFromCompile = false;
      }
    } catch (error) {
      if (request !== this._compileRequest || this._disposed) {
        return;
      }
      this._compileResult = null;
      this._compileError = (error as Error).message;
      this._lastSignature = null;
    }
    this._compiling = false;
    this._indexCells();
    this._changed.emit();
  }

  /**
   * The compiler's diagnostics for the notebook as it would be with `tags` on `cell`: what the
   * tag editor shows as you type (the same /kiln/compile request as every compile, so the
   * messages are the compiler's own). Nothing is stored: the model's compile result stays that
   * of the notebook's real content.
   */
  async diagnosticsWithTags(cell: ICellModel, tags: string[]): Promise<IDiagnostic[]> {
    const position = this.panel.content.widgets.findIndex(c => c.model === cell);
    if (position < 0 || !this.panel.model) {
      return [];
    }
    const notebook = this._notebookJSON();
    notebook.cells[position] = {
      ...notebook.cells[position],
      metadata: { ...(notebook.cells[position].metadata as object), tags }
    };
    const result = await postKiln<ICompileResult>('compile', { path: this.path, notebook });
    return result.diagnostics;
  }

  /** The notebook's current content with outputs left out (what the compiler reads). */
  private _notebookJSON(): { cells: Array<{ [key: string]: unknown }> } {
    const notebook = this.panel.model!.toJSON() as { cells: Array<{ [key: string]: unknown }> };
    notebook.cells = notebook.cells.map(cell =>
      cell.cell_type === 'code' ? { ...cell, outputs: [], execution_count: null } : cell
    );
    return notebook;
  }

  /**
   * Save the notebook, start a run of it on the server and follow it until it ends.
   * `useCache: false` neither reads nor writes the cache; `force` reruns those tasks.
   */
  async startRun(options: { useCache?: boolean; force?: string[] } = {}): Promise<void> {
    if (this.running) {
      return;
    }
    this._starting = true;
    this._shownRecord = null;
    this._runError = null;
    this._runErrorFromCompile = false;
    this._runDiagnostics = [];
    this._changed.emit();
    let runId: string;
    try {
      if (this.panel.context.model.dirty) {
        await this.panel.context.save();
      }
      const settings = this._settings();
      const started = await postKiln<IRunState>('runs', {
        path: this.path,
        scheduler: settings.schedulerAddress || undefined,
        store_url: settings.storeUrl || undefined,
        lineage_db: settings.lineageUrl || undefined,
        workers: settings.workers > 0 ? settings.workers : undefined,
        use_cache: options.useCache === false ? false : undefined,
        force: options.force && options.force.length ? options.force : undefined
      });
      this._run = { ...started, tasks: {}, version: undefined }; // the first poll answers at once
      this._events = [];
      this._rememberSources();
      runId = started.run_id;
    } catch (error) {
      this._runError = (error as Error).message;
      if (error instanceof KilnRequestError && Array.isArray(error.body.diagnostics)) {
        // The saved file does not compile. Its diagnostics are the compile result's, listed
        // once: recompile the content instead of adding the run's copy of them.
        this._runErrorFromCompile = true;
        void this.compileNow(true);
      }
      throw error;
    } finally {
      this._starting = false;
      this._changed.emit();
    }
    await this._follow(runId);
  }

  /** Ask the server to cancel the current run (its tasks are cancelled on the cluster). */
  async cancelRun(): Promise<void> {
    const run = this._run;
    if (!run || isFinalRun(run.status)) {
      return;
    }
    const answer = await postKiln<IRunState>(`runs/${run.run_id}/cancel`, {});
    if (this._run?.run_id === run.run_id) {
      this._run = { ...this._run, status: answer.status };
      this._changed.emit();
    }
  }

  /** Save the notebook and export it as `pipelines/NAME/VERSION/` beside it (once per version). */
  async exportPipeline(): Promise<IExportResult> {
    this._exporting = true;
    this._exportError = null;
    this._changed.emit();
    try {
      if (this.panel.context.model.dirty) {
        await this.panel.context.save();
      }
      this._exported = await postKiln<IExportResult>('export', { path: this.path });
      return this._exported;
    } catch (error) {
      this._exported = null;
      this._exportError = (error as Error).message;
      throw error;
    } finally {
      this._exporting = false;
      this._changed.emit();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this.panel.model?.contentChanged.disconnect(this._onContentChanged, this);
    this._disposedSignal.emit();
    Signal.clearData(this);
  }

  private _onContentChanged(): void {
    this.scheduleCompile();
  }

  /**
   * Follow a run until it ends: the server answers each request as soon as the run changed
   * (a long poll), so a badge turns `running` when its task does. Returns at the run's final
   * state; the result that settles just after (lineage closed, the output notebook's link, a
   * budget that failed the run) is still followed, in the background.
   */
  private async _follow(runId: string): Promise<void> {
    while (!this._disposed) {
      if (!(await this._pollRun(runId))) {
        return;
      }
      if (isFinalRun(this._run!.status)) {
        if (!this._run!.settled && this._run!.version !== undefined) {
          void this._followUntilSettled(runId);
        }
        return;
      }
    }
  }

  private async _followUntilSettled(runId: string): Promise<void> {
    while (!this._disposed && this._run?.run_id === runId && !this._run.settled) {
      if (!(await this._pollRun(runId))) {
        return;
      }
    }
  }

  /** One (long) poll of the run; false when the run is no longer this model's to follow. */
  private async _pollRun(runId: string): Promise<boolean> {
    const known = this._run?.run_id === runId ? this._run : null;
    const asked = Date.now();
    let state: IRunState;
    try {
      const after = known?.version !== undefined ? `&after=${known.version}&wait=${LONG_POLL_S}` : '';
      state = await requestKiln<IRunState>(`runs/${runId}?since=${known?.event_count ?? 0}${after}`);
    } catch (error) {
      this._runError = `lost track of run ${runId}: ${(error as Error).message}`;
      this._changed.emit();
      return false;
    }
    if (this._run?.run_id !== runId || this._disposed) {
      return false; // another run took over
    }
    if ((state.events?.length ?? 0) > 0) {
      this._events = [...this._events, ...(state.events ?? [])];
    }
    this._run = state;
    this._changed.emit();
    if (state.version === undefined || (state.version === known?.version && !state.settled)) {
      // A server that answers at once (no long poll), or a long poll that timed out.
      const rest = POLL_MS - (Date.now() - asked);
      if (rest > 0) {
        await new Promise(resolve => window.setTimeout(resolve, rest));
      }
    }
    return true;
  }

  /** Show this server's latest run of the notebook; follow it if it is still going. */
  private async _resumeLatestRun(): Promise<void> {
    try {
      const { runs } = await requestKiln<{ runs: IRunState[] }>(
        `runs?path=${encodeURIComponent(this.path)}`
      );
      if (runs.length === 0 || this._run !== null) {
        return;
      }
      this._run = { ...runs[0], tasks: {}, version: undefined };
      this._events = [];
      this._rememberSources(); // after a reload: changes from now on are known
      this._changed.emit();
      await this._follow(runs[0].run_id);
    } catch {
      // No run history is not an error worth showing.
    }
  }

  private _rememberSources(): void {
    this._runSources = new Map(
      this.panel.content.widgets.map(cell => [cell.model.id, cell.model.sharedModel.getSource()])
    );
  }

  private _indexCells(): void {
    const byId = new Map<string, ICellTask>();
    const byIndex = new Map<number, ICellTask>();
    this.tasks.forEach((task, i) => {
      const color = TASK_COLORS[i % TASK_COLORS.length];
      task.code.forEach((code, position) => {
        const info = { task, first: position === 0, color };
        byId.set(code.cell_id, info);
        byIndex.set(code.cell_index, info);
      });
    });
    // Ids come from the posted model, so they match; indexes are the fallback for
    // notebooks whose cells have no ids (nbformat < 4.5).
    const ids = new Set(this.panel.content.widgets.map(c => c.model.id));
    const idsMatch = [...byId.keys()].some(id => ids.has(id));
    this._cellTasks = { byId: idsMatch ? byId : new Map(), byIndex: idsMatch ? new Map() : byIndex };
  }

  private _changed = new Signal<this, void>(this);
  private _disposedSignal = new Signal<this, void>(this);
  private _disposed = false;
  private _timer: number | null = null;
  private _compileRequest = 0;
  private _compiling = false;
  private _lastSignature: string | null = null;
  private _compileResult: ICompileResult | null = null;
  private _compileError: string | null = null;
  private _cellTasks: { byId: Map<string, ICellTask>; byIndex: Map<number, ICellTask> } = {
    byId: new Map(),
    byIndex: new Map()
  };
  private _lastGoodSpec: IPipelineSpec | null = null;
  private _shownRecord: ILineageRun | null = null;
  private _events: IRunEvent[] = [];
  private _runSources = new Map<string, string>();
  private _runErrorFromCompile = false;
  private _run: IRunState | null = null;
  private _runError: string | null = null;
  private _runDiagnostics: IDiagnostic[] = [];
  private _starting = false;
  private _exporting = false;
  private _exported: IExportResult | null = null;
  private _exportError: string | null = null;
}
