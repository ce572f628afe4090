import { Dialog, showDialog } from '@jupyterlab/apputils';
import { CommandRegistry } from '@lumino/commands';
import cronstrue from 'cronstrue';

import { postKiln, requestKiln } from './api';
import { el, linkButton, relativeTime, showValue } from './dom';
import { scheduleVersion } from './production';
import { PipelineModel } from './model';
import { ISchedule, ISchedulesAnswer, IScheduleRun } from './types';

const POLL_MS = 3000;
/** Runs may come from elsewhere (`kiln scheduler`): refresh this often while it is visible. */
const IDLE_POLL_MS = 10000;

/** "At 06:00 AM, Monday through Friday" for "0 6 * * 1-5"; the raw text when cronstrue cannot. */
export function cronText(cron: string): string {
  // Kiln (croniter) puts seconds last in a 6-field cron; cronstrue reads them first.
  const fields = cron.trim().split(/\s+/);
  const text = fields.length === 6 ? [fields[5], ...fields.slice(0, 5)].join(' ') : cron;
  try {
    return cronstrue.toString(text, { use24HourTimeFormat: true, verbose: false });
  } catch {
    return cron;
  }
}

/**
 * "n=3, name=x" pieces → the text of each value. The server reads them as `kiln schedule add -p`
 * does (the default's type, else YAML), so "1.10" stays text where the default is text.
 */
export function parseParameters(text: string): { [name: string]: string } {
  const parameters: { [name: string]: string } = {};
  for (const piece of text.split(/[\n,]/)) {
    const item = piece.trim();
    if (!item) {
      continue;
    }
    const eq = item.indexOf('=');
    if (eq <= 0) {
      throw new Error(`parameter "${item}": write name=value`);
    }
    parameters[item.slice(0, eq).trim()] = item.slice(eq + 1).trim();
  }
  return parameters;
}

function field(label: string, input: HTMLElement, hint = ''): HTMLElement {
  const row = el('label', 'kiln-Form-field');
  row.append(el('span', 'kiln-Form-label', label), input);
  if (hint) {
    row.append(el('span', 'kiln-Form-hint', hint));
  }
  return row;
}

function input(name: string, value: string, placeholder = ''): HTMLInputElement {
  const node = el('input', 'jp-mod-styled kiln-Form-input');
  node.name = name;
  node.value = value;
  node.placeholder = placeholder;
  node.spellcheck = false;
  return node;
}

function select(name: string, options: [string, string][]): HTMLSelectElement {
  const node = el('select', 'jp-mod-styled kiln-Form-input');
  node.name = name;
  for (const [value, label] of options) {
    const option = el('option', '', label);
    option.value = value;
    node.append(option);
  }
  return node;
}

/**
 * The notebook's schedules (stored in its lineage database): next due time, state and last
 * runs; pause/resume, remove, open a scheduled run's output notebook; and a form that creates
 * one (cron, time zone, parameters, engine). Polls while a server scheduler serves them.
 */
export class SchedulesSection {
  readonly node = el('div', 'kiln-Panel-section kiln-Schedules');

  constructor(private readonly _commands: CommandRegistry) {
    this._list = el('div', 'kiln-Schedules-list');
    this._form = this._buildForm();
    this._form.hidden = true;
    const heading = el('h3', 'kiln-Panel-heading', 'Schedules');
    this._newButton = el('button', 'jp-Button jp-mod-styled kiln-Panel-button kiln-Schedules-new', 'New schedule…');
    this._newButton.addEventListener('click', () => this.showForm());
    this._status = el('div', 'kiln-Schedules-scheduler');
    this.node.append(heading, this._list, this._status, this._newButton, this._form);
  }

  update(model: PipelineModel | null): void {
    if (model === this._model) {
      return;
    }
    this._model = model;
    this._answer = null;
    this._form.hidden = true;
    this._newButton.hidden = false;
    this._message.textContent = '';
    this._list.replaceChildren();
    this._status.replaceChildren();
    void this.refresh();
  }

  /** Open the creation form, prefilled for the current notebook. */
  showForm(): void {
    const model = this._model;
    if (!model) {
      return;
    }
    const stem = model.path.split('/').pop()?.replace(/\.ipynb$/, '') ?? 'pipeline';
    const taken = new Set((this._answer?.schedules ?? []).map(s => s.name));
    let name = stem.replace(/[^A-Za-z0-9_.-]/g, '-');
    for (let i = 2; taken.has(name); i++) {
      name = `${stem}-${i}`;
    }
    this._inputs.name.value = name;
    const defaults = model.compileResult?.spec?.parameters ?? {};
    this._inputs.parameters.placeholder = Object.entries(defaults)
      .map(([k, v]) => `${k}=${showValue(v)}`)
      .join(', ') || 'name=value, …';
    this._form.hidden = false;
    this._newButton.hidden = true;
    this._inputs.cron.focus();
  }

