/**
 * Reading and writing Kiln's cell tags (DESIGN.md, "Tag vocabulary") for the tag editor.
 *
 * Only the raw tag strings are handled here: what the tags *mean* for the pipeline is the
 * compiler's business (the UI shows its answer from /kiln/compile). nbformat forbids commas
 * inside a tag, so lists are written the comma-free way the compiler reads: one `after:NAME`
 * tag per upstream task, and `resources:cpu=2;memory=4GiB;gpu=1`. Monitoring (issue 14): the
 * cell tagged `metrics` (Kale: `pipeline-metrics`) holds one `check:`/`warn:` tag per
 * condition; a task's cells hold `drift:INPUT<LIMIT` tags.
 */

export type CellRole = 'member' | 'task' | 'setup' | 'parameters' | 'skip' | 'metrics';

export interface ICellTagForm {
  role: CellRole;
  name: string;
  after: string[];
  cpu: string;
  memory: string;
  gpu: string;
  retries: string;
  timeout: string;
  cache: boolean;
  /** The metrics cell's conditions, as tags: `check:accuracy>=0.8`, `warn:f1>=baseline-0.02`. */
  checks: string[];
  /** A task cell's drift limits, as tags: `drift:raw<0.2`. */
  drift: string[];
}

export const EMPTY_FORM: ICellTagForm = {
  role: 'member',
  name: '',
  after: [],
  cpu: '',
  memory: '',
  gpu: '',
  retries: '',
  timeout: '',
  cache: true,
  checks: [],
  drift: []
};

const TASK_PREFIXES = ['task:', 'step:', 'block:'];
const AFTER_PREFIXES = ['after:', 'prev:'];
const ROLE_TAGS: { [tag: string]: CellRole } = {
  setup: 'setup',
  imports: 'setup',
  functions: 'setup',
  parameters: 'parameters',
  'pipeline-parameters': 'parameters',
  skip: 'skip',
  metrics: 'metrics',
  'pipeline-metrics': 'metrics'
};
const POLICY_PREFIXES = ['resources:', 'retries:', 'timeout:', 'cache:'];
const CHECK_PREFIXES = ['check:', 'warn:'];
const DRIFT_PREFIX = 'drift:';

function valueAfter(tag: string): string {
  return tag.slice(tag.indexOf(':') + 1).trim();
}

function startsWithAny(tag: string, prefixes: string[]): boolean {
  const low = tag.toLowerCase();
  return prefixes.some(p => low.startsWith(p));
}

/** True for the tags the editor owns (and rewrites); every other tag is kept as it is. */
export function isEditorTag(tag: string): boolean {
  return (
    tag.toLowerCase() in ROLE_TAGS ||
    startsWithAny(tag, TASK_PREFIXES) ||
    startsWithAny(tag, AFTER_PREFIXES) ||
    startsWithAny(tag, POLICY_PREFIXES) ||
    startsWithAny(tag, CHECK_PREFIXES) ||
    startsWithAny(tag, [DRIFT_PREFIX])
  );
}

function splitList(text: string): string[] {
  return text
    .split(/[;,\s]+/)
    .map(s => s.trim())
    .filter(s => s.length > 0);
}

/** The editor's view of a cell's tags. */
export function readTagForm(tags: readonly string[]): ICellTagForm {
  const form: ICellTagForm = { ...EMPTY_FORM, after: [], checks: [], drift: [] };
  for (const tag of tags) {
    const low = tag.toLowerCase();
    if (low in ROLE_TAGS) {
      form.role = ROLE_TAGS[low];
    } else if (startsWithAny(tag, TASK_PREFIXES)) {
      form.role = 'task';
      form.name = valueAfter(tag);
    } else if (startsWithAny(tag, AFTER_PREFIXES)) {
      form.after.push(...splitList(valueAfter(tag)));
    } else if (low.startsWith('resources:')) {
      for (const part of splitList(valueAfter(tag))) {
        const [key, value] = part.split('=', 2);
        const k = (key || '').toLowerCase();
        if (k === 'cpu') {
          form.cpu = value ?? '';
        } else if (k === 'memory' || k === 'mem') {
          form.memory = value ?? '';
        } else if (k === 'gpu') {
          form.gpu = value ?? '';
        }
      }
    } else if (low.startsWith('retries:')) {
      form.retries = valueAfter(tag);
    } else if (low.startsWith('timeout:')) {
      form.timeout = valueAfter(tag);
    } else if (low.startsWith('cache:')) {
      form.cache = !['off', 'false'].includes(valueAfter(low));
    } else if (startsWithAny(tag, CHECK_PREFIXES)) {
      form.checks.push(tag);
    } else if (low.startsWith(DRIFT_PREFIX)) {
      form.drift.push(tag);
    }
  }
  return form;
}

