import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ICellModel } from '@jupyterlab/cells';
import { Widget } from '@lumino/widgets';

import type { PipelineModel } from './model';
import { cellTags } from './tageditor';

/**
 * What each cell's tags were when the notebook was last loaded or saved, updated by every edit
 * made through Kiln's tag editor. A Run saves the notebook first; tags that changed some other
 * way since (the property inspector can carry one cell's tags to another) are shown to the user
 * before anything is written.
 */
const known = new WeakMap<PipelineModel, Map<string, string>>();

function snapshot(model: PipelineModel): Map<string, string> {
  const tags = new Map<string, string>();
  for (const cell of model.panel.content.widgets) {
    tags.set(cell.model.id, JSON.stringify(cellTags(cell)));
  }
  return tags;
}

/** Start watching a notebook: call once its context is ready. */
export function watchTags(model: PipelineModel): void {
  known.set(model, snapshot(model));
  model.panel.context.saveState.connect((_, state) => {
    if (state === 'completed') {
      known.set(model, snapshot(model));
    }
  });
}

/**
 * Every tag list Kiln's own editors wrote into a cell (the user made them). All of them, not
 * just the last: Undo of a later edit brings back an earlier one, which the user made too.
 */
const written = new WeakMap<ICellModel, Set<string>>();

export function noteTagEdit(cell: ICellModel, tags: readonly string[]): void {
  const lists = written.get(cell) ?? new Set<string>();
  lists.add(JSON.stringify(tags));
  written.set(cell, lists);
}

/** True when the run may save: nothing changed behind the user's back, or they confirmed. */
export async function confirmTagChanges(model: PipelineModel): Promise<boolean> {
  const before = known.get(model);
  if (!before || !model.panel.context.model.dirty) {
    return true;
  }
  const changed: string[] = [];
  model.panel.content.widgets.forEach((cell, index) => {
    const was = before.get(cell.model.id);
    const now = JSON.stringify(cellTags(cell));
    if (was !== undefined && was !== now && !written.get(cell.model)?.has(now)) {
      changed.push(`Cell ${index}: ${JSON.parse(was).join(' ') || '(no tags)'} → ${JSON.parse(now).join(' ') || '(no tags)'}`);
    }
  });
  if (changed.length === 0) {
    return true;
  }
  const body = document.createElement('div');
  body.className = 'kiln-TagGuard';
  const intro = document.createElement('p');
  intro.textContent =
    'These tags changed since the notebook was saved, not through Kiln\u2019s tag editor. ' +
    'Running saves the notebook with them:';
  const list = document.createElement('ul');
  for (const line of changed) {
    const item = document.createElement('li');
    item.textContent = line;
    list.append(item);
  }
  body.append(intro, list);
  const answer = await showDialog({
    title: 'Save changed tags and run?',
    body: new Widget({ node: body }),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Save and run' })]
  });
  return answer.button.accept;
}
