/**
 * The shapes the server answers with. They mirror `compiler/schema/pipeline.schema.json`,
 * `compiler.diagnostics.Diagnostic.to_dict()` and `jupyter_ext/runs.py`; the frontend only
 * reads them, it never computes a DAG itself.
 */

export interface IDiagnostic {
  severity: 'error' | 'warning' | 'info';
  code: string;
  message: string;
  cell_index: number | null;
  cell_id: string | null;
  line: number | null;
  col: number | null;
}

export interface ITaskCode {
  cell_id: string;
  cell_index: number;
  source: string;
}

export interface ITaskSpec {
  name: string;
  version: string;
  upstream: string[];
  inputs: { [name: string]: string };
  outputs: string[];
  parameters: string[];
  cells: string[];
  code: ITaskCode[];
  resources: { cpu?: number; memory?: number; gpu?: number };
  retries: number;
  timeout: number | null;
  cache: boolean;
}

export interface IPipelineSpec {
  name: string;
  version: string;
  parameters: { [name: string]: unknown };
  tasks: ITaskSpec[];
}

export interface ICompileResult {
  ok: boolean;
  spec: IPipelineSpec | null;
  diagnostics: IDiagnostic[];
}

export type TaskStatus =
  | 'waiting'
  | 'running'
  | 'retrying'
  | 'cached'
  | 'done'
  | 'failed'
  | 'upstream_failed';

export interface ITaskError {
  cell_index?: number | null;
  cell_id?: string | null;
  line?: number | null;
  ename?: string;
  evalue?: string;
}

export interface ITaskState {
  status: TaskStatus;
  duration?: number;
  error?: ITaskError;
  attempt?: number;
  attempts?: number;
}

export type RunStatus = 'starting' | 'running' | 'succeeded' | 'failed';

export interface IRunState {
  run_id: string;
  path: string;
  status: RunStatus;
  started: string;
  finished: string | null;
  dashboard: string | null;
  /** The Dask scheduler the run went to; null for the embedded LocalCluster. */
  scheduler?: string | null;
  output_notebook: string | null;
  error: string | null;
  /** Options this Kiln runtime does not take, so they were left out of the run. */
  notes?: string[];
  tasks: { [task: string]: ITaskState };
  event_count?: number;
}

/** Settings from the settings registry (schema: jupyter_ext/schema/pipeline.json). */
export interface IKilnSettings {
  schedulerAddress: string;
  storeUrl: string;
  lineageUrl: string;
  workers: number;
  compileDelayMs: number;
}

export const DEFAULT_SETTINGS: IKilnSettings = {
  schedulerAddress: '',
  storeUrl: '',
  lineageUrl: '',
  workers: 0,
  compileDelayMs: 500
};

export function isFinalRun(status: RunStatus): boolean {
  return status === 'succeeded' || status === 'failed';
}
