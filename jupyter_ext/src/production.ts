/**
 * Production in the Pipeline panel: the notebook's owner and team (notebook metadata
 * `kiln.owner` / `kiln.team`, set in the open document so saving writes them), its alert
 * routes (the same ones `kiln alert add|list|remove` edit, through /kiln/alerts), and the
 * small renderers other sections call for cost (lineage card, run summary) and a schedule's
 * production version.
 */
import { requestKiln, postKiln } from './api';
import { el, formatBytes, linkButton } from './dom';
import { PipelineModel } from './model';
import { ICost, ISchedule, ITaskRecord, ITaskState } from './types';


interface IRoute {
  id: number;
  kind: 'email' | 'webhook' | 'apprise';
  target: string;
  events: string[];
  created_by: string | null;
}

interface IAlertsAnswer {
  routes: IRoute[];
  owner: string | null;
  team: string | null;
  budget: string | null;
}

const EVENTS = ['failed', 'check', 'drift', 'late', 'slow', 'recovered'];

/** "1.02 CPU-s · 0.17 GB-s · 17 B written" (the CLI's format_cost, shortened). */
export function formatCost(cost: ICost | null | undefined): string {
  if (!cost) {
    return '';
  }
  const parts = [`${(cost.cpu_s ?? 0).toFixed(2)} CPU-s`, `${(cost.mem_gb_s ?? 0).toPrecision(2)} GB-s`];
  if (cost.gpu_s) {
    parts.push(`${cost.gpu_s.toFixed(1)} GPU-s`);
  }
  parts.push(`${formatBytes(cost.bytes_written ?? 0)} written`);
  return parts.join(' · ');
}

/** The cost row of a task on its lineage card: what it used, or what a cache hit saved. */
export function costRow(record: ITaskRecord | undefined): HTMLElement[] {
  if (!record) {
    return [];
  }
  const row = el('div', 'kiln-LineageRun-row kiln-Cost');
  if (record.cost) {
    row.append(el('span', 'kiln-Fact-label', 'cost'), el('span', 'kiln-Cost-value', formatCost(record.cost)));
  } else if (record.cost_saved) {
    row.append(
      el('span', 'kiln-Fact-label', 'saved'),
      el('span', 'kiln-Cost-value kiln-mod-saved', `${formatCost(record.cost_saved)} (cache hit)`)
    );
  } else {
    return [];
  }
  row.title = 'CPU seconds on the worker, memory GB-seconds (average RSS × wall time), GPU seconds, bytes stored';
  return [row];
}

/** The run summary's cost line: the tasks' totals so far, and what cache hits saved. */
export function runCostLine(tasks: { [name: string]: ITaskState }): HTMLElement | null {
  const states = Object.values(tasks);
  const sum = (key: keyof ICost, pick: 'cost' | 'cost_saved'): number =>
    states.reduce((total, s) => total + Number(s[pick]?.[key] ?? 0), 0);
  const spent = states.some(s => s.cost);
  const saved = states.some(s => s.cost_saved);
  if (!spent && !saved) {
    return null;
  }
  const total = (pick: 'cost' | 'cost_saved'): ICost => ({
    cpu_s: sum('cpu_s', pick),
    mem_gb_s: sum('mem_gb_s', pick),
    gpu_s: sum('gpu_s', pick),
    bytes_written: sum('bytes_written', pick)
  });
  const line = el('div', 'kiln-Run-cost');
  line.append(el('span', 'kiln-Fact-label', 'cost'), el('span', 'kiln-Cost-value', spent ? formatCost(total('cost')) : 'nothing computed'));
  if (saved) {
    line.append(el('span', 'kiln-Cost-saved', `cache saved ${formatCost(total('cost_saved'))}`));
  }
  return line;
}

/** Which version a schedule runs: its promoted bundle, or the live notebook. */
export function scheduleVersion(schedule: ISchedule): HTMLElement {
  if (schedule.mode === 'promoted' && schedule.promoted_version) {
    const fact = el('span', 'kiln-Schedule-version kiln-mod-promoted', `runs promoted ${schedule.promoted_version.slice(0, 12)}`);
    fact.title = `Production runs the exported bundle ${schedule.promoted_version}; edits change nothing until the next kiln promote (kiln rollback goes back)`;
    return fact;
  }
  const fact = el('span', 'kiln-Schedule-version kiln-mod-live', 'runs the live notebook');
  fact.title = 'Every run takes the notebook as saved; kiln promote NOTEBOOK pins a version';
  return fact;
}

/** The Production section: owner, team, alert routes. */
export class ProductionSection {
  readonly node = el('div', 'kiln-Panel-section kiln-Production');

  update(model: PipelineModel | null): void {
    if (model !== this._model) {
      this._model = model;
      this._edited = false;
      this._answer = null;
      this._error = '';
      this._loaded = false;
      if (model) {
        void this._load(model);
      }
    }
    this._render();
  }

  private async _load(model: PipelineModel): Promise<void> {
    try {
      // The owner is the open document's metadata: read once the document has loaded.
      await model.panel.context.ready;
      this._answer = await requestKiln<IAlertsAnswer>(`alerts?path=${encodeURIComponent(model.path)}`);
      this._error = '';
    } catch (error) {
      this._error = (error as Error).message;
    }
    if (model === this._model) {
      this._loaded = true;
      this._render();
    }
  }

