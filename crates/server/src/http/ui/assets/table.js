// A listing table with a name filter, sortable columns and pages. Long listings (queues,
// exchanges, connections, channels) are filtered, sorted and paged by the broker through the
// API's `page`, `page_size`, `name`, `sort` and `sort_reverse` parameters, so the browser only
// ever holds one page; short ones (users, vhosts, policies) are fetched whole and handled here.

import { get, withQuery } from './api.js';
import { h, replaceContent, formatCount, errorBox } from './dom.js';

const PAGE_SIZES = [20, 100, 500];
const DEFAULT_PAGE_SIZE = 100;
const FILTER_DELAY_MS = 300;

// Each table's filter, sort and page survive leaving and coming back to its page.
const remembered = new Map();

function lookup(item, path) {
  return path.split('.').reduce((value, part) => value?.[part], item);
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === undefined || a === null) return -1;
  if (b === undefined || b === null) return 1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a) < String(b) ? -1 : 1;
}

// The whole list, filtered, sorted and cut into a page here, in the API's page shape.
function pageLocally(items, { filter, sort, reverse, page, pageSize }) {
  let kept = filter ? items.filter((item) => String(item.name ?? '').includes(filter)) : items.slice();
  if (sort) kept.sort((a, b) => compare(lookup(a, sort), lookup(b, sort)));
  if (reverse) kept.reverse();
  const pageCount = Math.max(1, Math.ceil(kept.length / pageSize));
  return {
    items: kept.slice((page - 1) * pageSize, page * pageSize),
    filtered_count: kept.length,
    total_count: items.length,
    page_count: pageCount,
  };
}

// columns: [{ label, sort?: API key, cell: item => node or text, numeric?: bool }]
// path: () => the API list path; paged: whether the broker pages it.
export function listTable({ id, title, columns, path, paged, emptyText = 'No items' }) {
  const state = remembered.get(id) ?? { filter: '', sort: null, reverse: false, page: 1, pageSize: DEFAULT_PAGE_SIZE };
  remembered.set(id, state);
  let generation = 0;

  const filterInput = h('input', { type: 'search', id: `${id}-filter`, value: state.filter, placeholder: 'name contains…', autocomplete: 'off' });
  const pageSizeSelect = h(
    'select',
    { id: `${id}-page-size` },
    PAGE_SIZES.map((size) => h('option', { value: String(size), selected: size === state.pageSize }, String(size))),
  );
  const summary = h('span', { class: 'summary', 'aria-live': 'polite' });
  const head = h('thead');
  const body = h('tbody');
  const previous = h('button', { type: 'button', class: 'secondary' }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'secondary' }, 'Next ›');
  const pageLabel = h('span', { class: 'page-label' });
  const element = h(
    'section',
    { class: 'list', id },
    h('h2', null, title),
    h(
      'div',
      { class: 'toolbar' },
      h('label', { for: filterInput.id }, 'Filter'),
      filterInput,
      h('label', { for: pageSizeSelect.id }, 'Page size'),
      pageSizeSelect,
      summary,
    ),
    h('div', { class: 'table-scroll' }, h('table', { class: 'data' }, head, body)),
    h('nav', { class: 'pager', 'aria-label': `${title} pages` }, previous, pageLabel, next),
  );

  function renderHead() {
    replaceContent(
      head,
      h(
        'tr',
        null,
        columns.map((column) => {
          const sorted = column.sort && column.sort === state.sort;
          const ariaSort = sorted ? (state.reverse ? 'descending' : 'ascending') : null;
          const content = column.sort
            ? h(
                'button',
                { type: 'button', class: 'sort', onclick: () => sortBy(column.sort) },
                column.label,
                sorted ? (state.reverse ? ' ▼' : ' ▲') : '',
              )
            : column.label;
          return h('th', { class: column.numeric ? 'numeric' : null, 'aria-sort': ariaSort, scope: 'col' }, content);
        }),
      ),
    );
  }

  function sortBy(key) {
    if (state.sort === key) {
      state.reverse = !state.reverse;
    } else {
      state.sort = key;
      state.reverse = false;
    }
    state.page = 1;
    renderHead();
    refresh();
  }

  let filterTimer = null;
  filterInput.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      state.filter = filterInput.value;
      state.page = 1;
      refresh();
    }, FILTER_DELAY_MS);
  });
  pageSizeSelect.addEventListener('change', () => {
    state.pageSize = Number(pageSizeSelect.value);
    state.page = 1;
    refresh();
  });
  previous.addEventListener('click', () => {
    state.page = Math.max(1, state.page - 1);
    refresh();
  });
  next.addEventListener('click', () => {
    state.page += 1;
    refresh();
  });

  async function fetchPage() {
    if (!paged) return pageLocally((await get(path())) ?? [], state);
    return get(
      withQuery(path(), {
        page: state.page,
        page_size: state.pageSize,
        name: state.filter,
        sort: state.sort,
        sort_reverse: state.sort && state.reverse ? 'true' : null,
      }),
    );
  }

  function showRows(result) {
    const items = Array.isArray(result.items) ? result.items : [];
    if (items.length === 0) {
      replaceContent(body, h('tr', null, h('td', { colspan: columns.length, class: 'empty' }, state.filter ? 'No items match the filter' : emptyText)));
    } else {
      replaceContent(
        body,
        items.map((item) =>
          h(
            'tr',
            null,
            columns.map((column) => h('td', { class: column.numeric ? 'numeric' : null }, column.cell(item))),
          ),
        ),
      );
    }
    const first = items.length ? (state.page - 1) * state.pageSize + 1 : 0;
    const last = (state.page - 1) * state.pageSize + items.length;
    const filtered = result.filtered_count ?? items.length;
    const total = result.total_count ?? filtered;
    summary.textContent =
      `${formatCount(first)}–${formatCount(last)} of ${formatCount(filtered)}` +
      (filtered !== total ? ` (filtered from ${formatCount(total)})` : '');
    const pageCount = result.page_count ?? 1;
    pageLabel.textContent = `Page ${state.page} of ${pageCount}`;
    previous.disabled = state.page <= 1;
    next.disabled = state.page >= pageCount;
  }

  async function refresh() {
    generation += 1;
    const mine = generation;
    try {
      let result = await fetchPage();
      // The list shrank (or the filter narrowed it) under the page we were on.
      if (state.page > (result.page_count ?? 1)) {
        state.page = Math.max(1, result.page_count ?? 1);
        result = await fetchPage();
      }
      if (mine === generation) showRows(result);
    } catch (error) {
      if (mine !== generation) return;
      replaceContent(body, h('tr', null, h('td', { colspan: columns.length }, errorBox(error.message))));
      summary.textContent = '';
    }
  }

  renderHead();
  return { element, refresh };
}
