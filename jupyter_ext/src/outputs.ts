import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IThemeManager, MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { postKiln, requestKiln } from './api';
import { CommandIDs } from './commands';
import { el } from './dom';
import { kilnIcon } from './icons';

/**
 * A run's output notebook, read-only: the server renders it with nbconvert and the page shows
 * that HTML in a sandboxed frame. No kernel, no pipeline of its own, nothing to save.
 */
class OutputViewer extends Widget {
  constructor(readonly path: string) {
    super();
    this.addClass('kiln-OutputViewer');
    this._note = el('div', 'kiln-OutputViewer-note', `Read-only output of a run: ${path}`);
    this._frame = el('iframe', 'kiln-OutputViewer-frame');
    this._frame.setAttribute('sandbox', ''); // no scripts, no same-origin access
    this._frame.title = `Output notebook ${path}`;
    this.node.append(this._note, this._frame);
  }

  async load(dark: boolean): Promise<void> {
    try {
      const answer = await requestKiln<{ html: string }>(
        `outputs/html?path=${encodeURIComponent(this.path)}&theme=${dark ? 'dark' : 'light'}`
      );
      this._frame.srcdoc = answer.html;
    } catch (error) {
      this._note.textContent = `Cannot show ${this.path}: ${(error as Error).message}`;
      this._note.classList.add('kiln-Panel-error');
    }
  }

  private _note: HTMLDivElement;
  private _frame: HTMLIFrameElement;
}

export const outputsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:outputs',
  description: 'Opens run output notebooks read-only.',
  autoStart: true,
  optional: [IThemeManager],
  activate: (app: JupyterFrontEnd, themes: IThemeManager | null) => {
    app.commands.addCommand(CommandIDs.openOutput, {
      label: 'Open Output Notebook (read-only)',
      caption: 'Show a run\u2019s output notebook, read-only (no kernel)',
      execute: async args => {
        let path = typeof args.path === 'string' ? args.path : '';
        if (!path && typeof args.run_id === 'string' && typeof args.notebook === 'string') {
          // A recorded run: the server copies its output where the Contents API can read it.
          path = (await postKiln<{ path: string }>('outputs', { path: args.notebook, run_id: args.run_id })).path;
        }
        if (!path) {
          return;
        }
        const id = `kiln-output-${path.replace(/[^A-Za-z0-9]/g, '-')}`;
        const open = Array.from(app.shell.widgets('main')).find(w => w.id === id);
        if (open) {
          app.shell.activateById(id);
          return;
        }
        const content = new OutputViewer(path);
        const widget = new MainAreaWidget({ content });
        widget.id = id;
        widget.title.label = `${path.split('/').pop()} (read-only)`;
        widget.title.caption = `Output notebook ${path}, read-only`;
        widget.title.icon = kilnIcon;
        widget.title.closable = true;
        app.shell.add(widget, 'main', { mode: 'tab-after' });
        app.shell.activateById(id);
        const dark = themes?.theme ? !themes.isLight(themes.theme) : false;
        await content.load(dark);
      }
    });
  }
};
