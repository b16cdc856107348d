#!/usr/bin/env node
// Loopback OpenID Connect / OAuth 2.1 authorization server for the tower-mcp-auth
// end-to-end tests, built on the `oidc-provider` package.
//
// Usage:
//   node oidc-provider.mjs [--resource URL ...] [--client ID:SECRET:REDIRECT_URI ...] [--port N] \
//        [--scopes "mcp:read mcp:admin"] [--access-token-ttl SECONDS] [--alg RS256|ES256] \
//        [--opaque-access-tokens] [--secrets-file PATH] [--ignore-stdin]
//   (at least one --resource or --client)
//
// stdout contract: exactly one line, `listening on http://127.0.0.1:PORT`, once the server is
// ready (the issuer is that URL). Everything else goes to stderr.
//
// Behaviour:
// - open dynamic client registration (POST /reg, no initial access token);
// - authorization code flow only, PKCE S256 required for every client;
// - RFC 8707 resource indicators: each --resource is a resource server whose access tokens are
//   JWTs (typ at+jwt, aud = the resource) carrying the scopes from --scopes; any other resource
//   is refused with invalid_target; the first --resource is the default when none is sent;
// - headless interactions: /interaction/:uid logs in the fixed user `e2e-user` and grants what
//   the client asked for (restricted to what the resource server allows), then redirects back
//   into the flow. No HTML is ever needed.
// - --client ID:SECRET:REDIRECT_URI pre-registers a confidential web client (client_secret_basic,
//   authorization_code + refresh_token; refresh tokens always issued, no offline_access needed),
//   such as an OAuth proxy signing its users in here. When it names no resource, its access
//   token is a JWT whose `aud` is its own client ID (scope `openid email profile`), unless
//   --opaque-access-tokens: then it is opaque (usable at userinfo) and the ID token is the
//   identity proof. The user `e2e-user` has email `e2e@example.test` (verified) and name
//   `E2E User` (scopes email, profile): in the ID token when the access token is a JWT, at
//   userinfo otherwise (oidc-provider's conformIdTokenClaims).
// - --secrets-file PATH: every token, code and client secret issued, and every PKCE verifier
//   presented at /token, is written there (0600).
// - exits on SIGTERM, SIGINT, and when stdin ends (parent process gone) unless --ignore-stdin:
//   a parent must therefore hand it a pipe it keeps open (not /dev/null).

import * as crypto from 'node:crypto';
import { writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

// oidc-provider prints notices with console.info (stdout). stdout is reserved for the single
// "listening on" line, so route every console method to stderr before the library loads.
// The registration pre-filter below hands oidc-provider an already-read body on purpose, so
// its one-time warning about that is dropped.
const EXPECTED_NOISE = /already parsed request body detected/;
for (const method of ['log', 'info', 'debug', 'warn']) {
  console[method] = (...args) => {
    if (args.some((a) => typeof a === 'string' && EXPECTED_NOISE.test(a))) return;
    console.error(...args);
  };
}
const cfg = parseCli(process.argv.slice(2)); // before loading the library: usage errors stay short
const { default: Provider, errors: oidcErrors } = await import('oidc-provider');

const ACCOUNT_ID = 'e2e-user';
const ACCOUNT_CLAIMS = { email: 'e2e@example.test', email_verified: true, name: 'E2E User' };
const OIDC_SCOPES = ['openid', 'offline_access', 'profile', 'email'];
// The access token scope of a --client client's own JWT access tokens.
const CLIENT_TOKEN_SCOPES = 'openid email profile';

function fail(message) {
  process.stderr.write(`oidc-provider.mjs: ${message}\n`);
  process.exit(2);
}

function parseCli(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        resource: { type: 'string', multiple: true },
        client: { type: 'string', multiple: true },
        'opaque-access-tokens': { type: 'boolean', default: false },
        'secrets-file': { type: 'string' },
        port: { type: 'string', default: '0' },
        scopes: { type: 'string', default: 'mcp:read mcp:admin' },
        'access-token-ttl': { type: 'string', default: '300' },
        alg: { type: 'string', default: 'RS256' },
        'ignore-stdin': { type: 'boolean', default: false },
      },
      allowPositionals: false,
      strict: true,
    });
  } catch (e) {
    fail(e.message);
  }
  const v = parsed.values;
  const resources = v.resource ?? [];
  const clients = (v.client ?? []).map(parseClient);
  if (resources.length === 0 && clients.length === 0) fail('at least one --resource URL or --client is required');
  if (new Set(clients.map((c) => c.id)).size !== clients.length) fail('--client IDs must be distinct');
  for (const r of resources) {
    const u = URL.parse(r);
    if (!u || !/^https?:$/.test(u.protocol) || u.hash) fail(`--resource must be an absolute http(s) URL without fragment: ${r}`);
  }
  const port = Number(v.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`invalid --port: ${v.port}`);
  const ttl = Number(v['access-token-ttl']);
  if (!Number.isSafeInteger(ttl) || ttl <= 0) fail(`invalid --access-token-ttl: ${v['access-token-ttl']}`);
  if (!['RS256', 'ES256'].includes(v.alg)) fail(`--alg must be RS256 or ES256, got ${v.alg}`);
  const scopes = v.scopes.split(/\s+/).filter(Boolean);
  if (scopes.length === 0) fail('--scopes must name at least one scope');
  return {
    resources: [...new Set(resources)],
    clients,
    opaqueAccessTokens: v['opaque-access-tokens'],
    secretsFile: v['secrets-file'],
    port,
    scopes,
    ttl,
    alg: v.alg,
    watchStdin: !v['ignore-stdin'],
  };
}

