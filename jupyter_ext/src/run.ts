import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { CommandIDs } from './commands';
import { kilnIcon } from './icons';
import { IKilnPipelines } from './tokens';

/** The Run command (notebook toolbar, palette, panel): a run on Dask, followed live. */
export const runPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:run',
  description: 'Runs the current notebook as a Kiln pipeline on Dask.',
  autoStart: true,
  requires: [INotebookTracker, IKilnPipelines],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    pipelines: IKilnPipelines,
    palette: ICommandPalette | null
  ) => {
    const notify = () => app.commands.notifyCommandChanged(CommandIDs.run);
    app.commands.addCommand(CommandIDs.run, {
      label: args => (args.toolbar ? 'Run pipeline' : 'Run Pipeline'),
      caption: 'Save the notebook and run it as a pipeline on Dask (cached tasks are skipped)',
      icon: kilnIcon,
      isEnabled: () => {
        const model = pipelines.current;
        return model !== null && !model.running;
      },
      execute: async () => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        const model = pipelines.modelFor(panel);
        const done = () => {
          notify();
          const run = model.run;
          if (!run) {
            return;
          }
          if (run.status === 'succeeded') {
            Notification.success(`Pipeline ${panel.context.localPath}: run succeeded`, {
              autoClose: 4000
            });
          } else if (run.status === 'failed') {
            const failed = Object.entries(run.tasks)
              .filter(([, s]) => s.status === 'failed')
              .map(([name]) => name);
            Notification.error(
              `Pipeline run failed${failed.length ? `: ${failed.join(', ')}` : ''}${
                run.error ? ` — ${run.error}` : ''
              }`,
              { autoClose: 8000 }
            );
          }
        };
        model.changed.connect(notify);
        try {
          await model.startRun();
          done();
        } catch (error) {
          Notification.error(`Cannot run the pipeline: ${(error as Error).message}`, {
            autoClose: 8000
          });
        } finally {
          model.changed.disconnect(notify);
          notify();
        }
      }
    });
    tracker.currentChanged.connect(notify);
    palette?.addItem({ command: CommandIDs.run, category: 'Kiln Pipeline' });
  }
};
