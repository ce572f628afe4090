import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ISignal, Signal } from '@lumino/signaling';

import { PipelineModel } from './model';
import { watchTags } from './tagguard';
import { IKilnPipelines } from './tokens';
import { DEFAULT_SETTINGS, IKilnSettings } from './types';

class KilnPipelines implements IKilnPipelines {
  constructor(private readonly _tracker: INotebookTracker) {
    _tracker.currentChanged.connect(() => this._currentChanged.emit(this.current));
    _tracker.widgetAdded.connect((_, panel) => this.modelFor(panel));
    _tracker.forEach(panel => this.modelFor(panel));
  }

  settings: IKilnSettings = { ...DEFAULT_SETTINGS };

  get current(): PipelineModel | null {
    const panel = this._tracker.currentWidget;
    return panel ? this.modelFor(panel) : null;
  }

  get currentChanged(): ISignal<IKilnPipelines, PipelineModel | null> {
    return this._currentChanged;
  }

  get modelAdded(): ISignal<IKilnPipelines, PipelineModel> {
    return this._modelAdded;
  }

  modelForPath(path: string): PipelineModel | null {
    const panel = this._tracker.find(p => p.context.path === path || p.context.localPath === path);
    return panel ? this.modelFor(panel) : null;
  }

  modelFor(panel: NotebookPanel): PipelineModel {
    let model = this._models.get(panel);
    if (!model) {
      model = new PipelineModel(panel, () => this.settings);
      this._models.set(panel, model);
      model.disposed.connect(() => this._models.delete(panel));
      const watched = model;
      void panel.context.ready.then(() => watchTags(watched)); // what "tags as saved" means
      this._modelAdded.emit(model);
    }
    return model;
  }

  private _models = new Map<NotebookPanel, PipelineModel>();
  private _currentChanged = new Signal<IKilnPipelines, PipelineModel | null>(this);
  private _modelAdded = new Signal<IKilnPipelines, PipelineModel>(this);
}

/** The pipeline model of every open notebook, and Kiln's settings. */
export const pipelinesPlugin: JupyterFrontEndPlugin<IKilnPipelines> = {
  id: 'nbkiln:pipeline',
  description: 'Keeps the compiled pipeline and the last run of each open notebook.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry],
  provides: IKilnPipelines,
  activate: (
    _app: JupyterFrontEnd,
    tracker: INotebookTracker,
    registry: ISettingRegistry | null
  ): IKilnPipelines => {
    const pipelines = new KilnPipelines(tracker);
    if (registry) {
      void registry.load(pipelinesPlugin.id).then(
        settings => {
          const update = () => {
            pipelines.settings = {
              ...DEFAULT_SETTINGS,
              ...(settings.composite as unknown as Partial<IKilnSettings>)
            };
          };
          update();
          settings.changed.connect(update);
        },
        reason => console.error('Kiln: cannot load settings', reason)
      );
    }
    return pipelines;
  }
};
