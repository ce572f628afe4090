/**
 * Reading and writing Kiln's cell tags (DESIGN.md, "Tag vocabulary") for the tag editor.
 *
 * Only the raw tag strings are handled here: what the tags *mean* for the pipeline is the
 * compiler's business (the UI shows its answer from /kiln/compile). nbformat forbids commas
 * inside a tag, so lists are written the comma-free way the compiler reads: one `after:NAME`
 * tag per upstream task, and `resources:cpu=2;memory=4GiB;gpu=1`.
 */

export type CellRole = 'member' | 'task' | 'setup' | 'parameters' | 'skip';

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
  cache: true
};

const TASK_PREFIXES = ['task:', 'step:', 'block:'];
const AFTER_PREFIXES = ['after:', 'prev:'];
const ROLE_TAGS: { [tag: string]: CellRole } = {
  setup: 'setup',
  imports: 'setup',
  functions: 'setup',
  parameters: 'parameters',
  'pipeline-parameters': 'parameters',
  skip: 'skip'
};
const POLICY_PREFIXES = ['resources:', 'retries:', 'timeout:', 'cache:'];

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
    startsWithAny(tag, POLICY_PREFIXES)
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
  const form: ICellTagForm = { ...EMPTY_FORM, after: [] };
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
    }
  }
  return form;
}

function clean(text: string): string {
  // No commas (nbformat) and no spaces inside a tag value.
  return text.replace(/[,\s]+/g, '');
}

/** The Kiln tags a form stands for, in a fixed order. */
export function formTags(form: ICellTagForm): string[] {
  if (form.role === 'setup' || form.role === 'parameters' || form.role === 'skip') {
    return [form.role];
  }
  if (form.role !== 'task') {
    return [];
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
  const keep = (tag: string) =>
    !isEditorTag(tag) || (sameResources && form.role === 'task' && tag.toLowerCase().startsWith('resources:'));
  const result = tags.filter(keep);
  const wanted = formTags(form).filter(
    tag => !(sameResources && tag.toLowerCase().startsWith('resources:'))
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
