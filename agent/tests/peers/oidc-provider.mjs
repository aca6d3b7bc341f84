// A real OpenID provider for the OIDC tests (agent/tests/suite/auth_oidc.rs): the
// certified `oidc-provider` package (npm, 8.x) with one confidential client, a few
// accounts carrying a `groups` claim, PKCE (S256) required, and its built-in development
// login and consent forms (devInteractions), which accept any password.
//
// Configuration (environment):
//   OIDC_PROVIDER_MODULE  path of the installed `oidc-provider` package folder
//   PORT                  where to listen on 127.0.0.1
//   ISSUER                the issuer URL (default http://127.0.0.1:PORT)
//   CLIENT_ID, CLIENT_SECRET, REDIRECT_URI   the one client
//   ACCOUNTS              JSON: {"<login>": {"email": …, "groups": […]}, …}
//   GROUPS_IN_USERINFO    "1": the ID token carries only `sub` (and what the protocol
//                         needs); the scopes' claims, groups included, come from UserInfo
// Prints "listening <port>" on stdout once it accepts connections.

import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const need = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`oidc-provider.mjs: ${name} is not set`);
    process.exit(2);
  }
  return v;
};

const modulePath = join(need('OIDC_PROVIDER_MODULE'), 'lib', 'index.js');
const { default: Provider } = await import(pathToFileURL(modulePath).href);
const port = Number(need('PORT'));
const issuer = process.env.ISSUER || `http://127.0.0.1:${port}`;
const accounts = JSON.parse(need('ACCOUNTS'));

// A signing key of its own for every run (RS256).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: need('CLIENT_ID'),
    client_secret: need('CLIENT_SECRET'),
    redirect_uris: [need('REDIRECT_URI')],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: ['kubekuma-test-cookie-key'] },
  pkce: { methods: ['S256'], required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // The scopes' claims go into the ID token itself, as Keycloak and Dex do, unless
  // GROUPS_IN_USERINFO asks for the spec's default (UserInfo only, as Okta does).
  conformIdTokenClaims: process.env.GROUPS_IN_USERINFO === '1',
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const a = accounts[id];
    if (!a) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          name: id,
          email: a.email,
          email_verified: true,
          groups: a.groups || [],
        };
      },
    };
  },
});
provider.proxy = true;

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
