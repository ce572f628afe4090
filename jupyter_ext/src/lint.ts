import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { CodeMirrorEditor } from '@jupyterlab/codemirror';
import { Diagnostic, setDiagnostics } from '@codemirror/lint';
import { EditorView } from '@codemirror/view';

import { PipelineModel } from './model';
import { IKilnPipelines } from './tokens';

/** The CodeMirror 6 view of a cell's editor, when it is rendered. */
function viewOf(editor: unknown): EditorView | null {
  return editor instanceof CodeMirrorEditor ? editor.editor : null;
}

function range(view: EditorView, line: number | null | undefined, col: number | null | undefined): { from: number; to: number } {
  const doc = view.state.doc;
  if (!line || line < 1 || line > doc.lines) {
    return { from: 0, to: Math.min(doc.length, doc.line(1).to) };
  }
  const text = doc.line(line);
  const from = Math.min(text.to, text.from + Math.max(0, (col ?? 1) - 1));
  return { from: from === text.to ? text.from : from, to: text.to };
}

/**
 * The compiler's diagnostics and a failed task's error, marked in the cells' own editors
 * (CodeMirror's lint: underline, gutter-free tooltip). Replaced on every compile and run update.
 */
function markNotebook(model: PipelineModel): void {
  const byCell = new Map<number, Diagnostic[]>();
  const add = (cellId: string | null | undefined, cellIndex: number | null | undefined, make: (view: EditorView) => Diagnostic) => {
    const ref = model.findCell(cellId, cellIndex);
    const view = ref ? viewOf(ref.cell.editor) : null;
    if (!ref || !view) {
      return;
    }
    const list = byCell.get(ref.index) ?? [];
    list.push(make(view));
    byCell.set(ref.index, list);
  };
  for (const d of model.diagnostics) {
    if (d.cell_index === null && !d.cell_id) {
      continue;
    }
    add(d.cell_id, d.cell_index, view => ({
      ...range(view, d.line, d.col),
      severity: d.severity === 'info' ? 'info' : d.severity,
      source: `kiln ${d.code}`,
      message: d.message
    }));
  }
  for (const [name, state] of Object.entries(model.run?.tasks ?? {})) {
    const error = state.error;
    if (state.status !== 'failed' || !error || !error.line || model.taskOutdated(name)) {
      continue;
    }
    add(error.cell_id, error.cell_index, view => ({
      ...range(view, error.line, null),
      severity: 'error',
      source: `task ${name}`,
      message: `${error.ename ?? 'Error'}: ${error.evalue ?? ''}`
    }));
  }
  model.panel.content.widgets.forEach((cell, index) => {
    const view = viewOf(cell.editor);
    if (!view) {
      return;
    }
    const marks = byCell.get(index) ?? [];
    const had = marked.get(view) ?? false;
    if (marks.length === 0 && !had) {
      return; // nothing to clear: leave the editor alone
    }
    view.dispatch(setDiagnostics(view.state, marks));
    marked.set(view, marks.length > 0);
    cell.toggleClass('kiln-mod-has-diagnostics', marks.length > 0);
  });
}

const marked = new WeakMap<EditorView, boolean>();

export const lintPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:lint',
  description: 'Marks compile errors and failed lines in the code editor.',
  autoStart: true,
  requires: [IKilnPipelines],
  activate: (_app: JupyterFrontEnd, pipelines: IKilnPipelines) => {
    const watch = (model: PipelineModel) => {
      let pending = false;
      model.changed.connect(() => {
        if (pending) {
          return;
        }
        pending = true;
        window.requestAnimationFrame(() => {
          pending = false;
          if (!model.isDisposed) {
            markNotebook(model);
          }
        });
      });
    };
    pipelines.modelAdded.connect((_, model) => watch(model));
  }
};
