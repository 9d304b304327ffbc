// The sign-in form: checks a broker user's name and password against the API and hands the
// user (name and tags, from /api/whoami) to the app.

import { signIn } from './api.js';
import { h, field } from './dom.js';

export function loginPage({ message, onSignedIn }) {
  const username = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password' });
  const outcome = h('p', { class: 'form-status error', role: 'alert' }, message ?? '');
  const submit = h('button', { type: 'submit' }, 'Log in');
  const form = h(
    'form',
    { class: 'login', 'aria-label': 'Log in' },
    h('h1', null, h('span', { class: 'brand-mark' }), 'Warren'),
    h('p', { class: 'hint' }, 'Log in with a broker user that has a management tag.'),
    field('Username', username),
    field('Password', password),
    h('div', { class: 'actions' }, submit),
    outcome,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    outcome.textContent = '';
    try {
      const user = await signIn(username.value, password.value);
      onSignedIn(user);
    } catch (error) {
      outcome.textContent = error.sessionRejected ? 'Login failed' : error.message;
      submit.disabled = false;
      password.select();
    }
  });
  return h('main', { class: 'login-page' }, form);
}
