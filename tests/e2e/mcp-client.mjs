#!/usr/bin/env node
// Headless MCP client for the tower-mcp-auth end-to-end tests: drives the official MCP
// TypeScript SDK client (Client + StreamableHTTPClientTransport + an OAuthClientProvider)
// through the whole OAuth 2.1 flow without a browser.
//
// Usage: node mcp-client.mjs [--call TOOL]... [--cimd URL] [--step-up] [--no-auth]
//                             [--refresh] [--revoke] [--secrets-file PATH] MCP_URL
//
// stdout contract: exactly one JSON object (see README.md). Exit 0 with `"ok": true`, or exit 1
// with `{"ok": false, "error": ..., "trace": [...]}`. Diagnostics go to stderr. The access
// token, the authorization code and the PKCE verifier are never printed; `--secrets-file PATH`
// writes them, and the other secrets of the run (refresh tokens, client secrets, cookies, form
// secrets, client assertions), to PATH (mode 0600) so a test can check that no log contains them.
//
// The headless browser follows redirects, and submits the HTML forms of login and consent
// pages like a browser would (hidden inputs, the `decision=approve` button, cookies, Origin).
// --refresh and --revoke exercise the token and revocation endpoints directly afterwards.

import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

// Keep stdout for the one JSON result, whatever a library logs.
for (const method of ['log', 'info', 'debug', 'warn']) {
  console[method] = (...args) => console.error(...args);
}

const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { UnauthorizedError } = await import('@modelcontextprotocol/sdk/client/auth.js');

const HARD_LIMIT_MS = 60_000; // whole run
const RESPONSE_HEADERS_TIMEOUT_MS = 10_000; // each HTTP exchange until its response headers
const REQUEST_TIMEOUT_MS = 15_000; // each MCP request (initialize, tools/list, tools/call)
const AUTHORIZE_HOP_TIMEOUT_MS = 5_000; // each hop of the headless "browser"
const AUTHORIZE_TOTAL_TIMEOUT_MS = 20_000; // one whole authorization round
const MAX_AUTHORIZE_HOPS = 16;
const MAX_FORMS = 4; // HTML forms submitted in one authorization round
const MAX_PAGE_BYTES = 256 * 1024; // largest HTML page read by the headless browser
// Nothing listens here: the headless browser stops at the redirect that targets it.
const REDIRECT_URI = 'http://127.0.0.1:53682/callback';
const CLIENT_INFO = { name: 'tower-mcp-auth-e2e-client', version: '0.1.0' };

const trace = []; // every HTTP exchange the SDK made: "METHOD URL -> STATUS"
const authorizations = []; // each authorization round the headless browser performed
// Secrets seen during the run, for --secrets-file only (never printed).
const secrets = {
  accessTokens: [], authorizationCodes: [], codeVerifiers: [], refreshTokens: [], clientSecrets: [], hopCodes: [],
  formSecrets: [], cookies: [], assertions: [],
};
function recordSecret(kind, value) {
  if (typeof value === 'string' && value && !secrets[kind].includes(value)) secrets[kind].push(value);
}
let secretsFile; // set by --secrets-file

function writeSecrets() {
  if (!secretsFile) return;
  const last = (list) => (list.length ? list[list.length - 1] : null);
  const doc = {
    accessToken: last(secrets.accessTokens),
    authorizationCodes: secrets.authorizationCodes,
    codeVerifier: last(secrets.codeVerifiers),
    accessTokens: secrets.accessTokens,
    codeVerifiers: secrets.codeVerifiers,
    refreshTokens: secrets.refreshTokens,
    clientSecrets: secrets.clientSecrets,
    hopCodes: secrets.hopCodes,
    formSecrets: secrets.formSecrets,
    cookies: secrets.cookies,
    assertions: secrets.assertions,
  };
  try {
    writeFileSync(secretsFile, `${JSON.stringify(doc)}\n`, { mode: 0o600 });
  } catch (err) {
    process.stderr.write(`mcp-client.mjs: cannot write --secrets-file: ${err.message}\n`);
  }
}