// --client ID:SECRET:REDIRECT_URI (the redirect URI holds colons of its own).
function parseClient(spec) {
  const first = spec.indexOf(':');
  const second = first < 0 ? -1 : spec.indexOf(':', first + 1);
  if (second < 0) fail(`--client must be ID:SECRET:REDIRECT_URI, got ${spec}`);
  const id = spec.slice(0, first);
  const secret = spec.slice(first + 1, second);
  const redirectUri = spec.slice(second + 1);
  const token = /^[A-Za-z0-9._~-]+$/;
  if (!token.test(id)) fail(`--client ID must be non-empty [A-Za-z0-9._~-]: ${id}`);
  if (!token.test(secret)) fail('--client SECRET must be non-empty [A-Za-z0-9._~-]');
  const u = URL.parse(redirectUri);
  if (!u || !/^https?:$/.test(u.protocol) || u.hash || u.href !== redirectUri) {
    fail(`--client REDIRECT_URI must be an absolute http(s) URL in normal form without fragment: ${redirectUri}`);
  }
  return { id, secret, redirectUri };
}

function signingJwk(alg) {
  const { privateKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint of the public members as kid.
  const members = alg === 'ES256'
    ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }
    : { e: jwk.e, kty: jwk.kty, n: jwk.n };
  const kid = crypto.hash('sha256', JSON.stringify(members), 'base64url');
  return { ...jwk, kid, alg, use: 'sig' };
}

// Read a request body fully (bounded), used only for the registration pre-filter below.
async function readBody(req, limit = 56 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request entity too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// Minimal in-memory storage adapter (the library's built-in one works the same way but warns
// loudly on every start). State lives only as long as this process, which is what tests want.
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const grantIndex = new Map(); // grantId -> Set of store keys
class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store.set(key, { payload: structuredClone(payload), expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined });
    if (payload.grantId) {
      if (!grantIndex.has(payload.grantId)) grantIndex.set(payload.grantId, new Set());
      grantIndex.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    return MemoryAdapter.get(this.key(id));
  }

  async findByUid(uid) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.model}:`) && entry.payload.uid === uid) return MemoryAdapter.get(key);
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.model}:`) && entry.payload.userCode === userCode) return MemoryAdapter.get(key);
    }
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of grantIndex.get(grantId) ?? []) store.delete(key);
    grantIndex.delete(grantId);
  }

  static get(key) {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return structuredClone(entry.payload);
  }
}

// --secrets-file: everything secret this provider hands out, for tests that check where those
// values must never appear (logs, databases). Rewritten after each addition.
const issued = {
  accessTokens: [], refreshTokens: [], idTokens: [], authorizationCodes: [], clientSecrets: [], codeVerifiers: [],
};
function recordIssued(kind, value) {
  if (!cfg.secretsFile || typeof value !== 'string' || !value || issued[kind].includes(value)) return;
  issued[kind].push(value);
  try {
    writeFileSync(cfg.secretsFile, `${JSON.stringify(issued)}\n`, { mode: 0o600 });
  } catch (err) {
    process.stderr.write(`oidc-provider.mjs: cannot write --secrets-file: ${err.message}\n`);
  }
}
for (const c of cfg.clients) recordIssued('clientSecrets', c.secret);

