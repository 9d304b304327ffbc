// One exchange's page: its details, the bindings from and to it, and a publish form.

import { get, objectPath } from './api.js';
import { publishForm } from './forms.js';
import { bindingsTable } from './queue.js';
import { h, replaceContent, link, exchangeLabel, featureTags, keyValues, errorBox } from './dom.js';

// name: '' for the default exchange, which the API calls amq.default in paths.
export function exchangePage(vhost, name) {
  const path = objectPath('exchanges', vhost, name === '' ? 'amq.default' : name);
  const details = h('div', { class: 'table-scroll' });
  const outgoing = h('div', { class: 'table-scroll' });
  const incoming = h('div', { class: 'table-scroll' });

  const element = h(
    'div',
    { class: 'page exchange' },
    h('p', { class: 'breadcrumb' }, link('#/exchanges', 'Exchanges'), ' / ', vhost),
    h('h1', null, 'Exchange ', h('span', { class: 'object-name' }, exchangeLabel(name))),
    h('section', null, h('h2', null, 'Details'), details),
    name === ''
      ? h(
          'section',
          null,
          h('h2', null, 'Bindings'),
          h('p', { class: 'hint' }, 'The default exchange is implicitly bound to every queue, with a routing key equal to the queue name. Nothing can be bound to or unbound from it explicitly.'),
        )
      : [
          h('section', null, h('h2', null, 'Bindings from this exchange'), outgoing),
          h('section', null, h('h2', null, 'Bindings to this exchange'), incoming),
        ],
    h('section', null, h('h2', null, 'Publish message'), publishForm({ vhost, exchange: name })),
  );

  async function showBindings(target, direction, options) {
    try {
      replaceContent(target, bindingsTable((await get(`${path}/bindings/${direction}`)) ?? [], options));
    } catch (error) {
      replaceContent(target, errorBox(error.message));
    }
  }

  async function refresh() {
    try {
      const exchange = await get(path);
      replaceContent(
        details,
        h(
          'table',
          { class: 'data details' },
          h(
            'tbody',
            null,
            h('tr', null, h('th', { scope: 'row' }, 'Virtual host'), h('td', null, exchange.vhost ?? vhost)),
            h('tr', null, h('th', { scope: 'row' }, 'Type'), h('td', null, exchange.type ?? '')),
            h('tr', null, h('th', { scope: 'row' }, 'Features'), h('td', null, featureTags(exchange))),
            h('tr', null, h('th', { scope: 'row' }, 'Arguments'), h('td', null, keyValues(exchange.arguments))),
          ),
        ),
      );
    } catch (error) {
      replaceContent(details, errorBox(error.status === 404 ? `No exchange '${exchangeLabel(name)}' in vhost '${vhost}'` : error.message));
      return;
    }
    if (name === '') return;
    await Promise.all([
      showBindings(outgoing, 'source', { showDestination: true }),
      showBindings(incoming, 'destination', { showSource: true }),
    ]);
  }

  return { title: `Exchange ${exchangeLabel(name)}`, element, refresh };
}
