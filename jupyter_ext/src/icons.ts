import { LabIcon } from '@jupyterlab/ui-components';

/** A kiln: a vaulted oven with a flame. */
const KILN_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" d="M4 21V11a8 8 0 0 1 16 0v10h-2v-9.8a6 6 0 0 0-12 0V21z"/>
  <path class="jp-icon-warn0" fill="#f57c00" d="M12 9.5c1.6 1.8 3 3.4 3 5.5a3 3 0 0 1-6 0c0-1.3.6-2.3 1.4-3.2.1 1 .6 1.7 1.3 1.9-.4-1.5-.2-2.9.3-4.2z"/>
  <rect class="jp-icon3" fill="#616161" x="2" y="20" width="20" height="2" rx="1"/>
</svg>`;

export const kilnIcon = new LabIcon({ name: 'nbkiln:kiln', svgstr: KILN_SVG });
