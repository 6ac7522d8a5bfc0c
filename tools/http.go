package tools

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/keyhole-dev/keyhole/policy"
)

// httpTool is a compiled http tool: a fixed origin and base path, one
// credential injection, a compiled argument schema and one *http.Client
// (so connections are reused) whose transport enforces the egress rules at
// dial time.
//
// A generic tool takes {method, path, query?, headers?, body?}; a templated
// tool fixes method and path ("/repos/{owner}/{repo}/issues") and takes the
// properties of its input_schema.
type httpTool struct {
	name        string
	description string
	// origin is scheme and host[:port] of base_url, normalized (lower-case,
	// punycode, no trailing dot). Only origin.Scheme and origin.Host are used.
	origin *url.URL
	// baseSegs is base_url's path, decoded and split like a request path.
	baseSegs []string
	cred     Credential
	aws      *AWS
	timeout  time.Duration
	maxBytes int
	fields   []string
	// eachFields says every response field is a "#." path: the projection
	// maps each array element to an object of those fields.
	eachFields bool
	follow     bool
	// allowHeaders are the routing headers (folded) the agent may set.
	allowHeaders map[string]bool

	// Templated tools only.
	method     string
	path       string
	tmpl       []httpTmplSeg
	queryProps []string

	schema      *jsonschema.Schema
	inputSchema json.RawMessage
	client      *http.Client
	// mint derives what an oauth2 or github_app credential sends; nil
	// for the other modes, which send the secret.
	mint minter
}

var _ Tool = (*httpTool)(nil)

// httpCall is the http part of a prepared Call: everything Execute sends
// besides the method and path segments, which live in Call.Request.
type httpCall struct {
	query  url.Values
	header http.Header
	body   []byte
	// hasBody distinguishes an empty string body from no body.
	hasBody bool
}

// Name is the tool's key in keyhole.yaml.
func (t *httpTool) Name() string { return t.name }

// Kind is "http".
func (t *httpTool) Kind() string { return "http" }

// Description is the configured description or one generated from the
// tool's origin (and method and path for a templated tool).
func (t *httpTool) Description() string { return t.description }

// SecretName is the vault secret the tool injects.
func (t *httpTool) SecretName() string { return t.cred.Secret }

// InputSchema is the JSON Schema of the arguments the agent sends.
func (t *httpTool) InputSchema() json.RawMessage { return t.inputSchema }

// Info describes the tool to policy; Method and Path are set only for a
// templated tool.
func (t *httpTool) Info() policy.ToolInfo {
	return policy.ToolInfo{Kind: "http", Method: t.method, Path: t.path, Host: t.origin.Host}
}

// templated reports whether the tool fixes its method and path.
func (t *httpTool) templated() bool { return t.method != "" }

// callContext bounds a whole call, body read included, by the tool timeout.
func (t *httpTool) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, t.timeout)
}

// auditFields describes an http call: method, host, canonical path and the
// names of its query parameters (never their values).
func (t *httpTool) auditFields(c *Call) AuditFields {
	f := AuditFields{Kind: "http", Method: c.Request.Method, Host: t.origin.Host, Path: c.Request.Path()}
	if c.http != nil && len(c.http.query) > 0 {
		for _, n := range slices.Sorted(maps.Keys(c.http.query)) {
			f.QueryNames = append(f.QueryNames, url.QueryEscape(n))
		}
	}
	return f
}
