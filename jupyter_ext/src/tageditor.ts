import { Cell } from '@jupyterlab/cells';
import { Widget } from '@lumino/widgets';

import { noteTagEdit } from './tagguard';
import { CellRole, ICellTagForm, applyTagForm, readTagForm } from './tags';
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
  constructor(tags: readonly string[], taskNames: readonly string[] = []) {
    super();
    this.addClass('kiln-TagEditor');
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
    options.append(
      summary,
      field('After', this._after, 'after:NAME: run after these tasks, besides data flow'),
      resources,
      policies,
      field(
        'Drift limits',
        this._drift,
        'drift:INPUT<LIMIT: a DataFrame this task binds, or a CSV/Parquet file it reads, drifts ' +
          'when a column scores LIMIT or more against the baseline run (0..1; default 0.2)'
      )
    );

    this._taskFields = document.createElement('div');
    this._taskFields.className = 'kiln-TagEditor-task';
    this._taskFields.append(field('Task name', this._name, 'task:NAME'), options, names);
    this._metricsFields = document.createElement('div');
    this._metricsFields.className = 'kiln-TagEditor-task kiln-TagEditor-metrics';
    this._metricsFields.append(
      field(
        'Checks',
        this._checks,
        'check:METRIC OP VALUE fails the run; warn: flags it. OP: < <= > >= ==; VALUE: a number ' +
          'or baseline±x (the baseline run: pinned, else the last succeeded one)'
      )
    );
    this.node.append(field('This cell', this._role), this._taskFields, this._metricsFields);
    this._sync();
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
}

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
