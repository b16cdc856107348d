#!/usr/bin/env node
// Headless MCP client for the tower-mcp-auth end-to-end tests: drives the official MCP
// TypeScript SDK client (Client + StreamableHTTPClientTransport + an OAuthClientProvider)
// through the whole OAuth 2.1 flow without a browser.
//
// Usage: node mcp-client.mjs [--call TOOL]... [--cimd URL] [--step-up] [--no-auth]
//                             [--secrets-file PATH] MCP_URL
//
// stdout contract: exactly one JSON object (see README.md). Exit 0 with `"ok": true`, or exit 1
// with `{"ok": false, "error": ..., "trace": [...]}`. Diagnostics go to stderr. The access
// token, the authorization code and the PKCE verifier are never printed; `--secrets-file PATH`
// writes them to PATH (mode 0600) so a test can check that no log contains them.

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
const MAX_AUTHORIZE_HOPS = 10;
// Nothing listens here: the headless browser stops at the redirect that targets it.
const REDIRECT_URI = 'http://127.0.0.1:53682/callback';
const CLIENT_INFO = { name: 'tower-mcp-auth-e2e-client', version: '0.1.0' };

const trace = []; // every HTTP exchange the SDK made: "METHOD URL -> STATUS"
const authorizations = []; // each authorization round the headless browser performed
// Secrets seen during the run, for --secrets-file only (never printed).
const secrets = { accessTokens: [], authorizationCodes: [], codeVerifiers: [], refreshTokens: [] };
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
      'secrets-file': { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) {
    throw new Error('usage: node mcp-client.mjs [--call TOOL]... [--cimd URL] [--step-up] [--no-auth] [--secrets-file PATH] MCP_URL');
  }
  const url = URL.parse(positionals[0]);
  if (!url || !/^https?:$/.test(url.protocol)) throw new Error(`MCP_URL must be an http(s) URL: ${positionals[0]}`);
  secretsFile = values['secrets-file'];
  return {
    mcpUrl: url, calls: values.call ?? [], cimd: values.cimd, stepUp: values['step-up'], noAuth: values['no-auth'],
  };
}

// fetch wrapper given to the SDK: records each exchange and bounds the wait for response
// headers (not the body: the SDK's GET event stream is long-lived by design).
function tracingFetch(input, init = {}) {
  const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
  const url = input instanceof Request ? input.url : String(input);
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
      return res;
    },
    (err) => {
      clearTimeout(timer);
      trace.push(`${method} ${url} -> ERROR ${errorText(err)}`);
      throw err;
    },
  );
}

// Minimal cookie jar for the headless browser (host-only cookies, path-matched, expiry honoured).
class CookieJar {
  constructor() {
    this.cookies = new Map(); // `${host}|${path}|${name}` -> { host, path, name, value }
  }

  store(url, setCookieHeaders) {
    for (const header of setCookieHeaders) {
      const [pair, ...attrs] = header.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
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
  }

  tokens() {
    return this.tokenSet;
  }

  saveTokens(tokens) {
    this.tokenSet = tokens;
    if (tokens?.access_token) secrets.accessTokens.push(tokens.access_token);
    if (tokens?.refresh_token) secrets.refreshTokens.push(tokens.refresh_token);
  }

  saveCodeVerifier(verifier) {
    this.verifier = verifier;
    secrets.codeVerifiers.push(verifier);
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
    let next = url;
    for (let hop = 0; hop < MAX_AUTHORIZE_HOPS; hop++) {
      const cookie = jar.header(next);
      const res = await fetch(next, {
        redirect: 'manual',
        headers: cookie ? { cookie } : {},
        signal: AbortSignal.any([deadline, AbortSignal.timeout(AUTHORIZE_HOP_TIMEOUT_MS)]),
      });
      jar.store(next, res.headers.getSetCookie());
      round.hops.push(`GET ${withoutQuery(next)} -> ${res.status}`);
      const location = res.headers.get('location');
      if (!location || res.status < 300 || res.status > 399) {
        const body = (await res.text().catch(() => '')).slice(0, 300);
        round.result = 'failed';
        throw new Error(`authorization hop ${hop}: HTTP ${res.status} without redirect: ${body}`);
      }
      await res.body?.cancel();
      const target = new URL(location, next);
      if (withoutQuery(target) === REDIRECT_URI) {
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
        secrets.authorizationCodes.push(this.pendingCode);
        round.result = 'code';
        return;
      }
      next = target;
    }
    round.result = 'failed';
    throw new Error(`authorization did not reach the redirect_uri within ${MAX_AUTHORIZE_HOPS} hops`);
  }

  takeCode() {
    const code = this.pendingCode;
    this.pendingCode = undefined;
    return code;
  }
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
  const { mcpUrl, calls: toCall, cimd, stepUp, noAuth } = parseCli(process.argv.slice(2));
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

  // 5. End the MCP session politely (best effort), then report.
  if (transport.sessionId) {
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
    authorizations,
    trace,
  }, 0);
}

main().catch(failAndExit);