function clean(text: string): string {
  // No commas (nbformat) and no spaces inside a tag value.
  return text.replace(/[,\s]+/g, '');
}

/**
 * One condition as the tag the compiler reads: `accuracy >= 0.8` -> `check:accuracy>=0.8`
 * (a line without `check:` or `warn:` is a check); `raw < 0.2` -> `drift:raw<0.2`. Whether it
 * means anything is the compiler's to say (the panel shows its message as you type).
 */
export function checkTag(text: string): string {
  const tag = clean(text);
  return !tag || startsWithAny(tag, CHECK_PREFIXES) ? tag : `check:${tag}`;
}

export function driftTag(text: string): string {
  const tag = clean(text);
  return !tag || tag.toLowerCase().startsWith(DRIFT_PREFIX) ? tag : `${DRIFT_PREFIX}${tag}`;
}

/** The Kiln tags a form stands for, in a fixed order. */
export function formTags(form: ICellTagForm): string[] {
  const drift = form.drift.map(driftTag).filter(Boolean);
  if (form.role === 'metrics') {
    return ['metrics', ...form.checks.map(checkTag).filter(Boolean)];
  }
  if (form.role === 'setup' || form.role === 'parameters' || form.role === 'skip') {
    return [form.role];
  }
  if (form.role !== 'task') {
    return drift; // a cell that continues a task may watch that task's inputs
  }
  const tags = [`task:${taskName(form.name)}`];
  for (const upstream of form.after.map(clean).filter(Boolean)) {
    tags.push(`after:${upstream}`);
  }
  const resources: string[] = [];
  if (clean(form.cpu)) {
    resources.push(`cpu=${clean(form.cpu)}`);
  }
  if (clean(form.memory)) {
    resources.push(`memory=${clean(form.memory)}`);
  }
  if (clean(form.gpu)) {
    resources.push(`gpu=${clean(form.gpu)}`);
  }
  if (resources.length > 0) {
    tags.push(`resources:${resources.join(';')}`);
  }
  if (clean(form.retries)) {
    tags.push(`retries:${clean(form.retries)}`);
  }
  if (clean(form.timeout)) {
    tags.push(`timeout:${clean(form.timeout)}`);
  }
  if (!form.cache) {
    tags.push('cache:off');
  }
  tags.push(...drift);
  return tags;
}

/** The one naming rule for task names (form, Split by Headings): snake_case. */
export function taskName(text: string): string {
  const trimmed = text.trim();
  return trimmed ? slugify(trimmed) : '';
}

/**
 * A cell's new tag list: its foreign tags kept in place, the editor's tags replaced. Policy
 * tags whose values the form did not change stay exactly as the user wrote them (two
 * `resources:` tags are not merged into one).
 */
export function applyTagForm(tags: readonly string[], form: ICellTagForm): string[] {
  const before = readTagForm(tags);
  const sameResources =
    before.cpu === form.cpu && before.memory === form.memory && before.gpu === form.gpu;
  // Kale's `pipeline-metrics` stays as written while the cell stays the metrics cell, so the
  // notebook still works in Kale.
  const kaleMetrics = form.role === 'metrics' && tags.some(t => t.toLowerCase() === 'pipeline-metrics');
  const keep = (tag: string) =>
    !isEditorTag(tag) ||
    (sameResources && form.role === 'task' && tag.toLowerCase().startsWith('resources:')) ||
    (kaleMetrics && tag.toLowerCase() === 'pipeline-metrics');
  const result = tags.filter(keep);
  const wanted = formTags(form).filter(
    tag =>
      !(sameResources && tag.toLowerCase().startsWith('resources:')) && !(kaleMetrics && tag === 'metrics')
  );
  for (const tag of wanted) {
    if (!result.includes(tag)) {
      result.push(tag);
    }
  }
  return result;
}

/** The text of the first Markdown heading in a cell's source, or null. */
export function firstHeading(markdown: string): string | null {
  for (const line of markdown.split('\n')) {
    const match = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (match && match[1].trim()) {
      return match[1].trim();
    }
  }
  return null;
}

/** A task name from a heading: lower case, words joined by `_`, valid as `task:NAME`. */
export function slugify(heading: string): string {
  let slug = heading
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2') // camelCase words are words too
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');
  if (!slug) {
    slug = 'task';
  }
  if (/^[0-9]/.test(slug)) {
    slug = `_${slug}`;
  }
  return slug.slice(0, 48).replace(/_+$/, '');
}
