// Building DOM nodes and formatting values for display. Everything the broker sends is put
// into the page as text nodes or attribute values, never parsed as HTML, so a queue named
// `<script>` stays a name.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : String(child));
  }
  return parent;
}

function applyProps(element, props) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (key === 'value' || key === 'checked' || key === 'selected') {
      element[key] = value;
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  return element;
}

// h('a', { href: '#/x', class: 'link' }, 'text', child, [more]) → an element.
export function h(tag, props, ...children) {
  return append(applyProps(document.createElement(tag), props), children);
}

export function svg(tag, props, ...children) {
  return append(applyProps(document.createElementNS(SVG_NS, tag), props), children);
}

export function replaceContent(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

// A labelled form control; the label's `for` lets tests and screen readers find it by name.
let controlCount = 0;
export function field(label, control, hint) {
  controlCount += 1;
  const id = control.id || `control-${controlCount}`;
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('span', { class: 'hint' }, hint) : null);
}

export function select(name, options, selected) {
  return h(
    'select',
    { name },
    options.map(([value, label]) => h('option', { value, selected: value === selected }, label)),
  );
}

const integerFormat = new Intl.NumberFormat('en-US');
const rateFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 1 });

export function formatCount(value) {
  return typeof value === 'number' && Number.isFinite(value) ? integerFormat.format(value) : '–';
}

export function formatRate(value) {
  return typeof value === 'number' && Number.isFinite(value) ? `${rateFormat.format(value)}/s` : '–';
}

// `{x_details: {rate}}` as a rate, or '–' when the broker does not report it.
export function rateOf(stats, key) {
  return stats?.[`${key}_details`]?.rate;
}

export function formatBytes(value) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${scaled} B` : `${scaled.toFixed(1)} ${units[unit]}`;
}

export function formatDuration(milliseconds) {
  if (typeof milliseconds !== 'number' || !Number.isFinite(milliseconds)) return '–';
  let seconds = Math.floor(milliseconds / 1000);
  const days = Math.floor(seconds / 86400);
  seconds %= 86400;
  const hours = Math.floor(seconds / 3600);
  seconds %= 3600;
  const minutes = Math.floor(seconds / 60);
  seconds %= 60;
  if (days) return `${days}d ${hours}h`;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${seconds}s`;
  return `${seconds}s`;
}

export function formatTime(date) {
  return date.toLocaleTimeString([], { hour12: false });
}

export function formatValue(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

// A definition list of an object's keys (arguments, properties, headers, policy definitions).
export function keyValues(object) {
  const entries = Object.entries(object ?? {});
  if (entries.length === 0) return h('span', { class: 'muted' }, '–');
  return h(
    'dl',
    { class: 'key-values' },
    entries.map(([key, value]) => [h('dt', null, key), h('dd', null, formatValue(value))]),
  );
}

// Short tags for an object's flags, as RabbitMQ's tables show them (D, AD, Excl, Args...).
export function featureTags(item) {
  const tags = [];
  if (item.durable) tags.push(['D', 'durable']);
  if (item.auto_delete) tags.push(['AD', 'auto-delete']);
  if (item.exclusive) tags.push(['Excl', 'exclusive']);
  if (item.internal) tags.push(['I', 'internal']);
  for (const key of Object.keys(item.arguments ?? {})) {
    tags.push([key.replace(/^x-/, ''), `${key}: ${formatValue(item.arguments[key])}`]);
  }
  if (tags.length === 0) return h('span', { class: 'muted' }, '–');
  return tags.map(([text, title]) => h('abbr', { class: 'tag', title }, text));
}

export function link(href, text) {
  return h('a', { href }, text);
}

// The hash route of a queue or exchange page ('' is the default exchange, amq.default in links).
export function objectHref(kind, vhost, name) {
  const shown = kind === 'exchanges' && name === '' ? 'amq.default' : name;
  return `#/${kind}/${encodeURIComponent(vhost)}/${encodeURIComponent(shown)}`;
}

export function exchangeLabel(name) {
  return name === '' ? '(AMQP default)' : name;
}

export function errorBox(message) {
  return h('p', { class: 'error', role: 'alert' }, message);
}
