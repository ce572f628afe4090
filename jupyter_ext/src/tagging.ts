import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { Cell } from '@jupyterlab/cells';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { CommandIDs } from './commands';
import { kilnIcon } from './icons';
import { TagEditor, cellTags, tagChecker, writeCellTags, writeTags } from './tageditor';
import { applyTagForm, firstHeading, readTagForm, slugify } from './tags';
import { IKilnPipelines } from './tokens';
import { canRedoTagEdit, canUndoTagEdit, tagTransaction, watchCell } from './undo';

/** A task proposed for the first code cell after a Markdown heading. */
export interface IHeadingProposal {
  cell: Cell;
  index: number;
  heading: string;
  name: string;
}

/**
 * For each Markdown heading, the first code cell below it (before the next heading) becomes
 * `task:<slug of the heading>` — unless it already has a Kiln role or starts a task.
 */
export function proposeTasksFromHeadings(panel: NotebookPanel): IHeadingProposal[] {
  const proposals: IHeadingProposal[] = [];
  const used = new Set<string>();
  const cells = panel.content.widgets;
  cells.forEach(cell => {
    const form = readTagForm(cellTags(cell));
    if (form.role === 'task') {
      used.add(form.name);
    }
  });
  let pending: string | null = null;
  cells.forEach((cell, index) => {
    if (cell.model.type === 'markdown') {
      const heading = firstHeading(cell.model.sharedModel.getSource());
      if (heading) {
        pending = heading;
      }
      return;
    }
    if (cell.model.type !== 'code' || pending === null) {
      return;
    }
    const heading: string = pending;
    pending = null;
    if (readTagForm(cellTags(cell)).role !== 'member') {
      return; // already a task, setup, parameters or skip: leave it alone
    }
    const base = slugify(heading);
    let name = base;
    for (let n = 2; used.has(name); n++) {
      name = `${base}_${n}`;
    }
    used.add(name);
    proposals.push({ cell, index, heading, name });
  });
  return proposals;
}

class ProposalList extends Widget {
  constructor(proposals: IHeadingProposal[]) {
    super();
    this.addClass('kiln-Proposals');
    const intro = document.createElement('p');
    intro.textContent = `Tag ${proposals.length} cell(s) as tasks:`;
    const list = document.createElement('ul');
    for (const p of proposals) {
      const item = document.createElement('li');
      const tag = document.createElement('code');
      tag.textContent = `task:${p.name}`;
      item.append(`cell ${p.index} (“${p.heading}”) → `, tag);
      list.append(item);
    }
    this.node.append(intro, list);
  }
}

