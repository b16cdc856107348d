// Smoke test of oidc-provider.mjs on its own (no MCP server needed): `npm test` in this folder.
// Registers a client, runs the authorization code flow with PKCE S256 and a resource indicator
// headlessly, exchanges the code and checks the JWT access token; also checks refusals.
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

const RESOURCE = 'http://127.0.0.1:9/mcp';
const OTHER_RESOURCE = 'http://127.0.0.1:10/other';
const REDIRECT_URI = 'http://127.0.0.1:53682/callback';
const timeout = () => AbortSignal.timeout(5_000);

let child;
let issuer;
let discovery;

async function startProvider(args) {
  const proc = spawn(process.execPath, [new URL('./oidc-provider.mjs', import.meta.url).pathname, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  proc.stdout.setEncoding('utf8');
  let buffered = '';
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('provider did not start within 10s')), 10_000);
    proc.stdout.on('data', (chunk) => {
      buffered += chunk;
      if (buffered.includes('\n')) {
        clearTimeout(timer);
        resolve(buffered.split('\n')[0]);
      }
    });
    proc.once('exit', (code) => reject(new Error(`provider exited early with ${code}`)));
  });
  const m = /^listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
  assert.ok(m, `unexpected first stdout line: ${line}`);
  return { proc, issuer: m[1] };
}

async function register(extra = {}) {
  const res = await fetch(discovery.registration_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'provider smoke test',
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      ...extra,
    }),
    signal: timeout(),
  });
  assert.equal(res.status, 201, await res.clone().text());
  return res.json();
}

// Follows the authorization server's redirects (carrying cookies) until the redirect_uri.
async function authorize(params) {
  const url = new URL(discovery.authorization_endpoint);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
  const cookies = new Map();
  let next = url;
  for (let hop = 0; hop < 10; hop++) {
    const headers = cookies.size ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {};
    const res = await fetch(next, { redirect: 'manual', headers, signal: timeout() });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      if (/expires=Thu, 01 Jan 1970/i.test(c)) cookies.delete(pair.slice(0, i));
      else cookies.set(pair.slice(0, i), pair.slice(i + 1));
    }
    const location = res.headers.get('location');
    if (!location) return { status: res.status, body: await res.text() };
    const target = new URL(location, next);
    if (target.origin + target.pathname === REDIRECT_URI) return { callback: target.searchParams };
    next = target;
  }
  throw new Error('too many redirects');
}

async function token(body) {
  const res = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(body),
    signal: timeout(),
  });
  return { status: res.status, body: await res.json() };
}

function decode(jwt) {
  const [h, p] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url')),
    payload: JSON.parse(Buffer.from(p, 'base64url')),
  };
}

function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  return { verifier, challenge: crypto.hash('sha256', verifier, 'base64url') };
}