  async refresh(): Promise<void> {
    const model = this._model;
    this._stopPolling();
    if (!model) {
      this._list.replaceChildren(el('div', 'kiln-Panel-empty', 'No notebook.'));
      return;
    }
    const request = ++this._request;
    try {
      const answer = await requestKiln<ISchedulesAnswer>(`schedules?${this._query(model).toString()}`);
      if (request !== this._request || model !== this._model) {
        return;
      }
      this._answer = answer;
      this._render(model, answer);
      // Poll with no schedule too: one added by `kiln schedule add` appears without a reload.
      const busy = answer.scheduler.serving && answer.schedules.some(s => !s.paused);
      this._timer = window.setTimeout(() => this._refreshIfVisible(), busy ? POLL_MS : IDLE_POLL_MS);
    } catch (error) {
      if (request === this._request) {
        this._list.replaceChildren(el('div', 'kiln-Panel-error', (error as Error).message));
      }
    }
  }

  /** Poll only while the section is on screen (the panel open); otherwise check again later. */
  private _refreshIfVisible(): void {
    if (this._list.isConnected && this._list.offsetParent !== null) {
      void this.refresh();
    } else {
      this._timer = window.setTimeout(() => this._refreshIfVisible(), IDLE_POLL_MS);
    }
  }

  dispose(): void {
    this._stopPolling();
    this._model = null;
  }

  private _query(model: PipelineModel): URLSearchParams {
    const query = new URLSearchParams({ path: model.path });
    if (model.settings.lineageUrl) {
      query.set('lineage_db', model.settings.lineageUrl);
    }
    return query;
  }

