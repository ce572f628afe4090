/**
 * The shapes the server answers with. They mirror `compiler/model/schema/pipeline.schema.json`,
 * `compiler.model.diagnostics.Diagnostic.to_dict()` and `jupyter_ext/runs.py`; the frontend only
 * reads them, it never computes a DAG itself. The status unions spell `compiler/model/statuses.py`
 * (tests/test_architecture.py fails when they differ).
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
  | 'upstream_failed'
  | 'cancelled'
  | 'interrupted'
  | 'not_run';

export interface ITaskError {
  cell_index?: number | null;
  cell_id?: string | null;
  line?: number | null;
  ename?: string;
  evalue?: string;
}

/** What a task used (compiler/model/costs.py): CPU-s, memory GB-s, GPU-s, bytes written, ... */
export interface ICost {
  cpu_s?: number;
  wall_s?: number;
  peak_memory?: number | null;
  average_memory?: number | null;
  mem_gb_s?: number;
  gpu_s?: number;
  bytes_written?: number;
}

export interface ITaskState {
  status: TaskStatus;
  duration?: number;
  error?: ITaskError;
  attempt?: number;
  attempts?: number;
  cost?: ICost | null;
  /** A cache hit: the recorded cost of the run it replaced. */
  cost_saved?: ICost | null;
}

export type RunStatus =
  | 'starting'
  | 'started'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'cancelling'
  | 'cancelled'
  | 'interrupted';

/** A runtime event as the server kept it (`jupyter_ext/runs.py`), with `at` (epoch s). */
export interface IRunEvent {
  type: 'run' | 'task';
  status: string;
  task?: string;
  attempt?: number;
  duration?: number | null;
  reason?: string;
  at: number;
}

export interface IRunState {
  run_id: string;
  path: string;
  status: RunStatus;
  started: string;
  finished: string | null;
  dashboard: string | null;
  /** The dashboard through this Jupyter server (relative to its base URL), while it is up. */
  dashboard_proxy?: string | null;
  /** The Dask scheduler the run went to; null for the embedded LocalCluster. */
  scheduler?: string | null;
  output_notebook: string | null;
  error: string | null;
  tasks: { [task: string]: ITaskState };
  events?: IRunEvent[];
  event_count?: number;
  options?: { use_cache?: boolean; force?: string[] };
  /** Bumped by every change: a long poll with `after=version` waits for the next one. */
  version?: number;
  /** The run's call returned: lineage closed, its result and output notebook known. */
  settled?: boolean;
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
  return (
    status === 'succeeded' || status === 'failed' || status === 'cancelled' || status === 'interrupted'
  );
}

/** A file a task read or wrote (`jupyter_ext/history.py`); `path` is null outside the root. */
export interface IFileRef {
  name: string;
  path: string | null;
  digest: string | null;
}

/** An artifact a task produced, with the summary the runtime recorded. */
export interface IArtifact {
  name: string;
  digest: string;
  type: string | null;
  size: number | null;
  /** Bytes of the stored file (the artifact store's copy), when recorded. */
  stored_bytes?: number | null;
  summary: {
    shape?: number[];
    dtype?: string;
    columns?: string[];
    len?: number;
    [key: string]: unknown;
  } | null;
}

/** One task of one recorded run (`GET /kiln/lineage?task=`). */
export interface IAttempt {
  attempt: number;
  status: string;
  duration: number | null;
  error?: string;
  retry?: string;
}

export interface ITaskRecord {
  status: string;
  started_at?: string | null;
  ended_at?: string | null;
  attempt_log?: IAttempt[];
  version: string;
  duration: number | null;
  cached: boolean;
  attempts: number | null;
  parameters: { [name: string]: unknown };
  error: { message?: string; line?: number | null; cell_index?: number | null } | null;
  outputs: IArtifact[];
  inputs: { name: string; producer: string }[];
  reads: IFileRef[];
  writes: IFileRef[];
  cost?: ICost | null;
  cost_saved?: ICost | null;
}

export interface ILineageRun {
  run_id: string;
  status: string;
  started_at: string | null;
  ended_at?: string | null;
  duration: number | null;
  user?: string | null;
  pipeline_version: string;
  parameters: { [name: string]: unknown };
  has_output: boolean;
  task?: ITaskRecord;
  /** With `task`: the name this run recorded the task under (earlier, before a rename). */
  recorded_as?: string;
  tasks?: { [name: string]: ITaskRecord };
}

export interface ILineageAnswer {
  path: string;
  task: string | null;
  runs: ILineageRun[];
}

/** `POST /kiln/export`. */
export interface IExportResult {
  path: string;
  name: string;
  version: string;
  created: boolean;
  files: string[];
}

export interface IScheduleRun {
  id: number;
  due_at: string;
  status: 'running' | 'succeeded' | 'failed' | 'skipped' | 'interrupted';
  reason: string | null;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  kiln_run_id: string | null;
  has_output: boolean;
}

export interface ISchedule {
  name: string;
  notebook: string;
  cron: string;
  timezone: string;
  parameters: { [name: string]: unknown };
  engine: 'kiln' | 'papermill';
  missed: 'run_once' | 'skip';
  paused: boolean;
  next_due_at: string;
  state: 'active' | 'paused' | 'running';
  last_runs: IScheduleRun[];
  /** 'live': the notebook as saved; 'promoted': the exported bundle `promoted_version`. */
  mode?: 'live' | 'promoted';
  promoted_version?: string | null;
}

export interface ISchedulerState {
  enabled: boolean;
  serving: boolean;
}

export interface ISchedulesAnswer {
  schedules: ISchedule[];
  scheduler: ISchedulerState;
}