let finished = false;
function emit(result, code) {
  if (finished) return;
  finished = true;
  writeSecrets();
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exit(code);
}
function errorText(err) {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? (err.cause.code ?? err.cause.message) : undefined;
  return cause && !err.message.includes(cause) ? `${err.message} (${cause})` : err.message;
}
function failAndExit(err) {
  const message = errorText(err);
  process.stderr.write(`mcp-client.mjs: ${err?.stack ?? message}\n`);
  emit({ ok: false, error: message, trace, authorizations }, 1);
}
setTimeout(() => failAndExit(new Error(`hard timeout: run exceeded ${HARD_LIMIT_MS / 1000}s`)), HARD_LIMIT_MS).unref();
process.on('unhandledRejection', (err) => failAndExit(err));

function parseCli(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      call: { type: 'string', multiple: true },
      cimd: { type: 'string' },
      'step-up': { type: 'boolean', default: false },
      'no-auth': { type: 'boolean', default: false },
      refresh: { type: 'boolean', default: false },
      revoke: { type: 'boolean', default: false },
      'secrets-file': { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) {
    throw new Error('usage: node mcp-client.mjs [--call TOOL]... [--cimd URL] [--step-up] [--no-auth] [--refresh] [--revoke] [--secrets-file PATH] MCP_URL');
  }
  if (values['no-auth'] && (values.refresh || values.revoke)) throw new Error('--refresh and --revoke need authorization (not --no-auth)');
  const url = URL.parse(positionals[0]);
  if (!url || !/^https?:$/.test(url.protocol)) throw new Error(`MCP_URL must be an http(s) URL: ${positionals[0]}`);
  secretsFile = values['secrets-file'];
  return {
    mcpUrl: url,
    calls: values.call ?? [],
    cimd: values.cimd,
    stepUp: values['step-up'],
    noAuth: values['no-auth'],
    refresh: values.refresh,
    revoke: values.revoke,
  };
}

// A client assertion (private_key_jwt, RFC 7523) in a form body sent to the authorization
// server. The client authenticates with `none` or a client secret today; this keeps
// `assertions` complete if the SDK ever signs one (its token requests all pass tracingFetch).
function recordAssertion(init) {
  let form = null;
  if (init.body instanceof URLSearchParams) form = init.body;
  else if (typeof init.body === 'string'
    && /^application\/x-www-form-urlencoded\b/i.test(new Headers(init.headers).get('content-type') ?? '')) {
    form = new URLSearchParams(init.body);
  }
  recordSecret('assertions', form?.get('client_assertion'));
}

// fetch wrapper given to the SDK: records each exchange and bounds the wait for response
// headers (not the body: the SDK's GET event stream is long-lived by design).
function tracingFetch(input, init = {}) {
  const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
  const url = input instanceof Request ? input.url : String(input);
  recordAssertion(init);
  const headersTimeout = new AbortController();
  const timer = setTimeout(
    () => headersTimeout.abort(new Error(`no response from ${method} ${url} within ${RESPONSE_HEADERS_TIMEOUT_MS / 1000}s`)),
    RESPONSE_HEADERS_TIMEOUT_MS,
  );
  const signal = init.signal ? AbortSignal.any([init.signal, headersTimeout.signal]) : headersTimeout.signal;
  return fetch(input, { ...init, signal }).then(
    (res) => {
      clearTimeout(timer);
      trace.push(`${method} ${url} -> ${res.status}`);
      // Not kept (the SDK sends no cookies), but a cookie set here is a secret all the same.
      for (const header of res.headers.getSetCookie()) recordCookie(parseSetCookie(new URL(url), header));
      return res;
    },
    (err) => {
      clearTimeout(timer);
      trace.push(`${method} ${url} -> ERROR ${errorText(err)}`);
      throw err;
    },
  );
}

