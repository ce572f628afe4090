import { Cell } from '@jupyterlab/cells';
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import type { PipelineModel } from './model';
import { noteTagEdit } from './tagguard';
import { CellRole, ICellTagForm, applyTagForm, checkTag, readTagForm } from './tags';
import { IDiagnostic } from './types';
import { tagTransaction } from './undo';

const ROLES: Array<[CellRole, string]> = [
  ['member', 'No tag: part of the task above (setup before the first task)'],
  ['task', 'Starts a task'],
  ['setup', 'Setup (imports, functions)'],
  ['parameters', 'Parameters'],
  ['skip', 'Skip (exploration only)'],
  ['metrics', 'Metrics (names metrics, holds checks)']
];

let uniqueId = 0;

/** The form's inputs a compiler message can be about, and `general` for the rest. */
type FieldKey =
  | 'name'
  | 'after'
  | 'cpu'
  | 'memory'
  | 'gpu'
  | 'retries'
  | 'timeout'
  | 'cache'
  | 'checks'
  | 'drift'
  | 'general';

/**
 * The compiler's codes about a cell's tags (compiler/compile/dag.py, metrics.py) and the field
 * each is about; `bad-tag` goes by the tag it quotes. Messages about the cell's code are not the
 * editor's: lint.ts marks them in the cell.
 */
const FIELD_OF_CODE: { [code: string]: FieldKey } = {
  'bad-tag': 'general',
  'duplicate-task': 'name',
  'unknown-after': 'after',
  cycle: 'after',
  'misplaced-check': 'checks',
  'unknown-metric': 'checks',
  'duplicate-metrics': 'general',
  'metric-not-produced': 'general',
  'metric-not-a-number': 'general',
  'misplaced-drift': 'drift',
  'unknown-drift-input': 'drift'
};
/** Reported on the other cell involved, naming this one ("already defined in cell 3"). */
const CROSS_CELL = new Set(['duplicate-task', 'duplicate-metrics', 'cycle']);
const FIELD_OF_PREFIX: { [prefix: string]: FieldKey } = {
  task: 'name',
  step: 'name',
  after: 'after',
  retries: 'retries',
  timeout: 'timeout',
  cache: 'cache',
  check: 'checks',
  warn: 'checks',
  drift: 'drift'
};

function fieldOf(d: IDiagnostic): FieldKey {
  if (d.code !== 'bad-tag') {
    return FIELD_OF_CODE[d.code] ?? 'general';
  }
  const quoted = /^bad tag '([a-z-]+):([a-z]*)/i.exec(d.message);
  if (!quoted) {
    return 'general';
  }
  const prefix = quoted[1].toLowerCase();
  if (prefix === 'resources') {
    const key = quoted[2].toLowerCase();
    return key === 'cpu' || key === 'memory' || key === 'gpu' ? key : 'general';
  }
  return FIELD_OF_PREFIX[prefix] ?? 'general';
}

/**
 * Asks the compiler about a cell's tags: `current` for the tags it has (the last compile's
 * diagnostics), `check` for the tags a form would write. Both give only the messages about
 * this cell's tags.
 */
export interface ITagChecker {
  current(): IDiagnostic[];
  check(form: ICellTagForm): Promise<IDiagnostic[]>;
}

/**
 * The checker of one cell of a pipeline: the same /kiln/compile request the panel makes on every
 * change, with the form's tags in place of the cell's (PipelineModel.diagnosticsWithTags), so the
 * editor shows the compiler's own words and no tag grammar lives in TypeScript.
 */
export function tagChecker(model: PipelineModel, cell: Cell): ITagChecker {
  const mine = (diagnostics: IDiagnostic[]): IDiagnostic[] => {
    const position = model.panel.content.widgets.indexOf(cell);
    const named = new RegExp(`\\bcell ${position}\\b`);
    return diagnostics.filter(
      d =>
        d.severity !== 'info' &&
        d.code in FIELD_OF_CODE &&
        (d.cell_index === position || (CROSS_CELL.has(d.code) && named.test(d.message)))
    );
  };
  return {
    current: () => mine(model.diagnostics),
    check: async form =>
      mine(await model.diagnosticsWithTags(cell.model, applyTagForm(cellTags(cell), form)))
  };
}