before(async () => {
  ({ proc: child, issuer } = await startProvider(['--resource', RESOURCE, '--resource', OTHER_RESOURCE]));
  discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`, { signal: timeout() })).json();
});

after(async () => {
  if (child.exitCode === null) {
    child.stdin.end(); // the provider exits when its stdin closes
    await once(child, 'exit');
  }
});

test('discovery documents', async () => {
  assert.equal(discovery.issuer, issuer);
  assert.ok(discovery.code_challenge_methods_supported.includes('S256'));
  assert.ok(discovery.registration_endpoint);
  assert.ok(discovery.jwks_uri);
  assert.deepEqual(discovery.response_types_supported, ['code']);
  const as = await fetch(`${issuer}/.well-known/oauth-authorization-server`, { signal: timeout() });
  assert.ok(as.status === 200 || as.status === 404);
  const jwks = await (await fetch(discovery.jwks_uri, { signal: timeout() })).json();
  assert.equal(jwks.keys.length, 1);
  assert.equal(jwks.keys[0].alg, 'RS256');
  assert.equal(jwks.keys[0].use, 'sig');
  assert.ok(jwks.keys[0].kid);
  assert.equal(jwks.keys[0].d, undefined, 'private key material must not be published');
});

test('code flow with PKCE and resource yields an at+jwt for the resource', async () => {
  const client = await register({ scope: 'mcp:read' }); // registration scope is ignored
  const { verifier, challenge } = pkce();
  const state = crypto.randomUUID();
  const { callback } = await authorize({
    response_type: 'code',
    client_id: client.client_id,
    redirect_uri: REDIRECT_URI,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    scope: 'mcp:read',
    resource: RESOURCE,
  });
  assert.ok(callback, 'expected a redirect to the redirect_uri');
  assert.equal(callback.get('error'), null, callback.get('error_description') ?? '');
  assert.equal(callback.get('state'), state);
  assert.equal(callback.get('iss'), issuer);
  const { status, body } = await token({
    grant_type: 'authorization_code',
    code: callback.get('code'),
    redirect_uri: REDIRECT_URI,
    client_id: client.client_id,
    code_verifier: verifier,
    resource: RESOURCE,
  });
  assert.equal(status, 200, JSON.stringify(body));
  assert.equal(body.token_type, 'Bearer');
  assert.equal(body.scope, 'mcp:read');
  const { header, payload } = decode(body.access_token);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(header.alg, 'RS256');
  assert.ok(header.kid);
  assert.equal(payload.aud, RESOURCE);
  assert.equal(payload.scope, 'mcp:read');
  assert.equal(payload.iss, issuer);
  assert.equal(payload.sub, 'e2e-user');
  assert.equal(payload.client_id, client.client_id);
  assert.ok(payload.exp > payload.iat);
  assert.ok(payload.jti);
});

test('default resource, both scopes, token request without resource', async () => {
  const client = await register();
  const { verifier, challenge } = pkce();
  const { callback } = await authorize({
    response_type: 'code',
    client_id: client.client_id,
    redirect_uri: REDIRECT_URI,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 's',
    scope: 'mcp:read mcp:admin unknown:scope',
  });
  assert.ok(callback?.get('code'), JSON.stringify(callback && Object.fromEntries(callback)));
  const { status, body } = await token({
    grant_type: 'authorization_code',
    code: callback.get('code'),
    redirect_uri: REDIRECT_URI,
    client_id: client.client_id,
    code_verifier: verifier,
  });
  assert.equal(status, 200, JSON.stringify(body));
  const { payload } = decode(body.access_token);
  assert.equal(payload.aud, RESOURCE);
  assert.equal(payload.scope, 'mcp:read mcp:admin');
});

test('refusals: unknown resource, missing PKCE, wrong verifier, other resource at token', async () => {
  const client = await register();
  const base = {
    response_type: 'code', client_id: client.client_id, redirect_uri: REDIRECT_URI, state: 's', scope: 'mcp:read',
  };
  const { verifier, challenge } = pkce();

  const unknown = await authorize({ ...base, code_challenge: challenge, code_challenge_method: 'S256', resource: 'http://127.0.0.1:11/nope' });
  assert.equal(unknown.callback?.get('error'), 'invalid_target');

  const noPkce = await authorize({ ...base, resource: RESOURCE });
  assert.equal(noPkce.callback?.get('error'), 'invalid_request');

  const plain = await authorize({ ...base, resource: RESOURCE, code_challenge: verifier, code_challenge_method: 'plain' });
  assert.equal(plain.callback?.get('error'), 'invalid_request');

  const ok = await authorize({ ...base, code_challenge: challenge, code_challenge_method: 'S256', resource: RESOURCE });
  const wrongVerifier = await token({
    grant_type: 'authorization_code', code: ok.callback.get('code'), redirect_uri: REDIRECT_URI, client_id: client.client_id,
    code_verifier: pkce().verifier, resource: RESOURCE,
  });
  assert.equal(wrongVerifier.status, 400);
  assert.equal(wrongVerifier.body.error, 'invalid_grant');

  const ok2 = await authorize({ ...base, code_challenge: challenge, code_challenge_method: 'S256', resource: RESOURCE });
  const otherResource = await token({
    grant_type: 'authorization_code', code: ok2.callback.get('code'), redirect_uri: REDIRECT_URI, client_id: client.client_id,
    code_verifier: verifier, resource: OTHER_RESOURCE,
  });
  assert.equal(otherResource.status, 400);
  assert.equal(otherResource.body.error, 'invalid_target');
});

test('ES256 mode signs with a P-256 key', async () => {
  const { proc, issuer: es } = await startProvider(['--resource', RESOURCE, '--alg', 'ES256', '--access-token-ttl', '60']);
  try {
    const jwks = await (await fetch(`${es}/jwks`, { signal: timeout() })).json();
    assert.equal(jwks.keys[0].kty, 'EC');
    assert.equal(jwks.keys[0].crv, 'P-256');
    assert.equal(jwks.keys[0].alg, 'ES256');
  } finally {
    proc.kill('SIGTERM');
    const [code] = await once(proc, 'exit');
    assert.equal(code, 0);
  }
});

// --client: a pre-registered confidential web client (an OAuth proxy in front of MCP servers)
// that names no resource, like the example server in proxy mode.
const PROXY_ID = 'mcp-proxy';
const PROXY_SECRET = 'proxy-secret-0123456789';
const PROXY_REDIRECT = 'http://127.0.0.1:9/callback';

async function startProxyProvider(extra) {
  const started = await startProvider(['--client', `${PROXY_ID}:${PROXY_SECRET}:${PROXY_REDIRECT}`, ...extra]);
  const doc = await (await fetch(`${started.issuer}/.well-known/openid-configuration`, { signal: timeout() })).json();
  return { ...started, doc };
}

async function stopProvider(proc) {
  proc.kill('SIGTERM');
  const [code] = await once(proc, 'exit');
  assert.equal(code, 0);
}

// Signs the proxy in (no resource, scope openid email profile) and exchanges the code with
// client_secret_basic.
async function proxySignIn(doc) {
  const { verifier, challenge } = pkce();
  const url = new URL(doc.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: 'code', client_id: PROXY_ID, redirect_uri: PROXY_REDIRECT, code_challenge: challenge,
    code_challenge_method: 'S256', state: 'st', nonce: 'n-0123456789', scope: 'openid email profile',
  })) url.searchParams.set(k, v);
  const cookies = new Map();
  let next = url;
  let callback;
  for (let hop = 0; hop < 10 && !callback; hop++) {
    const headers = cookies.size ? { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } : {};
    const res = await fetch(next, { redirect: 'manual', headers, signal: timeout() });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      cookies.set(pair.slice(0, i), pair.slice(i + 1));
    }
    const location = res.headers.get('location');
    assert.ok(location, `hop ${hop}: HTTP ${res.status} without redirect: ${await res.text()}`);
    const target = new URL(location, next);
    if (target.origin + target.pathname === PROXY_REDIRECT) callback = target.searchParams;
    next = target;
  }
  assert.ok(callback?.get('code'), JSON.stringify(callback && Object.fromEntries(callback)));
  const basic = Buffer.from(`${PROXY_ID}:${PROXY_SECRET}`).toString('base64');
  const res = await fetch(doc.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code: callback.get('code'), redirect_uri: PROXY_REDIRECT, code_verifier: verifier,
    }),
    signal: timeout(),
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

async function proxyRefresh(doc, refreshToken) {
  const basic = Buffer.from(`${PROXY_ID}:${PROXY_SECRET}`).toString('base64');
  const res = await fetch(doc.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${basic}` },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
    signal: timeout(),
  });
  return { status: res.status, body: await res.json() };
}