// One Set-Cookie header received from `url`: { name, value, path, expired }, or null.
function parseSetCookie(url, header) {
  const [pair, ...attrs] = header.split(';');
  const eq = pair.indexOf('=');
  if (eq <= 0) return null;
  const name = pair.slice(0, eq).trim();
  const value = pair.slice(eq + 1).trim();
  let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
  let expired = false;
  for (const attr of attrs) {
    const i = attr.indexOf('=');
    const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
    const val = i < 0 ? '' : attr.slice(i + 1).trim();
    if (key === 'path' && val.startsWith('/')) path = val;
    if (key === 'max-age' && Number(val) <= 0) expired = true;
    if (key === 'expires' && Date.parse(val) <= Date.now()) expired = true;
  }
  return { name, value, path, expired };
}

// Every cookie value a server sets is a secret (session, interaction and browser-binding
// cookies). A cookie being deleted (expired) carries none: its value is empty or a placeholder.
function recordCookie(cookie) {
  if (cookie && !cookie.expired) recordSecret('cookies', cookie.value);
}

// Minimal cookie jar for the headless browser (host-only cookies, path-matched, expiry honoured).
class CookieJar {
  constructor() {
    this.cookies = new Map(); // `${host}|${path}|${name}` -> { host, path, name, value }
  }

  store(url, setCookieHeaders) {
    for (const header of setCookieHeaders) {
      const cookie = parseSetCookie(url, header);
      if (!cookie) continue;
      recordCookie(cookie);
      const { name, value, path, expired } = cookie;
      const id = `${url.host}|${path}|${name}`;
      if (expired) this.cookies.delete(id);
      else this.cookies.set(id, { host: url.host, path, name, value });
    }
  }

  header(url) {
    const matching = [...this.cookies.values()].filter((c) => c.host === url.host
      && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)));
    matching.sort((a, b) => b.path.length - a.path.length);
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

function withoutQuery(url) {
  return `${url.origin}${url.pathname}`;
}

function decodeJwt(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return { header: null, claims: null };
  try {
    return {
      header: JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')),
      claims: JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')),
    };
  } catch {
    return { header: null, claims: null };
  }
}

// --- The headless browser's HTML forms (our pages are small and regular; no DOM needed). ---

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'", '#x27': "'", '#x2F': '/', '#x2f': '/' };
function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name in ENTITIES) return ENTITIES[name];
    if (/^#x/i.test(name)) return String.fromCodePoint(parseInt(name.slice(2), 16));
    if (name.startsWith('#')) return String.fromCodePoint(Number(name.slice(1)));
    return whole;
  });
}

