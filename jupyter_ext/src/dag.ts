import * as dagre from '@dagrejs/dagre';

import { svg } from './dom';
import { PipelineModel } from './model';
import { ITaskSpec, ITaskState } from './types';

const CHAR_W = 7.2;
const NODE_H = 44;
const LABEL_CHAR_W = 6;

export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || seconds === null) {
    return '';
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

/** "done · 1.2 s", "running", "cached" — what a task's badge and node say about its run. */
export function statusText(state: ITaskState | null): string {
  if (!state) {
    return '';
  }
  const label = state.status.replace('_', ' ');
  const duration = formatDuration(state.duration);
  // A cache hit's duration is the lookup, not the task: leave it out.
  const shown = !['running', 'cached', 'waiting'].includes(state.status);
  return duration && shown ? `${label} · ${duration}` : label;
}

function taskSubtitle(task: ITaskSpec, state: ITaskState | null): string {
  if (state) {
    return statusText(state);
  }
  const cells = task.code.map(c => c.cell_index);
  const where =
    cells.length === 1 ? `cell ${cells[0]}` : `cells ${cells[0]}–${cells[cells.length - 1]}`;
  const extras: string[] = [];
  if (task.resources.gpu) {
    extras.push(`${task.resources.gpu} GPU`);
  }
  if (task.resources.cpu) {
    extras.push(`${task.resources.cpu} CPU`);
  }
  if (!task.cache) {
    extras.push('no cache');
  }
  return [where, ...extras].join(' · ');
}

/**
 * The pipeline's DAG as SVG, laid out by dagre (top to bottom). Nodes are the tasks, coloured
 * like their cells' badges; edges carry the names that flow along them (`after` edges, with
 * no data, are dashed).
 */
/**
 * The task under the last right-click on a graph, for the context menu's commands
 * (JupyterLab's contextMenuHitTest only looks at HTML elements, not SVG).
 */
export const contextTarget: { path: string | null; task: string | null } = { path: null, task: null };

export interface IDagOptions {
  /** The side panel's overview: names only, no edge labels, smaller boxes. */
  compact?: boolean;
  /**
   * The width / height of the space the graph goes in: both directions (top-down, left-right)
   * are laid out and the one that fits it at the larger scale is drawn.
   */
  aspect?: number;
}

export function renderDag(
  model: PipelineModel,
  activeTask: string | null,
  onTask: (task: ITaskSpec) => void,
  options: IDagOptions = {}
): SVGSVGElement | null {
  // While the notebook does not compile, the last graph that did, greyed (model.graphStale).
  const tasks = model.graphTasks;
  const compact = options.compact ?? false;
  const nodeH = compact ? 28 : NODE_H;
  if (tasks.length === 0) {
    return null;
  }
  const layout = (rankdir: string) => {
  const graph = new dagre.graphlib.Graph({ multigraph: false });
  graph.setGraph(
    compact
      ? { rankdir, nodesep: 14, ranksep: 26, marginx: 4, marginy: 4 }
      : { rankdir, nodesep: 28, ranksep: 48, marginx: 16, marginy: 16 }
  );
  graph.setDefaultEdgeLabel(() => ({}));
  for (const task of tasks) {
    const subtitle = compact ? '' : taskSubtitle(task, model.taskState(task.name));
    const width = compact
      ? Math.max(60, 24 + CHAR_W * task.name.length)
      : Math.max(110, 30 + CHAR_W * 1.1 * Math.max(task.name.length, subtitle.length * 0.85));
    graph.setNode(task.name, { width, height: nodeH });
  }
  for (const task of tasks) {
    for (const upstream of task.upstream) {
      const names = Object.entries(task.inputs)
        .filter(([, producer]) => producer === upstream)
        .map(([name]) => name);
      let label = compact ? '' : names.join(', ');
      if (label.length > 24) {
        label = `${label.slice(0, 22)}…`;
      }
      graph.setEdge(upstream, task.name, {
        label,
        width: label ? LABEL_CHAR_W * label.length + 6 : 0,
        height: label ? 14 : 0,
        labelpos: 'c',
        names
      });
    }
  }
  dagre.layout(graph);
  return graph;
  };
  let graph = layout('TB');
  if (options.aspect) {
    const fits = (g: dagre.graphlib.Graph) => {
      const { width = 1, height = 1 } = g.graph();
      return Math.min(options.aspect! / width, 1 / height);
    };
    const across = layout('LR');
    if (fits(across) > fits(graph) * 1.05) {
      graph = across;
    }
  }
  const size = graph.graph();
  const width = Math.ceil(size.width ?? 200);
  const height = Math.ceil(size.height ?? 100);

  const root = svg('svg', {
    class: `kiln-Dag${compact ? ' kiln-mod-compact' : ''}${model.graphStale ? ' kiln-mod-stale' : ''}`,
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'img',
    'aria-label': `Pipeline ${model.compileResult?.spec?.name ?? ''}: ${tasks.length} tasks`
  });
  if (compact) {
    root.style.maxWidth = '100%';
    root.style.height = 'auto';
  }
  const defs = svg('defs');
  const marker = svg('marker', {
    id: 'kiln-arrow',
    viewBox: '0 0 10 10',
    refX: 9,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: 'auto-start-reverse'
  });
  marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'kiln-Dag-arrow' }));
  defs.append(marker);
  root.append(defs);

  for (const edge of graph.edges()) {
    const data = graph.edge(edge) as dagre.GraphEdge & { label?: string; names?: string[] };
    const points = data.points ?? [];
    if (points.length === 0) {
      continue;
    }
    let d = `M ${points[0].x} ${points[0].y}`;
    if (points.length === 2) {
      d += ` L ${points[1].x} ${points[1].y}`;
    } else {
      for (let i = 1; i < points.length - 1; i++) {
        const mid = {
          x: (points[i].x + points[i + 1].x) / 2,
          y: (points[i].y + points[i + 1].y) / 2
        };
        const end = i === points.length - 2 ? points[i + 1] : mid;
        d += ` Q ${points[i].x} ${points[i].y} ${end.x} ${end.y}`;
      }
    }
    const group = svg('g', {
      class: `kiln-Dag-edge${data.names && data.names.length ? '' : ' kiln-mod-after'}`,
      'data-from': edge.v,
      'data-to': edge.w
    });
    const title = svg('title');
    title.textContent = data.names?.length
      ? `${edge.v} → ${edge.w}: ${data.names.join(', ')}`
      : `${edge.v} → ${edge.w} (after)`;
    group.append(title, svg('path', { d, 'marker-end': 'url(#kiln-arrow)' }));
    if (data.label && data.x !== undefined && data.y !== undefined) {
      const text = svg('text', { x: data.x, y: data.y + 4, 'text-anchor': 'middle' });
      text.textContent = data.label;
      group.append(text);
    }
    root.append(group);
  }

  for (const task of tasks) {
    const node = graph.node(task.name);
    const state = model.taskState(task.name);
    const x = node.x - node.width / 2;
    const y = node.y - node.height / 2;
    const color = model.taskColor(task.name);
    const status = state ? state.status : 'none';
    const group = svg('g', {
      class: `kiln-Dag-node kiln-mod-status-${status}${task.name === activeTask ? ' kiln-mod-active' : ''}`,
      'data-task': task.name,
      tabindex: 0,
      role: 'button'
    });
    const title = svg('title');
    title.textContent = `${task.name}: ${task.code.length} cell(s); reads ${
      Object.keys(task.inputs).join(', ') || 'nothing upstream'
    }; click to go to its first cell`;
    group.append(
      title,
      svg('rect', { x, y, width: node.width, height: node.height, rx: 6, class: 'kiln-Dag-box' }),
      svg('rect', { x, y, width: 6, height: node.height, rx: 3, fill: color, class: 'kiln-Dag-stripe' })
    );
    const name = svg('text', { x: x + 14, y: y + (compact ? 18 : 19), class: 'kiln-Dag-name' });
    name.textContent = task.name;
    group.append(name);
    if (!compact) {
      const subtitle = svg('text', { x: x + 14, y: y + 36, class: 'kiln-Dag-sub' });
      subtitle.textContent = taskSubtitle(task, state);
      group.append(subtitle);
    }
    group.addEventListener('click', () => onTask(task));
    group.addEventListener('contextmenu', () => {
      contextTarget.path = model.path;
      contextTarget.task = task.name;
    });
    group.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        onTask(task);
      }
    });
    root.append(group);
  }
  return root;
}
