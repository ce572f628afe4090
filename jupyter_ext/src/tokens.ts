import { NotebookPanel } from '@jupyterlab/notebook';
import { Token } from '@lumino/coreutils';
import { ISignal } from '@lumino/signaling';

import { PipelineModel } from './model';

/**
 * One PipelineModel per open notebook. The panel, the cell badges and the commands all read
 * these models; nothing else talks to /kiln/compile or /kiln/runs.
 */
export interface IKilnPipelines {
  /** The model of a notebook panel (created on first use). */
  modelFor(panel: NotebookPanel): PipelineModel;
  /** The model of the open notebook at this path, if it is open. */
  modelForPath(path: string): PipelineModel | null;
  /** The model of the current notebook, if any. */
  readonly current: PipelineModel | null;
  /** Emitted when the current notebook changes. */
  readonly currentChanged: ISignal<IKilnPipelines, PipelineModel | null>;
  /** Emitted when a model is created (for per-notebook decorations). */
  readonly modelAdded: ISignal<IKilnPipelines, PipelineModel>;
}

export const IKilnPipelines = new Token<IKilnPipelines>(
  'nbkiln:IKilnPipelines',
  'The Kiln pipeline model of each open notebook.'
);