/** Tagging commands: edit the active cell's tags, split the notebook by its headings. */
export const taggingPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:tagging',
  description: 'Commands that write Kiln tags into cells (cell toolbar and palette).',
  autoStart: true,
  requires: [INotebookTracker, IKilnPipelines],
  optional: [ICommandPalette, IMainMenu],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    pipelines: IKilnPipelines,
    palette: ICommandPalette | null,
    mainMenu: IMainMenu | null
  ) => {
    const hasNotebook = () => tracker.currentWidget !== null;

    app.commands.addCommand(CommandIDs.editCellTags, {
      label: args => (args.toolbar ? '' : 'Pipeline Tags…'),
      caption: 'Make this cell a pipeline task, or mark it setup / parameters / skip',
      icon: kilnIcon,
      isEnabled: () => tracker.activeCell?.model.type === 'code',
      execute: async () => {
        const cell = tracker.activeCell;
        const panel = tracker.currentWidget;
        if (!cell || !panel || cell.model.type !== 'code') {
          return;
        }
        const model = pipelines.modelFor(panel);
        const names = model.tasks.map(t => t.name);
        const checker = tagChecker(model, cell);
        let editor = new TagEditor(cellTags(cell), names, checker);
        const index = panel.content.widgets.indexOf(cell);
        for (;;) {
          // The editor marks a field the compiler rejects invalid (setCustomValidity): the
          // dialog itself then disables Apply and ignores Enter until the field is fixed.
          const result = await showDialog({
            title: `Pipeline tags of cell ${index}`,
            body: editor,
            focusNodeSelector: 'select',
            buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Apply' })]
          });
          if (!result.button.accept) {
            return;
          }
          // Accepted before the compiler answered (a click right after typing): ask it now.
          const form = editor.getValue();
          if (await editor.settle()) {
            writeCellTags(cell, form);
            return;
          }
          // Open it again on what was typed, with the compiler's messages under the fields.
          editor = new TagEditor(applyTagForm(cellTags(cell), form), names, checker);
          void editor.settle();
        }
      }
    });

    app.commands.addCommand(CommandIDs.splitByHeadings, {
      label: 'Split by Headings',
      caption: 'Propose a task for the first code cell under each Markdown heading',
      isEnabled: hasNotebook,
      execute: async () => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        const proposals = proposeTasksFromHeadings(panel);
        if (proposals.length === 0) {
          await showDialog({
            title: 'Split by Headings',
            body: 'No untagged code cell follows a Markdown heading: nothing to propose.',
            buttons: [Dialog.okButton()]
          });
          return;
        }
        const result = await showDialog({
          title: 'Split by Headings',
          body: new ProposalList(proposals),
          buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Tag cells' })]
        });
        if (!result.button.accept) {
          return;
        }
        // All proposals are one step of the notebook's undo history.
        tagTransaction(panel.model?.sharedModel, () => {
          for (const p of proposals) {
            writeTags(p.cell, { ...readTagForm(cellTags(p.cell)), role: 'task', name: p.name });
          }
        });
      }
    });

    app.commands.addCommand(CommandIDs.compile, {
      label: 'Recompile',
      caption: 'Compile the notebook into its pipeline now',
      isEnabled: hasNotebook,
      execute: async () => {
        const panel = tracker.currentWidget;
        if (panel) {
          await pipelines.modelFor(panel).compileNow(true);
        }
      }
    });

    // Edit → Undo / Redo and Ctrl+Z / Ctrl+Shift+Z (undo.ts): a Kiln tag edit when it is the
    // newest change of the notebook, ranked before the notebook's own cell-text undoer.
    app.commands.addCommand(CommandIDs.undoTagEdit, {
      label: 'Undo Tag Edit',
      isEnabled: () => canUndoTagEdit(tracker.currentWidget),
      execute: () => {
        const panel = tracker.currentWidget;
        if (panel && canUndoTagEdit(panel)) {
          NotebookActions.undo(panel.content);
        }
      }
    });
    app.commands.addCommand(CommandIDs.redoTagEdit, {
      label: 'Redo Tag Edit',
      isEnabled: () => canRedoTagEdit(tracker.currentWidget),
      execute: () => {
        const panel = tracker.currentWidget;
        if (panel && canRedoTagEdit(panel)) {
          NotebookActions.redo(panel.content);
        }
      }
    });
    const current = (widget: Widget | null) => (widget === tracker.currentWidget ? tracker.currentWidget : null);
    mainMenu?.editMenu.undoers.undo.add({
      id: CommandIDs.undoTagEdit,
      isEnabled: widget => canUndoTagEdit(current(widget)),
      rank: 1
    });
    mainMenu?.editMenu.undoers.redo.add({
      id: CommandIDs.redoTagEdit,
      isEnabled: widget => canRedoTagEdit(current(widget)),
      rank: 1
    });

    tracker.activeCellChanged.connect(() => {
      watchCell(tracker.currentWidget);
      app.commands.notifyCommandChanged(CommandIDs.editCellTags);
    });
    tracker.currentChanged.connect(() => {
      app.commands.notifyCommandChanged(CommandIDs.splitByHeadings);
      app.commands.notifyCommandChanged(CommandIDs.compile);
    });

    for (const command of [CommandIDs.editCellTags, CommandIDs.splitByHeadings, CommandIDs.compile]) {
      palette?.addItem({ command, category: 'Kiln Pipeline' });
    }
  }
};
