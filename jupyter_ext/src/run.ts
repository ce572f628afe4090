import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { CommandIDs } from './commands';
import { contextTarget } from './dag';
import { kilnIcon } from './icons';
import { PipelineModel } from './model';
import { confirmTagChanges } from './tagguard';
import { IKilnPipelines } from './tokens';
import { isFinalRun } from './types';

/**
 * The run commands (notebook toolbar, palette, panel, Pipeline view, a task's context menu):
 * Run, Run without cache, Rerun from this task, Cancel. Each takes an optional `path` (the
 * notebook; default: the current one) and, for Rerun from, `task`.
 */
export const runPlugin: JupyterFrontEndPlugin<void> = {
  id: 'nbkiln:run',
  description: 'Runs the current notebook as a Kiln pipeline on Dask.',
  autoStart: true,
  requires: [IKilnPipelines],
  optional: [ICommandPalette],
  activate: (app: JupyterFrontEnd, pipelines: IKilnPipelines, palette: ICommandPalette | null) => {
    const ids = [CommandIDs.run, CommandIDs.runNoCache, CommandIDs.cancel, CommandIDs.rerunFrom];
    const notify = () => ids.forEach(id => app.commands.notifyCommandChanged(id));
    // Every model, from the start: a run resumed after a page reload updates the buttons too.
    const watch = (model: PipelineModel) => {
      let running = model.running;
      model.changed.connect(() => {
        if (model.running !== running) {
          running = model.running;
          notify();
        }
      });
    };
    pipelines.modelAdded.connect((_, model) => watch(model));
    pipelines.currentChanged.connect(notify);

    const modelOf = (args: ReadonlyPartialJSONObject): PipelineModel | null => {
      if (typeof args.path === 'string' && args.path) {
        return pipelines.modelForPath(args.path);
      }
      return pipelines.current;
    };
    /** The task under the context menu (a DAG node), or args.task. */
    const taskOf = (args: ReadonlyPartialJSONObject): string | null => {
      if (typeof args.task === 'string' && args.task) {
        return args.task;
      }
      return contextTarget.task;
    };
    const modelOfMenu = (args: ReadonlyPartialJSONObject): PipelineModel | null => {
      if (!args.path && contextTarget.path) {
        return pipelines.modelForPath(contextTarget.path);
      }
      return modelOf(args);
    };

    const start = async (model: PipelineModel, options: { useCache?: boolean; force?: string[] }) => {
      if (!(await confirmTagChanges(model))) {
        return;
      }
      try {
        await model.startRun(options);
      } catch (error) {
        Notification.error(`Cannot run the pipeline: ${(error as Error).message}`, { autoClose: 8000 });
        return;
      }
      const run = model.run;
      if (!run) {
        return;
      }
      if (run.status === 'succeeded') {
        Notification.success(`Pipeline ${model.path}: run succeeded`, { autoClose: 4000 });
      } else if (run.status === 'cancelled') {
        Notification.info(`Pipeline ${model.path}: run cancelled`, { autoClose: 4000 });
      } else if (run.status === 'failed') {
        const failed = Object.entries(run.tasks)
          .filter(([, s]) => s.status === 'failed')
          .map(([name]) => name);
        Notification.error(
          `Pipeline run failed${failed.length ? `: ${failed.join(', ')}` : ''}${run.error ? ` — ${run.error}` : ''}`,
          { autoClose: 8000 }
        );
      }
    };

    app.commands.addCommand(CommandIDs.run, {
      label: args => (args.toolbar ? 'Run pipeline' : 'Run Pipeline'),
      caption: 'Save the notebook and run it as a pipeline on Dask (cached tasks are skipped)',
      icon: kilnIcon,
      isEnabled: args => {
        const model = modelOf(args);
        return model !== null && !model.running;
      },
      execute: async args => {
        const model = modelOf(args);
        if (model) {
          await start(model, {});
        }
      }
    });
    app.commands.addCommand(CommandIDs.runNoCache, {
      label: 'Run Without Cache',
      caption: 'Run every task again; the cache is neither read nor written',
      isEnabled: args => {
        const model = modelOf(args);
        return model !== null && !model.running;
      },
      execute: async args => {
        const model = modelOf(args);
        if (model) {
          await start(model, { useCache: false });
        }
      }
    });
    app.commands.addCommand(CommandIDs.rerunFrom, {
      label: args => {
        const task = taskOf(args);
        return task ? `Rerun From ${task}` : 'Rerun From This Task';
      },
      caption: 'Run this task and every task downstream of it again, whatever the cache holds',
      isEnabled: args => {
        const model = modelOfMenu(args);
        const task = taskOf(args);
        return model !== null && !model.running && task !== null && model.tasks.some(t => t.name === task);
      },
      execute: async args => {
        const model = modelOfMenu(args);
        const task = taskOf(args);
        if (model && task) {
          await start(model, { force: model.downstreamOf(task) });
        }
      }
    });
    app.commands.addCommand(CommandIDs.cancel, {
      label: args => (modelOf(args)?.run?.status === 'cancelling' ? 'Cancelling…' : 'Cancel Run'),
      caption: 'Stop the run: its running tasks are cancelled on the cluster',
      isEnabled: args => {
        const run = modelOf(args)?.run;
        return !!run && !isFinalRun(run.status) && run.status !== 'cancelling';
      },
      execute: async args => {
        const model = modelOf(args);
        try {
          await model?.cancelRun();
        } catch (error) {
          Notification.error(`Cannot cancel the run: ${(error as Error).message}`, { autoClose: 8000 });
        }
        notify();
      }
    });
    // The Cancel button's label follows the run's status, not only "running".
    pipelines.modelAdded.connect((_, model) =>
      model.changed.connect(() => app.commands.notifyCommandChanged(CommandIDs.cancel))
    );
    app.contextMenu.addItem({ command: CommandIDs.rerunFrom, selector: '.kiln-Dag-node', rank: 2 });
    for (const id of ids) {
      palette?.addItem({ command: id, category: 'Kiln Pipeline' });
    }
  }
};