/** How long typing pauses before the compiler is asked (one request per pause, not per key). */
const CHECK_DELAY_MS = 300;

function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  const row = document.createElement('label');
  row.className = 'kiln-TagEditor-field';
  const text = document.createElement('span');
  text.className = 'kiln-TagEditor-label';
  text.textContent = label;
  row.append(text, input);
  if (hint) {
    row.title = hint;
  }
  return row;
}

function textInput(name: string, value: string, placeholder: string): HTMLInputElement {
  const input = document.createElement('input');
  input.type = 'text';
  input.className = 'jp-mod-styled kiln-TagEditor-input';
  input.name = name;
  input.value = value;
  input.placeholder = placeholder;
  input.spellcheck = false;
  return input;
}

/** Items of a free-text field: `sep` separates them (a condition holds no space once cleaned). */
function items(text: string, sep: RegExp): string[] {
  return text
    .split(sep)
    .map(s => s.trim())
    .filter(Boolean);
}

/**
 * A form over one cell's Kiln tags: its role (task / setup / parameters / skip / metrics), the
 * task's name, `after:` upstream tasks, resources, retries, timeout, cache policy and drift
 * limits; the metrics cell's checks.
 */
export class TagEditor extends Widget {
  constructor(
    tags: readonly string[],
    taskNames: readonly string[] = [],
    checker: ITagChecker | null = null
  ) {
    super();
    this.addClass('kiln-TagEditor');
    this._checker = checker;
    const form = readTagForm(tags);

    this._role = document.createElement('select');
    this._role.className = 'jp-mod-styled kiln-TagEditor-role';
    this._role.name = 'role';
    for (const [value, label] of ROLES) {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = label;
      this._role.append(option);
    }
    this._role.value = form.role;
    this._role.addEventListener('change', () => this._sync());

    const listId = `kiln-task-names-${++uniqueId}`;
    const names = document.createElement('datalist');
    names.id = listId;
    for (const name of taskNames) {
      const option = document.createElement('option');
      option.value = name;
      names.append(option);
    }

    this._name = textInput('name', form.name, 'e.g. load_data');
    this._after = textInput('after', form.after.join(', '), 'tasks to wait for, e.g. load, clean');
    this._after.setAttribute('list', listId);
    this._cpu = textInput('cpu', form.cpu, 'e.g. 2 (none set)');
    this._memory = textInput('memory', form.memory, 'e.g. 4GiB (none set)');
    this._gpu = textInput('gpu', form.gpu, 'e.g. 1 (none set)');
    this._retries = textInput('retries', form.retries, 'e.g. 2 (no retries)');
    this._timeout = textInput('timeout', form.timeout, 'e.g. 30m (no timeout)');
    this._cache = document.createElement('input');
    this._cache.type = 'checkbox';
    this._cache.name = 'cache';
    this._cache.checked = form.cache;
    this._drift = textInput('drift', form.drift.join(' '), 'e.g. raw<0.2 (default limit 0.2)');
    // Kept for a cell that continues a task (the form has no field for it there).
    this._memberDrift = form.role === 'member' ? form.drift : [];
    this._checks = document.createElement('textarea');
    this._checks.className = 'jp-mod-styled kiln-TagEditor-input kiln-TagEditor-checks';
    this._checks.name = 'checks';
    this._checks.rows = 4;
    this._checks.spellcheck = false;
    this._checks.value = form.checks.join('\n');
    this._checks.placeholder = 'one a line, e.g.\naccuracy>=0.8\nwarn:f1>=baseline-0.02';

    const resources = document.createElement('div');
    resources.className = 'kiln-TagEditor-row';
    resources.append(
      field('CPU', this._cpu, 'resources: CPU cores'),
      field('Memory', this._memory, 'resources: memory, e.g. 512MiB, 4GiB'),
      field('GPU', this._gpu, 'resources: GPUs')
    );
    const resourcesMessage = this._messageFor('cpu', 'memory', 'gpu');
    const policies = document.createElement('div');
    policies.className = 'kiln-TagEditor-row';
    const cacheLabel = document.createElement('label');
    cacheLabel.className = 'kiln-TagEditor-field kiln-TagEditor-check';
    cacheLabel.append(this._cache, document.createTextNode(' Cache'));
    cacheLabel.title = 'Reuse results of an identical earlier run (cache:off turns it off)';
    policies.append(
      field('Retries', this._retries, 'retries on failure'),
      field('Timeout', this._timeout, 'e.g. 90s, 30m, 2h'),
      cacheLabel
    );

    // Ordering, resources and policies are optional: folded unless the cell sets some.
    const options = document.createElement('details');
    options.className = 'kiln-TagEditor-options';
    options.open =
      form.after.length > 0 ||
      [form.cpu, form.memory, form.gpu, form.retries, form.timeout].some(Boolean) ||
      !form.cache ||
      form.drift.length > 0;
    const summary = document.createElement('summary');
    summary.textContent = 'After, resources, retries, timeout, cache, drift';
    this._options = options;
    options.append(
      summary,
      field('After', this._after, 'after:NAME: run after these tasks, besides data flow'),
      this._messageFor('after'),
      resources,
      resourcesMessage,
      policies,
      this._messageFor('retries', 'timeout', 'cache'),
      field(
        'Drift limits',
        this._drift,
        'drift:INPUT<LIMIT: a DataFrame this task binds, or a CSV/Parquet file it reads, drifts ' +
          'when a column scores LIMIT or more against the baseline run (0..1; default 0.2)'
      ),
      this._messageFor('drift')
    );

    this._taskFields = document.createElement('div');
    this._taskFields.className = 'kiln-TagEditor-task';
    this._taskFields.append(
      field('Task name', this._name, 'task:NAME'),
      this._messageFor('name'),
      options,
      names
    );
    this._metricsFields = document.createElement('div');
    this._metricsFields.className = 'kiln-TagEditor-task kiln-TagEditor-metrics';
    this._metricsFields.append(
      field(
        'Checks',
        this._checks,
        'check:METRIC OP VALUE fails the run; warn: flags it. OP: < <= > >= ==; VALUE: a number ' +
          'or baseline±x (the baseline run: pinned, else the last succeeded one)'
      ),
      this._messageFor('checks')
    );
    // Messages about no one field, and what stops Apply.
    this._summary = document.createElement('div');
    this._summary.className = 'kiln-TagEditor-message';
    this._summary.setAttribute('role', 'status');
    this.node.append(
      field('This cell', this._role),
      this._taskFields,
      this._metricsFields,
      this._summary
    );
    this._sync();
    this.node.addEventListener('input', this._onEdit);
    this.node.addEventListener('change', this._onEdit);
    this._show(checker?.current() ?? []);
  }

