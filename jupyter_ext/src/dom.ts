/** Small DOM helpers shared by the panel's sections, the graph and the timeline. */

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element with its attributes set. */
export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: { [name: string]: string | number } = {}
): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    element.setAttribute(name, String(value));
  }
  return element;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = ''
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (className) {
    element.className = className;
  }
  if (text) {
    element.textContent = text;
  }
  return element;
}

/** A link-styled button (keyboard-accessible) that runs `action` on click. */
export function linkButton(className: string, text: string, title: string, action: () => void): HTMLButtonElement {
  const button = el('button', `kiln-LinkButton ${className}`, text);
  button.type = 'button';
  button.title = title;
  button.addEventListener('click', event => {
    event.preventDefault();
    action();
  });
  return button;
}

export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '–';
  }
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 120) {
    return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  }
  return `${Math.round(seconds / 60)} min`;
}

export function formatBytes(size: number | null | undefined): string {
  if (size === null || size === undefined) {
    return '';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** "3 min ago", "in 2 h": a moment relative to now. */
export function relativeTime(iso: string | null | undefined): string {
  if (!iso) {
    return '';
  }
  const delta = (Date.parse(iso) - Date.now()) / 1000;
  const size = Math.abs(delta);
  let text: string;
  if (size < 45) {
    text = `${Math.round(size)} s`;
  } else if (size < 2700) {
    text = `${Math.round(size / 60)} min`;
  } else if (size < 86400 * 1.5) {
    text = `${Math.round(size / 3600)} h`;
  } else {
    text = `${Math.round(size / 86400)} d`;
  }
  return delta < 0 ? `${text} ago` : `in ${text}`;
}

/** A parameter value as a user would type it. */
export function showValue(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(JSON.stringify(value));
}
