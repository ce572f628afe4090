import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { downloadIcon } from '@jupyterlab/ui-components';

import { CommandIDs } from './commands';
import { IKilnPipelines } from './tokens';

/**
 * The Export command (notebook toolbar, palette, panel): save the notebook and write its
 * pipeline bundle, `pipelines/NAME/VERSION/` beside it, through POST /kiln/export.
 */
export const exportPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:export',
  description: 'Exports the current notebook as a versioned pipeline bundle.',
  autoStart: true,
  requires: [INotebookTracker, IKilnPipelines],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    pipelines: IKilnPipelines,
    palette: ICommandPalette | null
  ) => {
    const notify = () => app.commands.notifyCommandChanged(CommandIDs.exportPipeline);
    app.commands.addCommand(CommandIDs.exportPipeline, {
      label: args => (args.panel ? 'Export' : args.toolbar ? 'Export pipeline' : 'Export Pipeline'),
      caption: 'Save the notebook and write its pipeline bundle to pipelines/NAME/VERSION/',
      icon: downloadIcon,
      isEnabled: () => {
        const model = pipelines.current;
        return model !== null && !model.exporting;
      },
      execute: async () => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        const model = pipelines.modelFor(panel);
        model.changed.connect(notify);
        try {
          const result = await model.exportPipeline();
          Notification.success(
            result.created
              ? `Exported ${result.name} ${result.version.slice(0, 8)} to ${result.path}/`
              : `${result.name} ${result.version.slice(0, 8)} was already exported: ${result.path}/`,
            { autoClose: 5000 }
          );
        } catch (error) {
          Notification.error(`Cannot export the pipeline: ${(error as Error).message}`, {
            autoClose: 8000
          });
        } finally {
          model.changed.disconnect(notify);
          notify();
        }
      }
    });
    tracker.currentChanged.connect(notify);
    palette?.addItem({ command: CommandIDs.exportPipeline, category: 'Kiln Pipeline' });
  }
};