  /**
   * Emitted with `true` when the form may be applied (no error from the compiler or the form),
   * `false` when it may not.
   */
  get verdictChanged(): ISignal<this, boolean> {
    return this._verdictChanged;
  }

  /** Whether the user has changed a field since the form was made. */
  get touched(): boolean {
    return this._touched;
  }

  /** Whether the last verdict allows Apply. */
  get valid(): boolean {
    return this._errors === 0;
  }

  /**
   * Ask the compiler about the form as it is now (a pending, debounced request is replaced) and
   * say whether it may be applied. Apply awaits this, so a click right after typing cannot
   * write tags the compiler has not seen. Without a server answer the form's own check decides.
   */
  async settle(): Promise<boolean> {
    window.clearTimeout(this._timer);
    return this._check();
  }

  dispose(): void {
    window.clearTimeout(this._timer);
    ++this._asked; // an answer on its way finds nothing to update
    super.dispose();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._echoValidity(); // a dialog opened on a form that is already invalid refuses Apply
  }

  private _onEdit = (): void => {
    if (this._echoing) {
      return;
    }
    this._touched = true;
    window.clearTimeout(this._timer);
    this._timer = window.setTimeout(() => void this._check(), CHECK_DELAY_MS);
  };

  private async _check(): Promise<boolean> {
    const request = ++this._asked;
    const problem = this.validate();
    if (problem) {
      this._show([], problem);
      return false;
    }
    if (!this._checker) {
      this._show([]);
      return true;
    }
    let diagnostics: IDiagnostic[];
    try {
      diagnostics = await this._checker.check(this.getValue());
    } catch {
      // The server's answer is a hint; without it the form's own check decides.
      diagnostics = [];
    }
    if (request === this._asked && !this.isDisposed) {
      this._show(diagnostics);
    }
    return !diagnostics.some(d => d.severity === 'error');
  }

