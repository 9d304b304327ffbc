// The app: signs in (or resumes this tab's session), lays out the header and navigation,
// routes the URL's #fragment to a page, and refreshes the page and the overview samples
// every few seconds.

import { get, storedCredentials, forgetCredentials, onSessionRejected } from './api.js';
import { h, replaceContent, select, formatTime } from './dom.js';
import { loginPage } from './login.js';
import { overviewPage, recordOverview } from './overview.js';
import { listPage, LIST_PAGES } from './lists.js';
import { queuePage } from './queue.js';
import { exchangePage } from './exchange.js';

const REFRESH_KEY = 'warren.refresh-ms';
const DEFAULT_REFRESH_MS = 5000;
const REFRESH_CHOICES = [
  ['2000', 'every 2 seconds'],
  ['5000', 'every 5 seconds'],
  ['10000', 'every 10 seconds'],
  ['30000', 'every 30 seconds'],
  ['0', 'never'],
];

const root = document.getElementById('app');
// The signed-in state: { user, tags, view, timer, tick, header parts }; null when signed out.
let session = null;

function tagsOf(user) {
  if (Array.isArray(user?.tags)) return user.tags;
  return String(user?.tags ?? '').split(',').map((tag) => tag.trim()).filter(Boolean);
}

function refreshInterval() {
  const stored = sessionStorage.getItem(REFRESH_KEY);
  return REFRESH_CHOICES.some(([value]) => value === stored) ? Number(stored) : DEFAULT_REFRESH_MS;
}

function navigation(tags) {
  const admin = tags.includes('administrator');
  const items = [
    ['#/', 'Overview', true],
    ['#/connections', 'Connections', true],
    ['#/channels', 'Channels', true],
    ['#/exchanges', 'Exchanges', true],
    ['#/queues', 'Queues', true],
    ['#/users', 'Users', admin],
    ['#/vhosts', 'Virtual hosts', true],
    ['#/policies', 'Policies', admin || tags.includes('policymaker')],
  ];
  return items.filter(([, , shown]) => shown).map(([href, label]) => h('a', { href, class: 'tab' }, label));
}

// The #fragment's parts, each decoded: '#/queues/%2F/q' → ['queues', '/', 'q'].
function routeParts() {
  const raw = location.hash.replace(/^#\/?/, '');
  if (raw === '') return [];
  try {
    return raw.split('/').map(decodeURIComponent);
  } catch {
    return [raw];
  }
}

function pageFor(parts) {
  const [kind, vhost, name] = parts;
  if (parts.length === 0) return overviewPage();
  if (parts.length === 1 && LIST_PAGES.includes(kind)) return listPage(kind);
  if (parts.length === 3 && kind === 'queues') return queuePage(vhost, name, { navigate });
  if (parts.length === 3 && kind === 'exchanges') return exchangePage(vhost, name === 'amq.default' ? '' : name);
  return {
    title: 'Not found',
    element: h('div', { class: 'page' }, h('h1', null, 'Not found'), h('p', null, 'There is no such page. ', h('a', { href: '#/' }, 'Back to the overview'))),
    refresh: async () => {},
  };
}

function navigate(hash) {
  location.hash = hash;
}

function stopSession() {
  if (session) clearTimeout(session.timer);
  session = null;
}

function showLogin(message) {
  stopSession();
  document.title = 'Warren: log in';
  replaceContent(root, loginPage({ message, onSignedIn: startSession }));
  root.querySelector('input[name=username]')?.focus();
}

function logOut() {
  forgetCredentials();
  showLogin();
}

function startSession(user) {
  stopSession();
  const tags = tagsOf(user);
  const refreshChoice = select('refresh', REFRESH_CHOICES, String(refreshInterval()));
  refreshChoice.id = 'refresh-interval';
  const updated = h('span', { class: 'updated', 'aria-live': 'off' });
  const product = h('span', { class: 'product' });
  const banner = h('p', { class: 'banner', role: 'alert', hidden: true });
  const nav = h('nav', { class: 'tabs', 'aria-label': 'Pages' }, navigation(tags));
  const main = h('main', { class: 'content' });
  const header = h(
    'header',
    { class: 'top' },
    h('div', { class: 'brand' }, h('span', { class: 'brand-mark' }), 'Warren', product),
    h(
      'div',
      { class: 'session' },
      h('label', { for: refreshChoice.id }, 'Refresh'),
      refreshChoice,
      updated,
      h('span', { class: 'user' }, 'User ', h('strong', null, user.name), tags.length ? ` (${tags.join(', ')})` : ''),
      h('button', { type: 'button', class: 'secondary', onclick: logOut }, 'Log out'),
    ),
  );
  replaceContent(root, header, nav, banner, main);
  session = { user, tags, view: null, timer: null, tick: 0, nav, main, banner, updated, product };

  refreshChoice.addEventListener('change', () => {
    sessionStorage.setItem(REFRESH_KEY, refreshChoice.value);
    refreshNow();
  });
  showPage();
}

function showPage() {
  if (!session) return;
  const parts = routeParts();
  session.view = pageFor(parts);
  document.title = `Warren: ${session.view.title}`;
  const current = `#/${parts[0] ?? ''}`;
  for (const tab of session.nav.querySelectorAll('a')) {
    tab.classList.toggle('active', tab.getAttribute('href') === current);
    if (tab.getAttribute('href') === current) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  replaceContent(session.main, session.view.element);
  refreshNow();
}

function scheduleRefresh(current) {
  const interval = refreshInterval();
  if (interval > 0) current.timer = setTimeout(refreshNow, interval);
}

// Fetches the overview (header, chart samples) and refreshes the page, then plans the next
// round; a newer round (page change, interval change) supersedes a running one. A hidden
// tab asks nothing of the broker until it is shown again.
async function refreshNow() {
  if (!session) return;
  const current = session;
  clearTimeout(current.timer);
  current.tick += 1;
  const tick = current.tick;
  if (document.hidden) {
    scheduleRefresh(current);
    return;
  }
  let overview = null;
  let failure = null;
  try {
    overview = await get('/overview');
    recordOverview(overview);
    current.product.textContent = ` ${overview.product_version ?? ''} · ${overview.cluster_name ?? overview.node ?? ''}`;
  } catch (error) {
    failure = error;
  }
  if (session !== current || tick !== current.tick) return;
  try {
    await current.view.refresh(overview);
  } catch (error) {
    failure ??= error;
  }
  if (session !== current || tick !== current.tick) return;
  current.banner.hidden = !failure;
  current.banner.textContent = failure ? failure.message : '';
  if (!failure) current.updated.textContent = `updated ${formatTime(new Date())}`;
  scheduleRefresh(current);
}

onSessionRejected(() => {
  forgetCredentials();
  showLogin('Login failed: the broker no longer accepts these credentials.');
});
window.addEventListener('hashchange', showPage);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) refreshNow();
});

async function boot() {
  if (!storedCredentials()) {
    showLogin();
    return;
  }
  try {
    startSession(await get('/whoami'));
  } catch (error) {
    if (!error.sessionRejected) showLogin(error.message);
  }
}

boot();
