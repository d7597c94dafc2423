// A real OpenID Connect provider (npm oidc-provider) on loopback for the end-to-end tests.
// Settings come from the environment: PORT, ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI,
// ACCOUNTS (JSON: {"login": {"email": "...", "email_verified": true}}). A login of the form
// "subject|email|verified" (or "|unverified") describes itself, so tests make fresh people.
import Provider from 'oidc-provider';

const accounts = JSON.parse(process.env.ACCOUNTS || '{}');
const provider = new Provider(process.env.ISSUER, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  scopes: ['openid', 'email'],
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['relayforge-test-cookie-key'] },
  // Consent is not what these tests are about: grant what the client asks for.
  async loadExistingGrant(ctx) {
    const existing = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (existing) return provider.Grant.find(existing);
    const grant = new provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email');
    await grant.save();
    return grant;
  },
  async findAccount(ctx, id) {
    // The whole login is the subject; its parts describe the person.
    const [subject, email, verified] = id.split('|');
    const known = accounts[id] || (email
      ? { email, email_verified: verified === 'verified' }
      : { email: `${subject}@unknown.example`, email_verified: false });
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: known.email, email_verified: known.email_verified };
      },
    };
  },
});
provider.proxy = true;
provider.listen(Number(process.env.PORT), '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${process.env.ISSUER}`);
});