  /** A message line under the row holding `keys`' inputs. */
  private _messageFor(...keys: FieldKey[]): HTMLElement {
    const node = document.createElement('div');
    node.className = 'kiln-TagEditor-fieldMessage';
    node.dataset.field = keys[0];
    for (const key of keys) {
      this._messages.set(key, node);
    }
    return node;
  }

  private _inputOf(key: FieldKey): HTMLInputElement | HTMLTextAreaElement | null {
    const inputs: { [key: string]: HTMLInputElement | HTMLTextAreaElement } = {
      name: this._name,
      after: this._after,
      cpu: this._cpu,
      memory: this._memory,
      gpu: this._gpu,
      retries: this._retries,
      timeout: this._timeout,
      cache: this._cache,
      checks: this._checks,
      drift: this._drift
    };
    return inputs[key] ?? null;
  }

  /** The textarea lines (1-based) a check tag comes from: where to look in a long list. */
  private _checkLines(tag: string): number[] {
    const lines: number[] = [];
    this._checks.value.split('\n').forEach((line, i) => {
      if (line.split(';').some(item => item.trim() && checkTag(item) === tag)) {
        lines.push(i + 1);
      }
    });
    return lines;
  }

  /**
   * Put each message under the field it is about (the form's own `problem`, a task without a
   * name, under Task name; the general ones in the summary); mark fields with an error invalid (setCustomValidity: a
   * JupyterLab dialog then refuses its accept button by itself) and count the errors.
   */
  private _show(diagnostics: IDiagnostic[], problem: string | null = null): void {
    for (const node of new Set(this._messages.values())) {
      node.replaceChildren();
    }
    this._summary.replaceChildren();
    const invalid = new Map<FieldKey, string>();
    let errors = problem ? 1 : 0;
    let fieldErrors = 0;
    if (problem) {
      invalid.set('name', problem);
      this._messages.get('name')!.append(this._line('error', problem));
      fieldErrors++;
    }
    const located = diagnostics.map(d => ({ d, text: d.message, line: 0 }));
    for (const item of located) {
      if (fieldOf(item.d) === 'checks') {
        const tag = /'((?:check|warn):[^']*)'/i.exec(item.d.message)?.[1];
        const lines = tag ? this._checkLines(tag) : [];
        if (lines.length) {
          item.text = `line ${lines.join(', ')}: ${item.text}`;
          item.line = lines[0];
        }
      }
    }
    located.sort((a, b) => a.line - b.line); // the Checks box's messages in its lines' order
    for (const { d, text } of located) {
      let key = fieldOf(d);
      const node = key === 'general' ? null : this._messages.get(key)!;
      if (!node || node.closest('.kiln-mod-hidden')) {
        key = 'general'; // its field is not shown for this role: say it where it is seen
      }
      const line = this._line(d.severity === 'error' ? 'error' : 'warning', text);
      if (key === 'general') {
        this._summary.append(line);
      } else {
        node!.append(line);
      }
      if (d.severity === 'error') {
        errors++;
        if (key !== 'general') {
          fieldErrors++;
          invalid.set(key, [invalid.get(key), d.message].filter(Boolean).join('\n'));
        }
      }
    }
    for (const key of FIELD_KEYS) {
      const input = this._inputOf(key);
      const message = invalid.get(key) ?? '';
      input?.setCustomValidity(message);
      input?.classList.toggle('kiln-mod-invalid', message !== '');
      if (message) {
        input?.setAttribute('aria-invalid', 'true');
      } else {
        input?.removeAttribute('aria-invalid');
      }
    }
    if (FOLDED.some(key => invalid.has(key))) {
      this._options.open = true; // an error inside the folded options is never out of sight
    }
    if (fieldErrors) {
      this._summary.append(
        this._line(
          'error',
          fieldErrors === 1
            ? 'Cannot apply: fix the field marked in red.'
            : `Cannot apply: fix the ${fieldErrors} errors marked in red.`
        )
      );
    }
    const changed = (errors === 0) !== (this._errors === 0);
    this._errors = errors;
    this._echoValidity();
    if (changed) {
      this._verdictChanged.emit(errors === 0);
    }
  }

  private _line(severity: 'error' | 'warning', text: string): HTMLElement {
    const node = document.createElement('div');
    node.className = severity === 'error' ? 'kiln-mod-error' : 'kiln-mod-warning';
    node.textContent = severity === 'error' ? text : `warning: ${text}`;
    return node;
  }

  /**
   * A JupyterLab dialog re-reads its fields' validity on `input` events only; after a verdict
   * that came back from the server, one synthetic event tells it (ignored by this editor).
   */
  private _echoValidity(): void {
    if (!this.isAttached) {
      return;
    }
    this._echoing = true;
    try {
      this._checks.dispatchEvent(new Event('input', { bubbles: true }));
    } finally {
      this._echoing = false;
    }
  }

  /** The form's current values. */
  getValue(): ICellTagForm {
    return {
      role: this._role.value as CellRole,
      name: this._name.value.trim(),
      after: this._after.value
        .split(/[,;\s]+/)
        .map(s => s.trim())
        .filter(Boolean),
      cpu: this._cpu.value.trim(),
      memory: this._memory.value.trim(),
      gpu: this._gpu.value.trim(),
      retries: this._retries.value.trim(),
      timeout: this._timeout.value.trim(),
      cache: this._cache.checked,
      checks: items(this._checks.value, /[\n;]+/),
      drift:
        this._role.value === 'task'
          ? items(this._drift.value.replace(/\s*(<=?)\s*/g, '$1'), /[\s;]+/)
          : this._memberDrift
    };
  }

  /** A problem that makes the form unusable, or null. */
  validate(): string | null {
    const value = this.getValue();
    if (value.role === 'task' && !value.name) {
      return 'A task needs a name.';
    }
    return null;
  }

  /** The element to focus first. */
  get focusTarget(): HTMLElement {
    return this._role.value === 'task'
      ? this._name
      : this._role.value === 'metrics'
        ? this._checks
        : this._role;
  }

  private _sync(): void {
    const isTask = this._role.value === 'task';
    this._taskFields.classList.toggle('kiln-mod-hidden', !isTask);
    this._metricsFields.classList.toggle('kiln-mod-hidden', this._role.value !== 'metrics');
  }

  private _role: HTMLSelectElement;
  private _name: HTMLInputElement;
  private _after: HTMLInputElement;
  private _cpu: HTMLInputElement;
  private _memory: HTMLInputElement;
  private _gpu: HTMLInputElement;
  private _retries: HTMLInputElement;
  private _timeout: HTMLInputElement;
  private _cache: HTMLInputElement;
  private _drift: HTMLInputElement;
  private _memberDrift: string[];
  private _checks: HTMLTextAreaElement;
  private _taskFields: HTMLDivElement;
  private _metricsFields: HTMLDivElement;
  private _options: HTMLDetailsElement;
  private _summary: HTMLDivElement;
  private _messages = new Map<FieldKey, HTMLElement>();
  private _checker: ITagChecker | null;
  private _verdictChanged = new Signal<this, boolean>(this);
  private _errors = 0;
  private _asked = 0;
  private _timer = 0;
  private _echoing = false;
  private _touched = false;
}

