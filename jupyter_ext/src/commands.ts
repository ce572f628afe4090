/** Every Kiln command, registered once by the plugin that owns it. */
export namespace CommandIDs {
  export const editCellTags = 'kiln:edit-cell-tags';
  export const splitByHeadings = 'kiln:split-by-headings';
  export const compile = 'kiln:compile';
  export const undoTagEdit = 'kiln:undo-tag-edit';
  export const redoTagEdit = 'kiln:redo-tag-edit';
  export const run = 'kiln:run';
  export const showPanel = 'kiln:show-panel';
  export const exportPipeline = 'kiln:export';
  export const newSchedule = 'kiln:new-schedule';
  export const openView = 'kiln:open-view';
  export const runNoCache = 'kiln:run-no-cache';
  export const cancel = 'kiln:cancel';
  export const rerunFrom = 'kiln:rerun-from';
  export const openOutput = 'kiln:open-output';
}
