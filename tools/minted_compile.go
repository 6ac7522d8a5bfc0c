package tools

import (
	"net/http"
	"net/url"
	"strings"
	"time"
)

// defaultGitHubAPI is where a github_app credential mints tokens when it
// names no api_url.
const defaultGitHubAPI = "https://api.github.com"

// mintedCredential checks the oauth2 and github_app blocks of an http
// tool's credential: each belongs to its own injection mode only.
func (c *httpCompiler) mintedCredential(cfg Config) {
	cr := cfg.Credential
	if cr.Inject != "oauth2" && cr.OAuth2 != nil {
		c.fail("credential.oauth2", "applies only to inject: oauth2")
	}
	if cr.Inject != "github_app" && cr.GitHubApp != nil {
		c.fail("credential.github_app", "applies only to inject: github_app")
	}
	insecureOK := cfg.AllowPrivateNetwork || cfg.AllowInsecureHTTP
	switch cr.Inject {
	case "oauth2":
		o := cr.OAuth2
		if o == nil {
			c.fail("credential.oauth2", "is required with inject: oauth2 (flow and token_url)")
			return
		}
		switch o.Flow {
		case flowClientCredentials:
			if o.AuthURL != "" {
				c.fail("credential.oauth2.auth_url", "applies only to flow: authorization_code")
			}
		case flowAuthorizationCode:
			if o.AuthURL == "" {
				c.fail("credential.oauth2.auth_url", "is required with flow: authorization_code")
			} else {
				c.endpointURL("credential.oauth2.auth_url", o.AuthURL, insecureOK, true)
			}
		case "":
			c.fail("credential.oauth2.flow", "is required: client_credentials or authorization_code")
		default:
			c.fail("credential.oauth2.flow", "must be client_credentials or authorization_code")
		}
		if o.TokenURL == "" {
			c.fail("credential.oauth2.token_url", "is required")
		} else {
			c.endpointURL("credential.oauth2.token_url", o.TokenURL, insecureOK, false)
		}
		for i, s := range o.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\"\\") || httpHasControl(s) {
				c.fail("credential.oauth2.scopes", "scope %d must be non-empty, without spaces, quotes, backslashes or control characters", i)
			}
		}
		if httpHasControl(o.Audience) {
			c.fail("credential.oauth2.audience", "must not contain control characters")
		}
	case "github_app":
		a := cr.GitHubApp
		if a == nil {
			c.fail("credential.github_app", "is required with inject: github_app (app_id and installation_id)")
			return
		}
		if a.AppID <= 0 {
			c.fail("credential.github_app.app_id", "is required: the App's numeric id (its settings page shows it)")
		}
		if a.InstallationID <= 0 {
			c.fail("credential.github_app.installation_id", "is required: the numeric id of the App's installation on the account")
		}
		if a.APIURL != "" {
			c.endpointURL("credential.github_app.api_url", a.APIURL, insecureOK, false)
		}
	}
}

// endpointURL checks a URL keyhole sends credentials to: absolute, https
// (http only for a private network or with allow_insecure_http), without
// userinfo or fragment, and a query only where query allows it.
func (c *httpCompiler) endpointURL(field, raw string, insecureOK, query bool) *url.URL {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Opaque != "" || u.Host == "":
		c.fail(field, "must be an absolute URL such as https://auth.example.com/oauth/token")
		return nil
	case u.User != nil:
		c.fail(field, "must not contain userinfo; credentials belong in the vault")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		c.fail(field, "must not contain a fragment")
	case !query && (u.RawQuery != "" || u.ForceQuery):
		c.fail(field, "must not contain a query")
	case u.Scheme == "http" && !insecureOK:
		c.fail(field, "http is allowed only with allow_private_network or allow_insecure_http; use https")
	case u.Scheme != "https" && u.Scheme != "http":
		c.fail(field, "scheme must be https")
	}
	if _, ok := httpNormalizeHost(u); !ok {
		c.fail(field, "host is not a valid host name, IP address or port")
	}
	return u
}

// buildMinter makes the minter of an oauth2 or github_app tool (nil for
// the other modes). Its token requests go through client, and so through
// the same egress rules as the tool's calls.
func buildMinter(name string, cfg Config, client *http.Client, timeout time.Duration, env Env) minter {
	cr := cfg.Credential
	switch cr.Inject {
	case "oauth2":
		o := cr.OAuth2
		set := oauth2Settings{flow: o.Flow, tokenURL: o.TokenURL, authURL: o.AuthURL, scopes: o.Scopes, audience: o.Audience}
		tokens := env.Tokens
		if tokens == nil {
			tokens = NewTokens()
		}
		return &oauth2Source{
			tool: name, secret: cr.Secret, set: set, client: client, timeout: timeout,
			now: time.Now, state: tokens.state(set.key(cr.Secret)),
		}
	case "github_app":
		a := cr.GitHubApp
		raw := a.APIURL
		if raw == "" {
			raw = defaultGitHubAPI
		}
		api, _ := url.Parse(raw) // checked by mintedCredential
		api.Path = strings.TrimSuffix(api.Path, "/")
		api.RawPath = ""
		return &githubAppSource{
			tool: name, secret: cr.Secret, appID: a.AppID, installation: a.InstallationID,
			api: api, client: client, timeout: timeout, now: time.Now,
			afterFunc: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		}
	}
	return nil
}
