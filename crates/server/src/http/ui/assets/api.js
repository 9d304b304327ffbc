// The management API as the UI uses it: keeps the signed-in user's credentials for this
// browser tab (sessionStorage), sends them as HTTP basic auth with every request, and turns
// error answers into ApiError. Knows nothing of pages.

const CREDENTIALS_KEY = 'warren.credentials';

export class ApiError extends Error {
  // `sessionRejected`: the broker no longer accepts these credentials (as opposed to a
  // signed-in user who may not do this one thing).
  constructor(status, reason, sessionRejected = false) {
    super(reason);
    this.status = status;
    this.sessionRejected = sessionRejected;
  }
}

export function storedCredentials() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(CREDENTIALS_KEY) ?? 'null');
    if (typeof stored?.username === 'string' && typeof stored?.password === 'string') {
      return stored;
    }
  } catch {
    // Unreadable: treated as signed out.
  }
  return null;
}

export function forgetCredentials() {
  sessionStorage.removeItem(CREDENTIALS_KEY);
}

let sessionRejectedHandler = () => {};

// Called when a request made with the stored credentials is refused as a failed login.
export function onSessionRejected(handler) {
  sessionRejectedHandler = handler;
}

function basicAuthorization({ username, password }) {
  // btoa takes Latin-1 only; user names and passwords are UTF-8 on the wire.
  const bytes = new TextEncoder().encode(`${username}:${password}`);
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return `Basic ${btoa(binary)}`;
}

function reasonOf(data, response) {
  const reason = data?.reason ?? data?.error;
  if (typeof reason === 'string' && reason) return reason;
  if (reason !== undefined && reason !== null) return JSON.stringify(reason);
  return `${response.status} ${response.statusText}`.trim();
}

// `attempt`: credentials being tried at sign-in; otherwise the tab's stored ones are used.
async function request(method, path, body, attempt = null) {
  const credentials = attempt ?? storedCredentials();
  const headers = { Accept: 'application/json' };
  if (credentials) headers.Authorization = basicAuthorization(credentials);
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    // credentials 'omit': a refused login must not open the browser's own password prompt;
    // the Authorization header above is sent all the same.
    response = await fetch(`api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, `Cannot reach the broker (${error.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) {
    const loginRefused = response.status === 401 && response.headers.has('www-authenticate');
    const error = new ApiError(response.status, reasonOf(data, response), loginRefused);
    if (loginRefused && !attempt) sessionRejectedHandler(error);
    throw error;
  }
  return data;
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body ?? {});
export const del = (path) => request('DELETE', path);

// Checks the credentials with /api/whoami and keeps them if the broker accepts them.
export async function signIn(username, password) {
  const credentials = { username, password };
  const whoami = await request('GET', '/whoami', undefined, credentials);
  sessionStorage.setItem(CREDENTIALS_KEY, JSON.stringify(credentials));
  return whoami;
}

// `/kind/vhost/name` with each part escaped ('/' is a vhost name, not a separator).
export function objectPath(kind, ...parts) {
  return `/${kind}/${parts.map((part) => encodeURIComponent(part)).join('/')}`;
}

// A list path with query parameters; empty or null values are left out.
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}