function attributes(tag) {
  const attrs = {};
  const re = /([^\s"'<>\/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  const inner = tag.replace(/^<\s*[a-z0-9]+/i, '').replace(/\/?>$/, '');
  for (const m of inner.matchAll(re)) {
    attrs[m[1].toLowerCase()] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

// The first `<form method="post">` of a page: its action, the hidden inputs, and the submit
// button to press (the one with `decision=approve` when there is one, else the first unnamed
// or named submit button). null when the page has no such form.
function postForm(html) {
  for (const m of html.matchAll(/<form\b[^>]*>([\s\S]*?)<\/form\s*>/gi)) {
    const open = attributes(/<form\b[^>]*>/i.exec(m[0])[0]);
    if ((open.method ?? 'get').toLowerCase() !== 'post') continue;
    const fields = [];
    const buttons = [];
    for (const tag of m[1].matchAll(/<(input|button)\b[^>]*>/gi)) {
      const a = attributes(tag[0]);
      const type = (a.type ?? (tag[1].toLowerCase() === 'button' ? 'submit' : 'text')).toLowerCase();
      if (type === 'hidden' && a.name) fields.push([a.name, a.value ?? '']);
      else if (type === 'submit') buttons.push(a);
    }
    const button = buttons.find((b) => b.name === 'decision' && b.value === 'approve') ?? buttons[0];
    return { action: open.action ?? '', fields, button: button ?? null };
  }
  return null;
}

// Reads at most MAX_PAGE_BYTES of a response body as text.
async function pageText(res) {
  const reader = res.body?.getReader();
  if (!reader) return '';
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_PAGE_BYTES) {
      await reader.cancel().catch(() => {});
      throw new Error(`page larger than ${MAX_PAGE_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// Hidden form values that are secrets of the server (request handles, CSRF tokens, states).
const SECRET_FIELDS = new Set(['request', 'csrf', 'state']);

class StepUpDeclinedError extends Error {}

// OAuthClientProvider kept in memory for one run. Its "user agent" follows the authorization
// server's redirects with fetch until one targets REDIRECT_URI.
class HeadlessOAuthProvider {
  constructor({ cimd, allowReauthorization }) {
    this.cimd = cimd;
    this.allowReauthorization = allowReauthorization;
    this.pendingCode = undefined;
    this.states = new Set();
  }

  get redirectUrl() {
    return REDIRECT_URI;
  }

  get clientMetadataUrl() {
    return this.cimd; // used by the SDK only when the AS advertises CIMD support
  }

  get clientMetadata() {
    return {
      client_name: 'tower-mcp-auth e2e headless client',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
    };
  }

  state() {
    const state = crypto.randomUUID();
    this.states.add(state);
    return state;
  }

  clientInformation() {
    return this.client;
  }

  saveClientInformation(info) {
    this.client = info;
    recordSecret('clientSecrets', info?.client_secret);
  }

  tokens() {
    return this.tokenSet;
  }

  saveTokens(tokens) {
    this.tokenSet = tokens;
    recordSecret('accessTokens', tokens?.access_token);
    recordSecret('refreshTokens', tokens?.refresh_token);
  }

  saveCodeVerifier(verifier) {
    this.verifier = verifier;
    recordSecret('codeVerifiers', verifier);
  }

  codeVerifier() {
    if (!this.verifier) throw new Error('no PKCE code verifier saved');
    return this.verifier;
  }

  saveDiscoveryState(state) {
    // Recorded for the report only; not handed back (no discoveryState()), so the SDK runs
    // full discovery on every auth() call, as a client without a cache would.
    this.discovery = state;
  }

  invalidateCredentials(scope) {
    process.stderr.write(`mcp-client.mjs: SDK invalidated credentials: ${scope}\n`);
    if (scope === 'all' || scope === 'tokens') this.tokenSet = undefined;
    if (scope === 'all' || scope === 'client') this.client = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = undefined;
  }

  async redirectToAuthorization(authorizationUrl) {
    const url = new URL(authorizationUrl);
    const params = Object.fromEntries(url.searchParams);
    if (params.code_challenge) params.code_challenge = '(present)';
    const round = { endpoint: withoutQuery(url), params, hops: [], result: undefined };
    authorizations.push(round);

    if (authorizations.length > 1 && !this.allowReauthorization) {
      round.result = 'declined';
      throw new StepUpDeclinedError(
        `authorization requested again (scope "${params.scope ?? ''}") and not followed; pass --step-up to follow it`,
      );
    }

    const sentState = url.searchParams.get('state');
    if (!sentState || !this.states.has(sentState)) throw new Error('authorization URL carries an unknown state');

    const deadline = AbortSignal.timeout(AUTHORIZE_TOTAL_TIMEOUT_MS);
    const jar = new CookieJar();
    round.forms = [];
    // The next request: a GET of a redirect target, or the POST of a form.
    let next = { method: 'GET', url, body: undefined, origin: undefined };
    for (let hop = 0; hop < MAX_AUTHORIZE_HOPS; hop++) {
      const headers = {};
      const cookie = jar.header(next.url);
      if (cookie) headers.cookie = cookie;
      if (next.body !== undefined) {
        headers['content-type'] = 'application/x-www-form-urlencoded';
        headers.origin = next.origin;
      }
      const res = await fetch(next.url, {
        method: next.method,
        redirect: 'manual',
        headers,
        body: next.body,
        signal: AbortSignal.any([deadline, AbortSignal.timeout(AUTHORIZE_HOP_TIMEOUT_MS)]),
      });
      jar.store(next.url, res.headers.getSetCookie());
      round.hops.push(`${next.method} ${withoutQuery(next.url)} -> ${res.status}`);
      const location = res.headers.get('location');
      if (location && res.status >= 300 && res.status <= 399) {
        await res.body?.cancel();
        const target = new URL(location, next.url);
        if (withoutQuery(target) === REDIRECT_URI) {
          this.finishRound(round, target, sentState);
          return;
        }
        // A code on its way elsewhere (an upstream provider's code to the server's callback).
        recordSecret('hopCodes', target.searchParams.get('code'));
        // 307/308 repeat the request; every other redirect becomes a GET.
        next = res.status === 307 || res.status === 308
          ? { ...next, url: target }
          : { method: 'GET', url: target, body: undefined, origin: undefined };
        continue;
      }
      const type = res.headers.get('content-type') ?? '';
      const page = res.status === 200 && /^text\/html\b/i.test(type) ? await pageText(res) : undefined;
      const form = page === undefined ? null : postForm(page);
      if (!form) {
        const body = (page ?? await res.text().catch(() => '')).slice(0, 300);
        round.result = 'failed';
        throw new Error(`authorization hop ${hop}: HTTP ${res.status} without redirect or form: ${body}`);
      }
      if (round.forms.length >= MAX_FORMS) {
        round.result = 'failed';
        throw new Error(`authorization round submitted ${MAX_FORMS} forms without reaching the redirect_uri`);
      }
      // Submit it like a browser: the action resolved against the page URL, every hidden
      // input, the chosen button's name=value, cookies, and the page's Origin.
      const action = new URL(form.action || next.url.href, next.url);
      const fields = [...form.fields];
      if (form.button?.name) fields.push([form.button.name, form.button.value ?? '']);
      for (const [name, value] of form.fields) if (SECRET_FIELDS.has(name)) recordSecret('formSecrets', value);
      round.hops[round.hops.length - 1] += ' (form)';
      round.forms.push({
        page: withoutQuery(next.url),
        action: withoutQuery(action),
        fields: fields.map(([name]) => name),
        button: form.button?.name ? `${form.button.name}=${form.button.value ?? ''}` : null,
      });
      next = { method: 'POST', url: action, body: new URLSearchParams(fields).toString(), origin: next.url.origin };
    }
    round.result = 'failed';
    throw new Error(`authorization did not reach the redirect_uri within ${MAX_AUTHORIZE_HOPS} hops`);
  }

  // The authorization response at REDIRECT_URI: checks state, keeps the code for the SDK.
  finishRound(round, target, sentState) {
    const p = target.searchParams;
    round.callbackParams = [...p.keys()];
    if (p.get('state') !== sentState) {
      round.result = 'failed';
      throw new Error('state mismatch in authorization response');
    }
    this.states.delete(sentState);
    round.iss = p.get('iss');
    if (p.get('error')) {
      round.result = 'failed';
      round.error = p.get('error');
      throw new Error(`authorization error: ${p.get('error')}${p.get('error_description') ? ` (${p.get('error_description')})` : ''}`);
    }
    if (!p.get('code')) {
      round.result = 'failed';
      throw new Error('authorization response without code');
    }
    this.pendingCode = p.get('code');
    recordSecret('authorizationCodes', this.pendingCode);
    round.result = 'code';
  }

  takeCode() {
    const code = this.pendingCode;
    this.pendingCode = undefined;
    return code;
  }
}

// --- Direct calls outside the SDK (--refresh, --revoke). ---

// The first JSON-RPC message with `id` in a JSON or event-stream response body.
async function jsonRpcResponse(res, id) {
  const type = res.headers.get('content-type') ?? '';
  if (/^application\/json\b/i.test(type)) {
    const message = JSON.parse(await pageText(res));
    return (Array.isArray(message) ? message : [message]).find((m) => m?.id === id) ?? null;
  }
  if (!/^text\/event-stream\b/i.test(type) || !res.body) {
    await res.body?.cancel().catch(() => {});
    return null;
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return null;
      buffer += value.replace(/\r\n?/g, '\n');
      if (buffer.length > MAX_PAGE_BYTES) throw new Error('event stream too large');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        let message;
        try {
          message = JSON.parse(data);
        } catch {
          continue;
        }
        if (message?.id === id) return message;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

// One raw `tools/call` of `name` (no arguments) with `accessToken`, in the SDK's MCP session.
// Returns {status, wwwAuthenticate, whoami?}: for a 200 whoami, the parsed token it describes.
async function rawToolCall(mcpUrl, transport, accessToken, name, id) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  if (transport.protocolVersion) headers['MCP-Protocol-Version'] = transport.protocolVersion;
  if (transport.sessionId) headers['Mcp-Session-Id'] = transport.sessionId;
  const res = await fetch(mcpUrl, {
    method: 'POST',
    headers,
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const out = { status: res.status, wwwAuthenticate: res.headers.get('www-authenticate') };
  if (res.status !== 200) {
    await res.body?.cancel().catch(() => {});
    return out;
  }
  const message = await jsonRpcResponse(res, id);
  if (message?.error) out.error = message.error;
  const text = message?.result?.content?.[0]?.text;
  if (message?.result?.isError) out.isError = true;
  if (name === 'whoami' && typeof text === 'string') {
    try {
      out.whoami = JSON.parse(text);
    } catch {
      out.text = text;
    }
  }
  return out;
}

// A form POST to one of the authorization server's endpoints, authenticated as the client
// registered (client_secret_basic, client_secret_post, or client_id alone for `none`).
async function clientPost(endpoint, client, params) {
  const body = new URLSearchParams(params);
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' };
  const method = client.token_endpoint_auth_method ?? (client.client_secret ? 'client_secret_basic' : 'none');
  if (method === 'client_secret_basic') {
    const enc = (v) => encodeURIComponent(v).replace(/%20/g, '+');
    headers.Authorization = `Basic ${Buffer.from(`${enc(client.client_id)}:${enc(client.client_secret)}`).toString('base64')}`;
  } else {
    body.set('client_id', client.client_id);
    if (method === 'client_secret_post') body.set('client_secret', client.client_secret);
  }
  const res = await tracingFetch(endpoint, {
    method: 'POST', headers, body: body.toString(), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await pageText(res);
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: recorded as null
  }
  return { status: res.status, json, cacheControl: res.headers.get('cache-control') };
}

function oauthError(json) {
  return typeof json?.error === 'string' ? json.error : null;
}

function describeError(err) {
  const out = { error: errorText(err) };
  if (err && typeof err === 'object' && 'code' in err && err.code !== undefined) out.code = err.code;
  if (err instanceof UnauthorizedError) out.unauthorized = true;
  return out;
}

// Run `fn`; when the SDK had to authorize (UnauthorizedError after our browser obtained a
// code), exchange the code and try `fn` once more.
async function withAuthorization(provider, transport, fn) {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    const code = provider.takeCode();
    if (!code) throw err;
    await transport.finishAuth(code);
    return await fn();
  }
}

async function main() {
  const {
    mcpUrl, calls: toCall, cimd, stepUp, noAuth, refresh: wantRefresh, revoke: wantRevoke,
  } = parseCli(process.argv.slice(2));
  const provider = new HeadlessOAuthProvider({ cimd, allowReauthorization: stepUp });
  // --no-auth: no OAuth provider at all (for servers without authorization).
  const newTransport = () => new StreamableHTTPClientTransport(
    mcpUrl,
    noAuth ? { fetch: tracingFetch } : { authProvider: provider, fetch: tracingFetch },
  );
  const onerror = (err) => process.stderr.write(`mcp-client.mjs: transport error: ${err?.message ?? err}\n`);

  // 1. Unauthenticated connect: 401 -> discovery -> registration -> authorization (headless).
  let transport = newTransport();
  let client = new Client(CLIENT_INFO);
  client.onerror = onerror;
  try {
    await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    const code = provider.takeCode();
    if (!code) throw new Error(`connect failed before any authorization code was obtained: ${err.message}`);
    // 2. Code exchange (with code_verifier and resource), then a fresh connection.
    await transport.finishAuth(code);
    await transport.close().catch(() => {});
    transport = newTransport();
    client = new Client(CLIENT_INFO);
    client.onerror = onerror;
    await client.connect(transport, { timeout: REQUEST_TIMEOUT_MS });
  }
  if (!noAuth && !provider.tokens()?.access_token) throw new Error('connected without the SDK obtaining an access token');

  // 3. Tools.
  const listed = await withAuthorization(provider, transport, () => client.listTools(undefined, { timeout: REQUEST_TIMEOUT_MS }));
  const tools = listed.tools.map((t) => t.name);

  const calls = {};
  for (const name of toCall) {
    let key = name;
    for (let n = 2; key in calls; n++) key = `${name}#${n}`;
    const args = name === 'echo' ? { text: 'hello' } : {};
    try {
      const call = () => client.callTool({ name, arguments: args }, undefined, { timeout: REQUEST_TIMEOUT_MS });
      calls[key] = stepUp ? await withAuthorization(provider, transport, call) : await call();
    } catch (err) {
      calls[key] = describeError(err);
    }
  }

  // 4. Raw tools/call of admin_ping with the SDK's token (none with --no-auth), outside the SDK.
  const accessToken = provider.tokens()?.access_token;
  const headers = {
    'Content-Type': 'application/json',
    Accept: 'application/json, text/event-stream',
  };
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  if (transport.protocolVersion) headers['MCP-Protocol-Version'] = transport.protocolVersion;
  if (transport.sessionId) headers['Mcp-Session-Id'] = transport.sessionId;
  const raw = await fetch(mcpUrl, {
    method: 'POST',
    headers,
    body: JSON.stringify({
      jsonrpc: '2.0', id: 'raw-admin-ping', method: 'tools/call', params: { name: 'admin_ping', arguments: {} },
    }),
    signal: AbortSignal.timeout(RESPONSE_HEADERS_TIMEOUT_MS),
  });
  const adminPingRaw = { status: raw.status, wwwAuthenticate: raw.headers.get('www-authenticate') };
  await raw.body?.cancel().catch(() => {});

  // 5. --refresh / --revoke: the token and revocation endpoints, called directly.
  const asMetadata = provider.discovery?.authorizationServerMetadata;
  const registered = provider.clientInformation();
  const resource = provider.discovery?.resourceMetadata?.resource;
  let refresh;
  let revoke;
  let grantRevoked = false;
  const oldRefreshToken = provider.tokens()?.refresh_token;
  if (wantRefresh) {
    if (!asMetadata?.token_endpoint || !registered) throw new Error('--refresh: no token endpoint or client known');
    if (!oldRefreshToken) throw new Error('--refresh: the authorization server issued no refresh token');
    const params = { grant_type: 'refresh_token', refresh_token: oldRefreshToken };
    if (resource) params.resource = resource;
    const res = await clientPost(asMetadata.token_endpoint, registered, params);
    refresh = {
      refreshStatus: res.status,
      refreshError: oauthError(res.json),
      cacheControl: res.cacheControl,
      tokenType: res.json?.token_type ?? null,
      scope: res.json?.scope ?? null,
      newAccessToken: Boolean(res.json?.access_token),
      newAccessTokenDiffers: Boolean(res.json?.access_token) && res.json.access_token !== accessToken,
      newRefreshToken: Boolean(res.json?.refresh_token),
      newRefreshTokenDiffers: Boolean(res.json?.refresh_token) && res.json.refresh_token !== oldRefreshToken,
    };
    if (res.status === 200 && res.json?.access_token) {
      provider.saveTokens(res.json); // the SDK's token set: the current tokens from now on
      const who = await rawToolCall(mcpUrl, transport, res.json.access_token, 'whoami', 'raw-whoami-refreshed');
      refresh.newWhoamiStatus = who.status;
      refresh.newWhoami = who.whoami ?? null;
      if (who.error) refresh.newWhoamiError = who.error;
    }
  }
  if (wantRevoke) {
    const endpoint = asMetadata?.revocation_endpoint;
    const current = provider.tokens();
    if (!endpoint || !registered) throw new Error('--revoke: the authorization server advertises no revocation_endpoint');
    if (!current?.refresh_token) throw new Error('--revoke: no refresh token to revoke');
    const res = await clientPost(endpoint, registered, { token: current.refresh_token, token_type_hint: 'refresh_token' });
    const after = await rawToolCall(mcpUrl, transport, current.access_token, 'whoami', 'raw-whoami-revoked');
    const again = await clientPost(asMetadata.token_endpoint, registered, {
      grant_type: 'refresh_token', refresh_token: current.refresh_token, ...(resource ? { resource } : {}),
    });
    revoke = {
      revokeStatus: res.status,
      afterRevokeStatus: after.status,
      afterRevokeWwwAuthenticate: after.wwwAuthenticate,
      refreshAfterRevokeStatus: again.status,
      refreshAfterRevokeError: oauthError(again.json),
    };
    grantRevoked = true;
  }
  if (wantRefresh && refresh.refreshStatus === 200) {
    // The rotated-out refresh token again: refused (and, per RFC 9700, the grant revoked).
    const params = { grant_type: 'refresh_token', refresh_token: oldRefreshToken };
    if (resource) params.resource = resource;
    const res = await clientPost(asMetadata.token_endpoint, registered, params);
    refresh.oldRefreshStatus = res.status;
    refresh.oldRefreshError = oauthError(res.json);
    const after = await rawToolCall(mcpUrl, transport, provider.tokens()?.access_token, 'whoami', 'raw-whoami-reused');
    refresh.afterReuseStatus = after.status;
    grantRevoked ||= after.status === 401;
  }

  // 6. End the MCP session politely (best effort; not once the grant is revoked, when the SDK
  // would start a new authorization to do it), then report.
  if (transport.sessionId && !grantRevoked) {
    await Promise.race([
      transport.terminateSession().catch(() => {}),
      new Promise((resolve) => { setTimeout(resolve, 3_000).unref(); }),
    ]);
  }
  await client.close().catch(() => {});

  const { header, claims } = decodeJwt(accessToken);
  const first = authorizations[0];
  emit({
    ok: true,
    clientId: provider.clientInformation()?.client_id ?? null,
    grantedScope: provider.tokens()?.scope ?? null,
    hasRefreshToken: Boolean(provider.tokens()?.refresh_token),
    accessTokenHeader: header,
    accessTokenClaims: claims,
    issInRedirect: first?.iss ?? null,
    protocolVersion: transport.protocolVersion ?? null,
    sessionIssued: Boolean(headers['Mcp-Session-Id']),
    discovery: provider.discovery ? {
      authorizationServerUrl: provider.discovery.authorizationServerUrl ?? null,
      issuer: provider.discovery.authorizationServerMetadata?.issuer ?? null,
      resource: provider.discovery.resourceMetadata?.resource ?? null,
      authorizationServers: provider.discovery.resourceMetadata?.authorization_servers ?? null,
      scopesSupported: provider.discovery.resourceMetadata?.scopes_supported ?? null,
    } : null,
    tools,
    calls,
    adminPingRaw,
    ...(wantRefresh ? { refresh } : {}),
    ...(wantRevoke ? { revoke } : {}),
    authorizations,
    trace,
  }, 0);
}

main().catch(failAndExit);
