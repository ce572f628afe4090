import { formatDuration } from './dag';
import { svg } from './dom';
import { ILineageRun, IRunEvent, ITaskSpec } from './types';

const ROW_H = 24;
const BAR_H = 16;
const LABEL_W = 170;
const AXIS_H = 22;

/** One attempt of one task on the time axis (seconds since the run started). */
export interface ITimelineBar {
  task: string;
  attempt: number;
  start: number;
  end: number;
  status: string;
  /** Still running: the bar grows until its next event. */
  open: boolean;
  note?: string;
}

/**
 * Bars from a live run's events (the server stamps each with `at`): an attempt starts at its
 * `running` event and ends at the task's next `retrying`, `done`, `failed` or `cancelled`.
 * A cache hit is a thin mark at the moment it was taken.
 */
export function barsFromEvents(events: IRunEvent[], now: number): { bars: ITimelineBar[]; t0: number } {
  const started = events.find(e => e.type === 'run');
  const t0 = started?.at ?? events[0]?.at ?? now;
  const bars: ITimelineBar[] = [];
  const open = new Map<string, ITimelineBar>();
  for (const event of events) {
    if (event.type !== 'task' || !event.task) {
      continue;
    }
    const at = event.at - t0;
    const current = open.get(event.task);
    if (event.status === 'running') {
      if (current) {
        current.end = at;
        current.open = false;
      }
      const bar: ITimelineBar = {
        task: event.task,
        attempt: event.attempt ?? 1,
        start: at,
        end: at,
        status: 'running',
        open: true
      };
      bars.push(bar);
      open.set(event.task, bar);
    } else if (['retrying', 'done', 'failed', 'cancelled'].includes(event.status)) {
      if (current) {
        current.end = at;
        current.open = false;
        current.status = event.status === 'retrying' ? 'retried' : event.status;
        current.note = event.reason;
        open.delete(event.task);
      }
    } else if (event.status === 'cached') {
      bars.push({ task: event.task, attempt: 0, start: at, end: at, status: 'cached', open: false });
    }
  }
  for (const bar of open.values()) {
    bar.end = Math.max(bar.start, now - t0);
  }
  return { bars, t0 };
}

/**
 * Bars of a recorded run (lineage database): the attempts of each task laid end to end from
 * its start, the last one ending when the task ended (the backoff between attempts is not
 * recorded, so gaps before the last attempt are approximate).
 */
export function barsFromRecord(run: ILineageRun): ITimelineBar[] {
  const t0 = run.started_at ? Date.parse(run.started_at) / 1000 : 0;
  const runEnd = run.ended_at ? Date.parse(run.ended_at) / 1000 - t0 : null;
  const bars: ITimelineBar[] = [];
  for (const [name, task] of Object.entries(run.tasks ?? {})) {
    const start = task.started_at ? Date.parse(task.started_at) / 1000 - t0 : null;
    // A task stopped by Cancel has no end of its own: it ended with the run.
    const end = task.ended_at ? Date.parse(task.ended_at) / 1000 - t0 : runEnd;
    if (task.cached) {
      bars.push({ task: name, attempt: 0, start: end ?? start ?? 0, end: end ?? start ?? 0, status: 'cached', open: false });
      continue;
    }
    if (start === null) {
      continue;
    }
    const log = task.attempt_log ?? [];
    let at = start;
    log.forEach((attempt, i) => {
      const last = i === log.length - 1;
      const length = attempt.duration ?? 0;
      const barEnd = last && end !== null ? end : at + length;
      const barStart = last && end !== null ? Math.max(at, end - length) : at;
      bars.push({
        task: name,
        attempt: attempt.attempt,
        start: barStart,
        end: barEnd,
        status: last ? task.status : 'retried',
        open: false,
        note: attempt.retry ?? attempt.error
      });
      at = barEnd;
    });
    if (log.length === 0 && end !== null) {
      bars.push({ task: name, attempt: 1, start, end, status: task.status, open: false });
    }
  }
  return bars;
}

function niceStep(span: number): number {
  const raw = span / 8;
  const power = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-3))));
  for (const m of [1, 2, 5, 10]) {
    if (raw <= m * power) {
      return m * power;
    }
  }
  return 10 * power;
}

/** The timeline as SVG: one row per task (spec order), one bar per attempt, a time axis. */
export function renderTimeline(tasks: ITaskSpec[], bars: ITimelineBar[], width: number): SVGSVGElement {
  const names = tasks.map(t => t.name);
  for (const bar of bars) {
    if (!names.includes(bar.task)) {
      names.push(bar.task);
    }
  }
  const span = Math.max(1, ...bars.map(b => b.end));
  const plotW = Math.max(200, width - LABEL_W - 16);
  const scale = plotW / span;
  const height = AXIS_H + names.length * ROW_H + 6;
  const root = svg('svg', { class: 'kiln-Timeline', width: LABEL_W + plotW + 16, height, role: 'img' });
  root.setAttribute('aria-label', `Run timeline: ${bars.length} attempts over ${formatDuration(span)}`);
  const step = niceStep(span);
  for (let t = 0; t <= span + 1e-9; t += step) {
    const x = LABEL_W + t * scale;
    root.append(svg('line', { x1: x, x2: x, y1: AXIS_H - 4, y2: height, class: 'kiln-Timeline-grid' }));
    const label = svg('text', { x, y: AXIS_H - 8, 'text-anchor': 'middle', class: 'kiln-Timeline-tick' });
    label.textContent = `${Number(t.toFixed(2))} s`;
    root.append(label);
  }
  names.forEach((name, row) => {
    const y = AXIS_H + row * ROW_H;
    const label = svg('text', { x: LABEL_W - 8, y: y + ROW_H / 2 + 4, 'text-anchor': 'end', class: 'kiln-Timeline-label' });
    label.textContent = name;
    root.append(label);
  });
  for (const bar of bars) {
    const row = names.indexOf(bar.task);
    const y = AXIS_H + row * ROW_H + (ROW_H - BAR_H) / 2;
    const x = LABEL_W + bar.start * scale;
    const w = Math.max(bar.status === 'cached' ? 3 : 2, (bar.end - bar.start) * scale);
    const group = svg('g', {
      class: `kiln-Timeline-bar kiln-mod-status-${bar.status}${bar.open ? ' kiln-mod-open' : ''}`,
      'data-task': bar.task,
      'data-attempt': bar.attempt,
      'data-status': bar.status
    });
    const title = svg('title');
    title.textContent =
      bar.status === 'cached'
        ? `${bar.task}: from cache`
        : `${bar.task}, attempt ${bar.attempt}: ${bar.status}${bar.open ? ' (running)' : ''}, ` +
          `${formatDuration(bar.end - bar.start)} from ${formatDuration(bar.start)}${bar.note ? ` — ${bar.note}` : ''}`;
    group.append(title, svg('rect', { x, y, width: w, height: BAR_H, rx: 3 }));
    if (bar.attempt > 1 && w > 18) {
      const text = svg('text', { x: x + 4, y: y + BAR_H - 4, class: 'kiln-Timeline-attempt' });
      text.textContent = `#${bar.attempt}`;
      group.append(text);
    }
    root.append(group);
  }
  return root;
}
