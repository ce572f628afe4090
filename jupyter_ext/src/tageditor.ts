import { Cell } from '@jupyterlab/cells';
import { Widget } from '@lumino/widgets';

import { noteTagEdit } from './tagguard';
import { CellRole, ICellTagForm, applyTagForm, readTagForm } from './tags';

const ROLES: Array<[CellRole, string]> = [
  ['member', 'No tag: part of the task above (setup before the first task)'],
  ['task', 'Starts a task'],
  ['setup', 'Setup (imports, functions)'],
  ['parameters', 'Parameters'],
  ['skip', 'Skip (exploration only)']
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

/**
 * A form over one cell's Kiln tags: its role (task / setup / parameters / skip), the task's
 * name, `after:` upstream tasks, resources, retries, timeout and cache policy.
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
      !form.cache;
    const summary = document.createElement('summary');
    summary.textContent = 'After, resources, retries, timeout, cache';
    options.append(
      summary,
      field('After', this._after, 'after:NAME: run after these tasks, besides data flow'),
      resources,
      policies
    );

    this._taskFields = document.createElement('div');
    this._taskFields.className = 'kiln-TagEditor-task';
    this._taskFields.append(field('Task name', this._name, 'task:NAME'), options, names);
    this.node.append(field('This cell', this._role), this._taskFields);
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
      cache: this._cache.checked
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
    return this._role.value === 'task' ? this._name : this._role;
  }

  private _sync(): void {
    const isTask = this._role.value === 'task';
    this._taskFields.classList.toggle('kiln-mod-hidden', !isTask);
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
  private _taskFields: HTMLDivElement;
}

/** Write a form's tags into a cell's metadata (other tags are kept). */
export function writeCellTags(cell: Cell, form: ICellTagForm): void {
  const current = (cell.model.getMetadata('tags') as string[] | undefined) ?? [];
  const tags = applyTagForm(current, form);
  noteTagEdit(cell.model, tags);
  // One shared-model transaction: collaborators and the undo history see one change.
  cell.model.sharedModel.transact(() => {
    if (tags.length === 0) {
      cell.model.deleteMetadata('tags');
    } else if (JSON.stringify(tags) !== JSON.stringify(current)) {
      cell.model.setMetadata('tags', tags);
    }
  });
}

export function cellTags(cell: Cell): string[] {
  return [...((cell.model.getMetadata('tags') as string[] | undefined) ?? [])];
}