/** The fields inside the folded options. */
const FOLDED: FieldKey[] = ['after', 'cpu', 'memory', 'gpu', 'retries', 'timeout', 'cache', 'drift'];
const FIELD_KEYS: FieldKey[] = [
  'name',
  'after',
  'cpu',
  'memory',
  'gpu',
  'retries',
  'timeout',
  'cache',
  'checks',
  'drift'
];

/** Write a form's tags into a cell's metadata (other tags are kept), as one undoable step (undo.ts). */
export function writeCellTags(cell: Cell, form: ICellTagForm): void {
  tagTransaction(cell.model.sharedModel.notebook, () => writeTags(cell, form));
}

/** The write itself; callers wrap it in `tagTransaction`. */
export function writeTags(cell: Cell, form: ICellTagForm): void {
  const current = (cell.model.getMetadata('tags') as string[] | undefined) ?? [];
  const tags = applyTagForm(current, form);
  noteTagEdit(cell.model, tags);
  if (tags.length === 0) {
    cell.model.deleteMetadata('tags');
  } else if (JSON.stringify(tags) !== JSON.stringify(current)) {
    cell.model.setMetadata('tags', tags);
  }
}

export function cellTags(cell: Cell): string[] {
  return [...((cell.model.getMetadata('tags') as string[] | undefined) ?? [])];
}
