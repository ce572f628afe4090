/** Every Kiln command, registered once by the plugin that owns it. */
export namespace CommandIDs {
  export const editCellTags = 'kiln:edit-cell-tags';
  export const splitByHeadings = 'kiln:split-by-headings';
  export const compile = 'kiln:compile';
  export const run = 'kiln:run';
  export const showPanel = 'kiln:show-panel';
  export const exportPipeline = 'kiln:export';
  export const newSchedule = 'kiln:new-schedule';
}
