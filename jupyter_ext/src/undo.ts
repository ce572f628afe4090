import type { ISharedNotebook } from '@jupyter/ydoc';
import { NotebookPanel } from '@jupyterlab/notebook';

/**
 * Kiln tag edits as steps of JupyterLab's undo history.
 *
 * JupyterLab 4 (default settings) keeps two Yjs UndoManager histories (@jupyter/ydoc):
 * - the notebook's, used by `z` / Shift+Z in command mode and Edit → Undo Cell Operation; it
 *   records transactions whose origin is the YNotebook;
 * - one per cell, used by Edit → Undo and Ctrl+Z anywhere in the notebook (the notebook is a
 *   `data-jp-undoer`: `editmenu:undo` → `notebook:undo` → the active cell editor's undo).
 * A cell's own metadata writes carry no origin, so neither history ever held a tag change.
 *
 * Kiln runs its tag writes in a YNotebook transaction (one entry of the notebook's history,
 * marked as Kiln's), so `z` reverts it. For Edit → Undo and Ctrl+Z, Kiln adds an undoer ranked
 * before the notebook's: it takes the step when the newest change of the notebook is a Kiln
 * tag edit, newer than the active cell's last text change; otherwise the cell's text undo runs
 * as before. Each history's stack items are stamped with the time of the change (and of their
 * undo) so the two can be ordered; undoing and redoing carry the stamps across.
 */

/** The parts of Yjs' UndoManager used here (yjs is not a direct dependency). */
interface IStackItem {
  meta: Map<string, unknown>;
}
interface IUndoManager {
  undoStack: IStackItem[];
  redoStack: IStackItem[];
  undoing: boolean;
  redoing: boolean;
  stopCapturing(): void;
  on(name: string, f: (event: { stackItem: IStackItem; type: 'undo' | 'redo' }) => void): void;
}

const KILN = 'kiln-tag-edit';
const CHANGED = 'kiln-changed-at';
const UNDONE = 'kiln-undone-at';

const watched = new WeakSet<IUndoManager>();
let kilnEditing = false;

function managerOf(model: unknown): IUndoManager | null {
  return ((model as { undoManager?: IUndoManager | null } | null)?.undoManager ?? null) as IUndoManager | null;
}

/** Stamp each stack item of `manager` with when its change (and its undo) happened. */
function watch(manager: IUndoManager | null): void {
  if (!manager || watched.has(manager)) {
    return;
  }
  watched.add(manager);
  // Undo and redo add the reverse item first, then report the item they popped (every Yjs
  // 13.x; the older one JupyterLab 4.5 bundles has no `currStackItem`): stamps move across.
  let reversed: IStackItem | null = null;
  manager.on('stack-item-added', event => {
    if (manager.undoing || manager.redoing) {
      reversed = event.stackItem;
      if (event.type === 'redo') {
        reversed.meta.set(UNDONE, Date.now());
      }
      return;
    }
    event.stackItem.meta.set(CHANGED, Date.now());
    if (kilnEditing) {
      event.stackItem.meta.set(KILN, true);
    }
  });
  manager.on('stack-item-popped', event => {
    if (reversed) {
      for (const key of [KILN, CHANGED]) {
        if (event.stackItem.meta.has(key)) {
          reversed.meta.set(key, event.stackItem.meta.get(key));
        }
      }
      reversed = null;
    }
  });
  // A change merged into the last item (within the capture timeout) is a newer change.
  manager.on('stack-item-updated', event => {
    if (!manager.undoing && !manager.redoing) {
      event.stackItem.meta.set(CHANGED, Date.now());
    }
  });
}

/**
 * Run `edit` (Kiln tag writes) as one step of the notebook's undo history. `stopCapturing` on
 * both sides keeps it from merging with a structural change made within the UndoManager's
 * 500 ms capture window.
 */
export function tagTransaction(notebook: ISharedNotebook | null | undefined, edit: () => void): void {
  if (!notebook) {
    edit();
    return;
  }
  const history = managerOf(notebook);
  watch(history);
  history?.stopCapturing();
  kilnEditing = true;
  try {
    notebook.transact(edit, true);
  } finally {
    kilnEditing = false;
  }
  history?.stopCapturing();
}

/** Watch the active cell's own history too, so its text changes are stamped. */
export function watchCell(panel: NotebookPanel | null): void {
  const cell = panel?.content.activeCell;
  if (cell) {
    watch(managerOf(cell.model.sharedModel));
  }
}

function top(stack: IStackItem[] | undefined): IStackItem | undefined {
  return stack && stack.length > 0 ? stack[stack.length - 1] : undefined;
}

function time(item: IStackItem | undefined, key: string): number {
  return item ? Number(item.meta.get(key) ?? 0) : -1;
}

/** True when Undo should revert a Kiln tag edit (newest change) rather than cell text. */
export function canUndoTagEdit(panel: NotebookPanel | null): boolean {
  const notebook = managerOf(panel?.model?.sharedModel);
  const item = top(notebook?.undoStack);
  if (!panel || !item || !item.meta.get(KILN)) {
    return false;
  }
  const cell = managerOf(panel.content.activeCell?.model.sharedModel);
  // A cell history Kiln never watched holds only changes older than the Kiln edit's time
  // stamp or none at all: the active cell is watched from the moment it becomes active.
  return cell === notebook || time(item, CHANGED) > time(top(cell?.undoStack), CHANGED);
}

/** True when Redo should redo a Kiln tag edit (the last thing undone). */
export function canRedoTagEdit(panel: NotebookPanel | null): boolean {
  const notebook = managerOf(panel?.model?.sharedModel);
  const item = top(notebook?.redoStack);
  if (!panel || !item || !item.meta.get(KILN)) {
    return false;
  }
  const cell = managerOf(panel.content.activeCell?.model.sharedModel);
  return cell === notebook || time(item, UNDONE) > time(top(cell?.redoStack), UNDONE);
}