  private _stopPolling(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _render(model: PipelineModel, answer: ISchedulesAnswer): void {
    this._list.replaceChildren();
    if (answer.schedules.length === 0) {
      this._list.append(el('div', 'kiln-Panel-empty', 'No schedules for this notebook.'));
    }
    for (const schedule of answer.schedules) {
      this._list.append(this._scheduleItem(model, schedule));
    }
    this._status.replaceChildren();
    if (answer.schedules.length > 0 && !answer.scheduler.serving) {
      this._status.textContent = answer.scheduler.enabled
        ? 'The Jupyter server’s scheduler is starting.'
        : 'Due runs need a scheduler: run `kiln scheduler` beside the notebook, or start Jupyter with c.KilnExtension.run_scheduler = True (or KILN_RUN_SCHEDULER=1).';
    } else if (answer.scheduler.serving) {
      this._status.textContent = 'This Jupyter server runs due schedules.';
    }
  }

  private _scheduleItem(model: PipelineModel, schedule: ISchedule): HTMLElement {
    const item = el('div', `kiln-Schedule kiln-mod-${schedule.state}`);
    item.dataset.schedule = schedule.name;
    const head = el('div', 'kiln-Schedule-head');
    head.append(
      el('span', 'kiln-Schedule-name', schedule.name),
      el('span', 'kiln-Schedule-state', schedule.state),
      el('span', 'kiln-Schedule-cron', `${cronText(schedule.cron)} (${schedule.timezone})`)
    );
    head.lastElementChild?.setAttribute('title', `cron: ${schedule.cron}`);
    item.append(head);
    const facts = el('div', 'kiln-Schedule-facts');
    const parameters = Object.entries(schedule.parameters)
      .map(([k, v]) => `${k}=${showValue(v)}`)
      .join('  ');
    facts.append(el('span', 'kiln-Schedule-engine', `engine ${schedule.engine}`), scheduleVersion(schedule));
    if (!schedule.paused) {
      const next = el('span', 'kiln-Schedule-next', `next ${relativeTime(schedule.next_due_at)}`);
      next.title = new Date(schedule.next_due_at).toLocaleString();
      facts.append(next);
    }
    if (parameters) {
      facts.append(el('span', 'kiln-Schedule-params', parameters));
    }
    item.append(facts);

    const actions = el('div', 'kiln-Schedule-actions');
    const toggle = schedule.paused ? 'resume' : 'pause';
    actions.append(
      linkButton(`kiln-Schedule-${toggle}`, schedule.paused ? 'Resume' : 'Pause', `${toggle} this schedule`, () => {
        void this._act(model, `schedules/${schedule.name}/${toggle}`, 'POST');
      }),
      linkButton('kiln-Schedule-remove', 'Remove', 'Delete this schedule and its run history', () => {
        void showDialog({
          title: `Remove schedule ${schedule.name}?`,
          body: `It stops running (${cronText(schedule.cron)}) and its record of ${schedule.last_runs.length ? 'past runs' : 'runs'} is deleted from the lineage database. Output notebooks already written stay on disk.`,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
        }).then(answer => {
          if (answer.button.accept) {
            void this._act(model, `schedules/${schedule.name}`, 'DELETE');
          }
        });
      })
    );
    item.append(actions);

    if (schedule.last_runs.length) {
      const runs = el('ul', 'kiln-Schedule-runs');
      for (const run of schedule.last_runs) {
        runs.append(this._runItem(model, schedule, run));
      }
      item.append(runs);
    }
    return item;
  }

  private _runItem(model: PipelineModel, schedule: ISchedule, run: IScheduleRun): HTMLElement {
    const row = el('li', `kiln-ScheduleRun kiln-mod-status-${run.status}`);
    row.dataset.run = String(run.id);
    row.append(
      el('span', 'kiln-ScheduleRun-status', run.status),
      el('span', 'kiln-ScheduleRun-due', relativeTime(run.due_at))
    );
    row.title = `due ${new Date(run.due_at).toLocaleString()}${run.reason ? `: ${run.reason}` : ''}${run.error ? `\n${run.error}` : ''}`;
    if (run.has_output) {
      row.append(
        linkButton('kiln-ScheduleRun-output', 'output notebook', 'Open the notebook this scheduled run wrote', () => {
          void this._openOutput(model, schedule.name, run.id);
        })
      );
    }
    return row;
  }

  private async _act(model: PipelineModel, endpoint: string, method: string): Promise<void> {
    try {
      await requestKiln(`${endpoint}?${this._query(model).toString()}`, { method, body: method === 'POST' ? '{}' : undefined });
    } catch (error) {
      this._message.textContent = (error as Error).message;
    }
    await this.refresh();
  }

  private async _openOutput(model: PipelineModel, schedule: string, run: number): Promise<void> {
    try {
      const { path } = await postKiln<{ path: string }>('outputs', {
        path: model.path,
        schedule,
        run,
        lineage_db: model.settings.lineageUrl || undefined
      });
      await this._commands.execute('kiln:open-output', { path }); // read-only viewer
    } catch (error) {
      this._message.textContent = (error as Error).message;
    }
  }

  private _buildForm(): HTMLFormElement {
    const form = el('form', 'kiln-Form kiln-Schedules-form');
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    this._inputs = {
      name: input('name', ''),
      cron: input('cron', '0 6 * * *', 'minute hour day month weekday'),
      timezone: input('timezone', zone, 'UTC'),
      parameters: input('parameters', '', 'name=value, …'),
      engine: select('engine', [
        ['kiln', 'kiln (pipeline on Dask, cached)'],
        ['papermill', 'papermill (plain kernel)']
      ])
    };
    form.append(
      field('Name', this._inputs.name),
      field('Cron', this._inputs.cron, '5 fields, or 6 with seconds last'),
      field('Time zone', this._inputs.timezone),
      field('Parameters', this._inputs.parameters),
      field('Engine', this._inputs.engine)
    );
    const buttons = el('div', 'kiln-Form-buttons');
    const create = el('button', 'jp-Button jp-mod-styled jp-mod-accept kiln-Schedules-create', 'Create schedule');
    create.type = 'submit';
    const cancel = el('button', 'jp-Button jp-mod-styled jp-mod-reject', 'Cancel');
    cancel.type = 'button';
    cancel.addEventListener('click', () => {
      form.hidden = true;
      this._newButton.hidden = false;
      this._message.textContent = '';
    });
    buttons.append(create, cancel);
    this._message = el('div', 'kiln-Panel-error kiln-Schedules-message');
    form.append(buttons, this._message);
    form.addEventListener('submit', event => {
      event.preventDefault();
      void this._create();
    });
    return form;
  }

  private async _create(): Promise<void> {
    const model = this._model;
    if (!model) {
      return;
    }
    this._message.textContent = '';
    let parameterTexts: { [name: string]: string };
    try {
      parameterTexts = parseParameters(this._inputs.parameters.value);
    } catch (error) {
      this._message.textContent = (error as Error).message;
      return;
    }
    try {
      if (model.panel.context.model.dirty) {
        await model.panel.context.save(); // the scheduler runs the saved notebook
      }
      await postKiln<ISchedule>('schedules', {
        path: model.path,
        name: this._inputs.name.value.trim() || undefined,
        cron: this._inputs.cron.value.trim(),
        timezone: this._inputs.timezone.value.trim() || undefined,
        parameter_texts: parameterTexts,
        engine: this._inputs.engine.value,
        lineage_db: model.settings.lineageUrl || undefined
      });
    } catch (error) {
      this._message.textContent = (error as Error).message;
      return;
    }
    this._form.hidden = true;
    this._newButton.hidden = false;
    await this.refresh();
  }

  private _model: PipelineModel | null = null;
  private _answer: ISchedulesAnswer | null = null;
  private _request = 0;
  private _timer: number | null = null;
  private _list: HTMLDivElement;
  private _status: HTMLDivElement;
  private _form: HTMLFormElement;
  private _newButton: HTMLButtonElement;
  private _message!: HTMLDivElement;
  private _inputs!: {
    name: HTMLInputElement;
    cron: HTMLInputElement;
    timezone: HTMLInputElement;
    parameters: HTMLInputElement;
    engine: HTMLSelectElement;
  };
}