// Captures what a response carries (token endpoint bodies, codes in redirects) for --secrets-file.
function captureIssued(req, res) {
  if (!cfg.secretsFile) return;
  const path = new URL(req.url, 'http://x').pathname;
  const chunks = [];
  if (req.method === 'POST' && (path === '/token' || path === '/reg')) {
    const { write, end } = res;
    res.write = function capture(chunk, ...rest) {
      if (chunk) chunks.push(Buffer.from(chunk));
      return write.call(this, chunk, ...rest);
    };
    res.end = function capture(chunk, ...rest) {
      if (chunk && typeof chunk !== 'function') chunks.push(Buffer.from(chunk));
      return end.call(this, chunk, ...rest);
    };
  }
  res.once('finish', () => {
    const location = res.getHeader('location');
    if (typeof location === 'string') {
      const code = URL.parse(location, issuer)?.searchParams.get('code');
      if (code) recordIssued('authorizationCodes', code);
    }
    if (!chunks.length) return;
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return;
    }
    recordIssued('accessTokens', body.access_token);
    recordIssued('refreshTokens', body.refresh_token);
    recordIssued('idTokens', body.id_token);
    recordIssued('clientSecrets', body.client_secret);
  });
}

// Die with the parent: a test harness holds our stdin open; when it goes away, so do we.
let server;
let shuttingDown = false;
function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  process.stderr.write(`oidc-provider.mjs: shutting down (${reason})\n`);
  const force = setTimeout(() => process.exit(0), 2000);
  force.unref();
  if (server) {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
  } else {
    process.exit(0);
  }
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (cfg.watchStdin) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
server = http.createServer((req, res) => handler(req, res));
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(cfg.port, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const key = signingJwk(cfg.alg);
const resourceSet = new Set(cfg.resources);
const allowedScopes = cfg.scopes.join(' ');
// Each --client client's own default resource: the indicator of its JWT access tokens (aud =
// its client ID) when it names no resource. Not used with --opaque-access-tokens.
const clientResource = (id) => `urn:oidc-provider-e2e:client:${id}`;
const staticClients = new Map(cfg.clients.map((c) => [c.id, c]));
const clientResources = new Map(cfg.clients.map((c) => [clientResource(c.id), c.id]));

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  jwks: { keys: [key] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: OIDC_SCOPES,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  clients: cfg.clients.map((c) => ({
    client_id: c.id,
    client_secret: c.secret,
    redirect_uris: [c.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    application_type: 'web',
  })),
  // Refresh tokens for the --client clients whether or not offline_access was asked for;
  // dynamically registered clients get one only with offline_access (never, in the MCP flow).
  async issueRefreshToken(_ctx, client, source) {
    return client.grantTypeAllowed('refresh_token')
      && (staticClients.has(client.clientId) || source.scopes.has('offline_access'));
  },
  responseTypes: ['code'],
  pkce: { required: () => true },
  clientDefaults: {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: cfg.alg,
    token_endpoint_auth_method: 'none',
  },
  ttl: {
    AccessToken: cfg.ttl,
    AuthorizationCode: 60,
    Grant: 3600,
    Interaction: 300,
    Session: 3600,
    IdToken: cfg.ttl,
    RefreshToken: 3600,
  },
  async findAccount(_ctx, sub) {
    const extra = sub === ACCOUNT_ID ? ACCOUNT_CLAIMS : {};
    return { accountId: sub, async claims() { return { sub, ...extra }; } };
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true, initialAccessToken: false },
    // RFC 7009 at /token/revocation: an OAuth proxy revokes its upstream grant with it.
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No resource in the authorization request => a --client client's own resource, else
      // the first configured resource; with --opaque-access-tokens, none (opaque access
      // token). At the token endpoint `oneOf` lists the grant's resources; pick one
      // deterministically.
      async defaultResource(_ctx, client, oneOf) {
        if (oneOf) return oneOf.includes(cfg.resources[0]) ? cfg.resources[0] : oneOf[0];
        if (cfg.opaqueAccessTokens) return undefined;
        if (client && staticClients.has(client.clientId)) return clientResource(client.clientId);
        return cfg.resources[0];
      },
      // Token request without `resource` => use the resource the code was granted for.
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(_ctx, resourceIndicator, client) {
        const owner = clientResources.get(resourceIndicator);
        if (owner !== undefined && !cfg.opaqueAccessTokens && client?.clientId === owner) {
          return {
            scope: CLIENT_TOKEN_SCOPES,
            audience: owner,
            accessTokenTTL: cfg.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: cfg.alg } },
          };
        }
        if (!resourceSet.has(resourceIndicator)) {
          throw new oidcErrors.InvalidTarget(`unknown resource indicator: ${resourceIndicator}`);
        }
        return {
          scope: allowedScopes,
          audience: resourceIndicator,
          accessTokenTTL: cfg.ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: cfg.alg } },
        };
      },
    },
  },
  // Plain-text errors for the interaction-less world (the default renders HTML).
  async renderError(ctx, out) {
    ctx.type = 'application/json';
    ctx.body = out;
  },
});