  private _metadata(): { owner: string; team: string } {
    const kiln = (this._model?.panel.model?.getMetadata('kiln') ?? {}) as { owner?: string; team?: string };
    return { owner: kiln.owner ?? '', team: kiln.team ?? '' };
  }

  private _saveOwner(owner: string, team: string): void {
    const notebook = this._model?.panel.model;
    if (!notebook) {
      return;
    }
    const kiln = { ...((notebook.getMetadata('kiln') ?? {}) as { [key: string]: unknown }) };
    for (const [key, value] of [['owner', owner.trim()], ['team', team.trim()]] as const) {
      if (value) {
        kiln[key] = value;
      } else {
        delete kiln[key];
      }
    }
    notebook.setMetadata('kiln', kiln);
  }

  private _render(): void {
    const section = this.node;
    section.replaceChildren();
    const model = this._model;
    section.hidden = !model;
    if (!model) {
      return;
    }
    section.append(el('h3', 'kiln-Panel-heading', 'Production'));
    if (!this._loaded) {
      // Not "No owner" before anything is known: that reads as a fact about the pipeline.
      section.append(el('div', 'kiln-Panel-empty kiln-Production-loading', 'Loading owner and alert routes…'));
      return;
    }
    const { owner, team } = this._metadata();
    const form = el('div', 'kiln-Owner');
    // The same inputs across renders: the routes arriving from the server re-render the
    // section, and must not wipe what the user is typing.
    const ownerInput = this._ownerInput;
    const teamInput = this._teamInput;
    ownerInput.placeholder = 'Owner (a person or on-call alias)';
    teamInput.placeholder = 'Team';
    if (!this._edited) {
      ownerInput.value = owner;
      teamInput.value = team;
    }
    const save = el('button', 'jp-Button jp-mod-styled kiln-Owner-save', 'Set owner');
    save.title = 'Writes kiln.owner and kiln.team into this notebook (save it to keep them); schedules need an owner or an alert route';
    save.addEventListener('click', () => {
      this._saveOwner(ownerInput.value, teamInput.value);
      this._edited = false;
      this._render();
    });
    form.append(el('span', 'kiln-Fact-label', 'owner'), ownerInput, teamInput, save);
    section.append(form);
    if (!owner) {
      section.append(el('div', 'kiln-Panel-empty kiln-Owner-missing', 'No owner: nobody is named when this pipeline breaks in production.'));
    }

    section.append(el('div', 'kiln-Production-subheading', 'Alert routes'));
    if (this._error) {
      section.append(el('div', 'kiln-Panel-error', this._error));
    }
    const list = el('ul', 'kiln-Routes');
    for (const route of this._answer?.routes ?? []) {
      const item = el('li', 'kiln-Route');
      item.dataset.route = String(route.id);
      item.append(
        el('span', 'kiln-Route-kind', route.kind),
        el('span', 'kiln-Route-target', route.target),
        el('span', 'kiln-Route-events', route.events.join(', ')),
        linkButton('kiln-Route-remove', 'Remove', 'Stop sending alerts to this route', () => {
          void this._remove(model, route.id);
        })
      );
      list.append(item);
    }
    if ((this._answer?.routes ?? []).length === 0 && this._answer) {
      section.append(el('div', 'kiln-Panel-empty', 'No routes: failures, late runs and recoveries reach nobody.'));
    }
    section.append(list, this._addForm(model));
  }

  private _addForm(model: PipelineModel): HTMLElement {
    const form = el('div', 'kiln-RouteForm');
    const kind = el('select', 'jp-mod-styled kiln-RouteForm-kind');
    for (const option of ['email', 'webhook', 'apprise']) {
      const item = el('option', '', option);
      item.value = option;
      kind.append(item);
    }
    const target = el('input', 'jp-mod-styled kiln-RouteForm-target');
    target.placeholder = 'ana@example.com, https://hooks.slack.com/… or ${SLACK_WEBHOOK_URL}';
    const events = el('input', 'jp-mod-styled kiln-RouteForm-events');
    events.placeholder = `events (default: all but slow): ${EVENTS.join(',')}`;
    const add = el('button', 'jp-Button jp-mod-styled kiln-RouteForm-add', 'Add route');
    const message = el('div', 'kiln-RouteForm-message');
    add.addEventListener('click', () => {
      void (async () => {
        try {
          await postKiln('alerts', {
            path: model.path,
            kind: kind.value,
            target: target.value,
            events: events.value || undefined
          });
          await this._load(model);
        } catch (error) {
          message.textContent = (error as Error).message;
          message.className = 'kiln-RouteForm-message kiln-Panel-error';
        }
      })();
    });
    form.append(kind, target, events, add, message);
    return form;
  }

  private async _remove(model: PipelineModel, id: number): Promise<void> {
    try {
      await requestKiln(`alerts/${id}?path=${encodeURIComponent(model.path)}`, { method: 'DELETE' });
    } catch (error) {
      this._error = (error as Error).message;
    }
    await this._load(model);
  }

  private _makeInput(className: string): HTMLInputElement {
    const input = el('input', `jp-mod-styled ${className}`);
    input.addEventListener('input', () => {
      this._edited = true;
    });
    return input;
  }

  private readonly _ownerInput = this._makeInput('kiln-Owner-name');
  private readonly _teamInput = this._makeInput('kiln-Owner-team');
  private _edited = false;
  private _model: PipelineModel | null = null;
  private _answer: IAlertsAnswer | null = null;
  private _error = '';
  private _loaded = false;
}
