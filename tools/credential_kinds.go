package tools

// CredentialKinds returns the kinds of credential (as CredentialInfo.Kind
// names them) that a tool of kind kind sends with credential c, as far as
// the config says: an oauth2 credential sends OAuth 2.0 access tokens, a
// github_app one tokens minted per session, an s3 tool its static keys
// or, when its secret names a role (which only the secret says), AWS
// session credentials assumed per session, and every other injection the
// secret as it is stored.
func CredentialKinds(kind string, c Credential) []string {
	switch {
	case c.Inject == "oauth2":
		return []string{CredOAuth2}
	case c.Inject == "github_app":
		return []string{CredGitHubApp}
	case kind == "s3":
		return []string{CredStatic, CredAWSSTS}
	}
	return []string{CredStatic}
}

// PerSession reports whether a credential of that kind is minted for one
// session and revoked or expired with it: AWS session credentials and
// GitHub App installation tokens. A static secret is not, nor is an OAuth
// 2.0 access token, which the sessions of its tool share and which is
// refreshed from a long-lived refresh token kept in the secret.
func PerSession(kind string) bool {
	return kind == CredAWSSTS || kind == CredGitHubApp
}