// --secrets-file: the PKCE verifier a client presents at the token endpoint is a secret of the
// run too (an OAuth proxy's upstream verifier is minted by the server under test).
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'token') recordIssued('codeVerifiers', ctx.oidc.params?.code_verifier);
});

provider.on('server_error', (_ctx, err) => process.stderr.write(`oidc-provider server_error: ${err?.stack ?? err}\n`));
for (const event of ['authorization.error', 'grant.error', 'registration_create.error']) {
  provider.on(event, (_ctx, err) => process.stderr.write(`oidc-provider ${event}: ${err?.error ?? ''} ${err?.error_description ?? err?.message ?? ''}\n`));
}

// Headless interaction: log the fixed user in, then grant what is missing (oidc-provider's
// consent prompt details already restrict it to what was requested and what the resource
// server allows), and send the user agent back into the authorization flow.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: ACCOUNT_ID } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details ?? {};
    if (d.missingOIDCScope?.length) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims?.length) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    result = { consent: details.grantId ? {} : { grantId } };
  } else {
    result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const INTERACTION_PATH = /^\/interaction\/[A-Za-z0-9_-]+$/;

handler = async (req, res) => {
  try {
    captureIssued(req, res);
    const path = new URL(req.url, issuer).pathname;
    // Access log (path only: queries carry codes and states).
    res.once('finish', () => process.stderr.write(`oidc-provider.mjs: ${req.method} ${path} -> ${res.statusCode}\n`));
    if (req.method === 'GET' && INTERACTION_PATH.test(path)) {
      await interaction(req, res);
      return;
    }
    if (req.method === 'POST' && path === '/reg' && /application\/json/i.test(req.headers['content-type'] ?? '')) {
      // RFC 7591 `scope` registration metadata would make oidc-provider reject any scope it
      // does not know statically (resource-server scopes such as mcp:read are not static
      // OIDC scopes) and would pin the client to the first scope it registered with,
      // breaking step-up. Scopes are governed per resource server instead, so drop it.
      const body = JSON.parse(await readBody(req));
      if (body && typeof body === 'object' && 'scope' in body) {
        process.stderr.write(`oidc-provider.mjs: ignoring registration scope "${body.scope}"\n`);
        delete body.scope;
      }
      req.body = JSON.stringify(body);
    }
    callback(req, res);
  } catch (err) {
    process.stderr.write(`oidc-provider.mjs: ${req.method} ${req.url}: ${err?.stack ?? err}\n`);
    if (!res.headersSent) {
      // oidc-provider errors (e.g. SessionNotFound for a missing interaction cookie) carry
      // their own status and OAuth error code.
      const status = err instanceof SyntaxError ? 400 : (Number.isInteger(err?.statusCode) ? err.statusCode : 500);
      const error = err instanceof SyntaxError ? 'invalid_request' : (err?.error ?? 'server_error');
      res.statusCode = status;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ error, error_description: String(err?.error_description ?? err?.message ?? err) }));
    } else {
      res.end();
    }
  }
};

process.stdout.write(`listening on ${issuer}\n`);
process.stderr.write(`oidc-provider.mjs: issuer ${issuer}, alg ${cfg.alg}, kid ${key.kid}, resources ${cfg.resources.join(', ') || '(none)'}, scopes "${allowedScopes}", access token ttl ${cfg.ttl}s, clients ${cfg.clients.map((c) => c.id).join(', ') || '(none)'}, ${cfg.opaqueAccessTokens ? 'opaque' : 'JWT'} access tokens without resource\n`);