test('--client without resource: JWT access token for the client itself, ID token with the claims, refresh token', async () => {
  const { proc, issuer: iss, doc } = await startProxyProvider([]);
  try {
    const body = await proxySignIn(doc);
    const at = decode(body.access_token);
    assert.equal(at.header.typ, 'at+jwt');
    assert.equal(at.payload.aud, PROXY_ID);
    assert.equal(at.payload.iss, iss);
    assert.equal(at.payload.sub, 'e2e-user');
    assert.equal(at.payload.scope, 'openid email profile');
    const id = decode(body.id_token).payload;
    assert.equal(id.aud, PROXY_ID);
    assert.equal(id.nonce, 'n-0123456789');
    assert.equal(id.email, 'e2e@example.test');
    assert.equal(id.email_verified, true);
    assert.equal(id.name, 'E2E User');
    assert.ok(body.refresh_token, 'a refresh token without offline_access');
    const refreshed = await proxyRefresh(doc, body.refresh_token);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal(decode(refreshed.body.access_token).payload.aud, PROXY_ID);
  } finally {
    await stopProvider(proc);
  }
});

test('--client with --opaque-access-tokens: opaque access token, claims at userinfo', async () => {
  const { proc, doc } = await startProxyProvider(['--opaque-access-tokens']);
  try {
    const body = await proxySignIn(doc);
    assert.equal(body.access_token.split('.').length, 1, 'an opaque access token');
    const id = decode(body.id_token).payload;
    assert.equal(id.sub, 'e2e-user');
    assert.equal(id.aud, PROXY_ID);
    assert.equal(id.email, undefined, 'claims only at userinfo (conformIdTokenClaims)');
    assert.ok(body.refresh_token);
    const info = await fetch(doc.userinfo_endpoint, {
      headers: { authorization: `Bearer ${body.access_token}` }, signal: timeout(),
    });
    assert.equal(info.status, 200);
    assert.deepEqual(await info.json(), { sub: 'e2e-user', email: 'e2e@example.test', email_verified: true, name: 'E2E User' });
    const refreshed = await proxyRefresh(doc, body.refresh_token);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal(refreshed.body.access_token.split('.').length, 1);
  } finally {
    await stopProvider(proc);
  }
});
