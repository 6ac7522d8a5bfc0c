package console

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/tools"
)

// The config in plain words: each tool (what it reaches, with which
// secret, injected how) and each scope (its limits, approvals and what it
// grants, tool by tool). A webhook URL is never shown: it may hold its
// receiver's token.

type configData struct {
	Path   string
	Digest string
	Tools  []toolView
	Scopes []scopeView
}

type toolView struct {
	Name, Kind, Description string
	// Target is where its calls go: a base URL, a fixed request, or a
	// bucket.
	Target string
	Secret string
	Inject string
	Notes  []string
	// Scopes are the scopes that grant it.
	Scopes []string
}

type scopeView struct {
	Name, Description string
	Limits            []string
	Approval          []string
	Grants            []grantView
}

type grantView struct {
	Tool   string
	Secret string
	Lines  []string
}

func (c *Console) configPage(w http.ResponseWriter, r *http.Request, s consoleSession) {
	c.render(w, http.StatusOK, s, "config", "Config", "config", describeConfig(c.o.Config()))
}

// describeConfig says what cfg allows, in words.
func describeConfig(cfg *config.Loaded) configData {
	d := configData{Path: cfg.Path, Digest: cfg.Digest}
	grantedBy := map[string][]string{}
	for _, name := range cfg.Policy.ScopeNames() {
		sc, _ := cfg.Policy.Scope(name)
		raw := cfg.Config.Scopes[name]
		v := scopeView{Name: name, Description: sc.Description()}
		v.Limits = append(v.Limits, "a session lasts at most "+fmtDuration(sc.TTL()))
		if n := sc.MaxCalls(); n > 0 {
			v.Limits = append(v.Limits, fmt.Sprintf("at most %d calls per session", n))
		}
		if raw.Rate != "" {
			v.Limits = append(v.Limits, "at most "+raw.Rate+" calls (rate)")
		}
		if n := sc.MaxDenials(); n > 0 {
			v.Limits = append(v.Limits, fmt.Sprintf("a session is ended after %d denials (tripwire)", n))
		}
		a := sc.Approval()
		if a.OnDenyRequest {
			v.Approval = append(v.Approval, "a call it does not grant becomes an access request instead of a denial")
		}
		v.Approval = append(v.Approval,
			"a call that needs approval is held up to "+fmtDuration(a.Wait)+" for an answer",
			"a request waits, and an approval stays usable, "+fmtDuration(a.TTL),
			fmt.Sprintf("at most %d open requests per session", a.MaxOpen))
		if a.Notify {
			v.Approval = append(v.Approval, "each new request pops up a desktop notification")
		}
		if a.Webhook != "" {
			v.Approval = append(v.Approval, "each step is posted to a webhook (its URL is not shown), signed with the secret "+a.WebhookSecret)
		}
		for _, t := range sc.Tools() {
			g := grantView{Tool: t, Lines: sc.Summary(t)}
			if tool, ok := cfg.Tools[t]; ok {
				g.Secret = tool.SecretName()
			}
			v.Grants = append(v.Grants, g)
			grantedBy[t] = append(grantedBy[t], name)
		}
		d.Scopes = append(d.Scopes, v)
	}
	names := make([]string, 0, len(cfg.Config.Tools))
	for n := range cfg.Config.Tools {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		d.Tools = append(d.Tools, describeTool(n, cfg.Config.Tools[n], grantedBy[n]))
	}
	return d
}

var injections = map[string]string{
	"bearer":     "as Authorization: Bearer",
	"header":     "in a header",
	"basic":      "as HTTP Basic authentication",
	"query":      "as a query parameter",
	"aws_sigv4":  "by signing each request (AWS SigV4)",
	"oauth2":     "as short-lived OAuth 2.0 access tokens derived from it",
	"github_app": "as short-lived GitHub App installation tokens derived from it",
}

func describeTool(name string, t tools.Config, scopes []string) toolView {
	v := toolView{Name: name, Kind: t.Kind, Description: t.Description, Secret: t.Credential.Secret, Scopes: scopes}
	v.Inject = injections[t.Credential.Inject]
	if v.Inject == "" {
		v.Inject = t.Credential.Inject
	}
	switch t.Credential.Inject {
	case "header":
		v.Inject = "in the header " + t.Credential.Header
	case "query":
		v.Inject = "in the query parameter " + t.Credential.Param
	}
	switch {
	case t.Kind == "s3":
		v.Target = "s3://" + t.Bucket
		if t.Endpoint != "" {
			v.Notes = append(v.Notes, "S3-compatible store at "+t.Endpoint)
		}
		v.Notes = append(v.Notes, "list, get and head only: writes and deletes do not exist")
	case t.Method != "":
		v.Target = t.Method + " " + strings.TrimSuffix(t.BaseURL, "/") + t.Path
		v.Notes = append(v.Notes, "a templated operation: the agent fills in its parameters")
	default:
		v.Target = t.BaseURL
		v.Notes = append(v.Notes, "a generic API: the agent names the method and path, which the grants must allow")
	}
	if t.AllowPrivateNetwork {
		v.Notes = append(v.Notes, "may reach loopback and private networks")
	}
	if t.AllowInsecureHTTP {
		v.Notes = append(v.Notes, "may use plain http://")
	}
	if t.FollowRedirects == "same_origin" {
		v.Notes = append(v.Notes, "follows redirects on the same origin, each checked against the scope")
	}
	if len(t.Response.Fields) > 0 {
		v.Notes = append(v.Notes, "only these response fields reach the agent: "+strings.Join(t.Response.Fields, ", "))
	}
	if len(scopes) == 0 {
		v.Notes = append(v.Notes, "no scope grants it")
	}
	return v
}
