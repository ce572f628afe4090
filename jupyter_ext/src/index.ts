import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { badgesPlugin } from './badges';
import { exportPlugin } from './exporter';
import { outputsPlugin } from './outputs';
import { viewPlugin } from './view';
import { lintPlugin } from './lint';
import { panelPlugin } from './panel';
import { pipelinesPlugin } from './pipelines';
import { runPlugin } from './run';
import { taggingPlugin } from './tagging';

export { IKilnPipelines } from './tokens';

/** Kiln's JupyterLab plugins, one per responsibility. */
const plugins: JupyterFrontEndPlugin<any>[] = [
  pipelinesPlugin,
  taggingPlugin,
  panelPlugin,
  badgesPlugin,
  runPlugin,
  exportPlugin,
  viewPlugin,
  outputsPlugin,
  lintPlugin
];

export default plugins;
