#!/usr/bin/env node
// Loopback OpenID Connect / OAuth 2.1 authorization server for the tower-mcp-auth
// end-to-end tests, built on the `oidc-provider` package.
//
// Usage:
//   node oidc-provider.mjs --resource URL [--resource URL2 ...] [--port N] \
//        [--scopes "mcp:read mcp:admin"] [--access-token-ttl SECONDS] [--alg RS256|ES256] \
//        [--ignore-stdin]
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
// - exits on SIGTERM, SIGINT, and when stdin ends (parent process gone) unless --ignore-stdin:
//   a parent must therefore hand it a pipe it keeps open (not /dev/null).

import * as crypto from 'node:crypto';
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
const OIDC_SCOPES = ['openid', 'offline_access', 'profile', 'email'];

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
  if (resources.length === 0) fail('at least one --resource URL is required');
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
    resources: [...new Set(resources)], port, scopes, ttl, alg: v.alg, watchStdin: !v['ignore-stdin'],
  };
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

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  jwks: { keys: [key] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: OIDC_SCOPES,
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
    return { accountId: sub, async claims() { return { sub }; } };
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true, initialAccessToken: false },
    resourceIndicators: {
      enabled: true,
      // No resource in the authorization request => the first configured resource. At the
      // token endpoint `oneOf` lists the grant's resources; pick one deterministically.
      async defaultResource(_ctx, _client, oneOf) {
        if (oneOf) return oneOf.includes(cfg.resources[0]) ? cfg.resources[0] : oneOf[0];
        return cfg.resources[0];
      },
      // Token request without `resource` => use the resource the code was granted for.
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(_ctx, resourceIndicator) {
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
    const path = new URL(req.url, issuer).pathname;
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
process.stderr.write(`oidc-provider.mjs: issuer ${issuer}, alg ${cfg.alg}, kid ${key.kid}, resources ${cfg.resources.join(', ')}, scopes "${allowedScopes}", access token ttl ${cfg.ttl}s\n`);
