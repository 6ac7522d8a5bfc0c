// Package tools defines keyhole's brokered tools and their kinds (http, s3):
// argument validation, normalization into a policy.Request, execution with an
// injected credential, response shaping and secret scrubbing. It never
// decides whether a call is allowed; package policy does.
package tools

import (
	"context"
	"encoding/json"
	"net/netip"
	"time"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// Config is one entry of the tools: section of keyhole.yaml. Which fields
// apply depends on Kind; Compile rejects fields of another kind.
type Config struct {
	Kind        string     `yaml:"kind" json:"kind"`
	Description string     `yaml:"description" json:"description,omitempty"`
	Credential  Credential `yaml:"credential" json:"credential"`
	Timeout     string     `yaml:"timeout" json:"timeout,omitempty"` // Go duration, default 30s
	Response    Response   `yaml:"response" json:"response,omitempty"`

	// Network policy (http and s3).
	AllowPrivateNetwork bool   `yaml:"allow_private_network" json:"allow_private_network,omitempty"`
	AllowMetadata       bool   `yaml:"allow_metadata" json:"allow_metadata,omitempty"`
	AllowInsecureHTTP   bool   `yaml:"allow_insecure_http" json:"allow_insecure_http,omitempty"`
	CAFile              string `yaml:"ca_file" json:"ca_file,omitempty"`
	Proxy               string `yaml:"proxy" json:"proxy,omitempty"`

	// http
	BaseURL         string         `yaml:"base_url" json:"base_url,omitempty"`
	Method          string         `yaml:"method" json:"method,omitempty"`                     // templated tools
	Path            string         `yaml:"path" json:"path,omitempty"`                         // templated tools: /repos/{owner}/{repo}/issues
	InputSchema     map[string]any `yaml:"input_schema" json:"input_schema,omitempty"`         // templated tools
	FollowRedirects string         `yaml:"follow_redirects" json:"follow_redirects,omitempty"` // "" / none | same_origin
	// AllowHeaders names method, path or host override headers (such as
	// X-Forwarded-Proto) that the agent of a generic tool may set; every
	// other one is refused.
	AllowHeaders []string `yaml:"allow_headers" json:"allow_headers,omitempty"`
	AWS          *AWS     `yaml:"aws" json:"aws,omitempty"` // http + inject aws_sigv4

	// s3
	Bucket    string `yaml:"bucket" json:"bucket,omitempty"`
	Region    string `yaml:"region" json:"region,omitempty"`
	Endpoint  string `yaml:"endpoint" json:"endpoint,omitempty"`
	PathStyle bool   `yaml:"path_style" json:"path_style,omitempty"`
	MaxKeys   int    `yaml:"max_keys" json:"max_keys,omitempty"`
	// STSEndpoint is where an s3 tool whose secret names a role calls
	// AssumeRole; empty means AWS STS in Region.
	STSEndpoint string `yaml:"sts_endpoint" json:"sts_endpoint,omitempty"`
}

// Credential says which vault secret a tool uses and how it is injected.
type Credential struct {
	Secret string `yaml:"secret" json:"secret"`
	Inject string `yaml:"inject" json:"inject"`           // bearer | header | basic | query | aws_sigv4 | oauth2 | github_app
	Header string `yaml:"header" json:"header,omitempty"` // inject: header
	Prefix string `yaml:"prefix" json:"prefix,omitempty"` // inject: header, optional ("Token ")
	Param  string `yaml:"param" json:"param,omitempty"`   // inject: query
	// OAuth2 says how an oauth2 credential gets its access tokens.
	OAuth2 *OAuth2 `yaml:"oauth2" json:"oauth2,omitempty"` // inject: oauth2
	// GitHubApp names the GitHub App installation whose tokens a
	// github_app credential mints per session.
	GitHubApp *GitHubApp `yaml:"github_app" json:"github_app,omitempty"` // inject: github_app
}

// OAuth2 is the oauth2 block of an http tool's credential: the secret
// holds {"client_id", "client_secret"} (and, once someone logged in, the
// refresh token), and calls carry an access token keyhole gets from
// TokenURL.
type OAuth2 struct {
	Flow     string   `yaml:"flow" json:"flow"` // client_credentials | authorization_code
	TokenURL string   `yaml:"token_url" json:"token_url"`
	AuthURL  string   `yaml:"auth_url" json:"auth_url,omitempty"` // authorization_code only
	Scopes   []string `yaml:"scopes" json:"scopes,omitempty"`
	Audience string   `yaml:"audience" json:"audience,omitempty"`
}

// GitHubApp is the github_app block of an http tool's credential: the
// secret holds the App's private key (PEM), and each session's calls
// carry an installation token limited to what its grants reach.
type GitHubApp struct {
	AppID          int64  `yaml:"app_id" json:"app_id"`
	InstallationID int64  `yaml:"installation_id" json:"installation_id"`
	APIURL         string `yaml:"api_url" json:"api_url,omitempty"` // default https://api.github.com
}

// Response shapes what of an upstream response reaches the agent.
type Response struct {
	MaxBytes int      `yaml:"max_bytes" json:"max_bytes,omitempty"` // default 262144
	Fields   []string `yaml:"fields" json:"fields,omitempty"`       // gjson paths; only these reach the agent
}

// AWS names the service and region an http tool signs for with SigV4.
type AWS struct {
	Service string `yaml:"service" json:"service"`
	Region  string `yaml:"region" json:"region"`
}

// Tool is a compiled tool: everything parsed and compiled once at load, so a
// call only evaluates.
type Tool interface {
	// Name is the tool's key in keyhole.yaml.
	Name() string
	// Kind is "http" or "s3".
	Kind() string
	// Description is the configured description, or a default one.
	Description() string
	// SecretName is the vault secret the tool injects.
	SecretName() string
	// InputSchema is the JSON Schema of the tool's arguments, as shown in tools/list.
	InputSchema() json.RawMessage
	// Info is what policy needs to know about the tool to compile grants for it.
	Info() policy.ToolInfo
	// Prepare validates raw arguments against the input schema and
	// normalizes them into a Call. Invalid or unsafe arguments return an
	// *ArgError whose message is safe to show the agent.
	Prepare(args json.RawMessage) (*Call, error)
	// Execute performs a prepared, allowed call with the secret injected,
	// taking everything else it needs from env. Everything it returns
	// (result and error text) is already scrubbed of every form of secret.
	Execute(ctx context.Context, call *Call, secret []byte, env CallEnv) (*Result, error)
	// Scrubber returns a scrubber for every value of secret whose forms
	// must never be shown or kept: the secret itself and, by injection
	// mode, its parts (a basic-auth password, each AWS key field).
	Scrubber(secret []byte) *scrub.Scrubber
}

// Call is a validated, normalized call, ready for policy and execution.
type Call struct {
	// Request is what policy decides on and what Execute sends.
	Request policy.Request
	// Args are the arguments for the audit record (not yet scrubbed of secrets
	// the agent might have pasted; the audit scrubs them).
	Args json.RawMessage
	// tool is the tool that prepared the call, which describes it.
	tool interface{ auditFields(*Call) AuditFields }
	// kind-specific, unexported: built by Prepare and used by Execute.
	http *httpCall
	s3   *s3Call
}

// AuditFields describes a prepared call for its audit record: which
// upstream it goes to and what it asks there, in canonical form. It never
// holds a query value, a header or a body.
type AuditFields struct {
	Kind string // "http" or "s3"
	// http
	Method     string
	Host       string
	Path       string
	QueryNames []string // sorted, URL-escaped
	// s3
	Bucket string
	Action string
	Key    string // the object key, or the prefix of a list
}

// AuditFields describes the call for its audit record.
func (c *Call) AuditFields() AuditFields {
	if c == nil || c.tool == nil {
		return AuditFields{}
	}
	return c.tool.auditFields(c)
}

// CallEnv is what executing a call takes from the broker that runs it.
// The broker sets every field for every call, whatever the tool's kind.
type CallEnv struct {
	// Scrubber removes every form of the call's secret; it is
	// Tool.Scrubber of the secret passed to Execute.
	Scrubber *scrub.Scrubber
	// Authorize re-authorizes a follow-up request the tool would make for
	// this call (a same-origin redirect hop) against the session's scope
	// and liveness, without spending its limits. A non-nil error stops the
	// call there. nil authorizes nothing.
	Authorize func(policy.Request) error
	// Session is the session the call runs in. s3 tools whose secret names
	// a role need it: they assume the role once per session, limited to
	// its grants and lifetime; so do github_app tools.
	Session *CallSession
	// Secret stores what a tool learns about its own secret: a rotated
	// OAuth 2.0 refresh token, or that the secret needs an operator's
	// login. nil stores nothing.
	Secret SecretWriter
}

// Hop is one request a call made after its first: a same-origin redirect
// it followed once Authorize allowed it.
type Hop struct {
	Method string
	Path   string // canonical, under the tool's base path
	Status int    // the upstream's answer to this request; 0 if none came
}

// CallSession is what a tool may know of the session a call runs in.
type CallSession struct {
	// ID is the session id.
	ID string
	// Expires is when the session ends.
	Expires time.Time
	// S3 is what the session's scope grants on the called tool, when it
	// is an s3 tool. It is shared by the scope's calls: read it only.
	S3 []policy.S3Grant
	// HTTP is what the session's scope grants on the called tool, when it
	// is an http tool. It is shared by the scope's calls: read it only.
	HTTP []policy.HTTPGrant
}

// Result is the shaped, scrubbed outcome of an executed call.
type Result struct {
	// Structured is the structured content: {status, headers, body, truncated}
	// for http, the S3 result for s3. It marshals to JSON.
	Structured any
	// StructuredJSON, when set, is Structured as JSON: the very bytes that
	// were checked for every form of the secret, for the server to send as
	// they are rather than marshal Structured again.
	StructuredJSON json.RawMessage
	// Text is the same content as text, for clients that read only text.
	Text string
	// Status is the upstream HTTP status (0 if none).
	Status int
	// BytesIn is the number of response body bytes read from upstream.
	BytesIn int64
	// BytesOut is the number of request body bytes sent upstream.
	BytesOut int64
	// Scrubbed says a secret had to be removed from the response.
	Scrubbed bool
	// Withheld says the body (or the whole result) was withheld because a
	// credential was found in it in an encoded form that could not be
	// redacted in place; Scrubbed is set too.
	Withheld bool
	// Truncated says the body was cut at response.max_bytes.
	Truncated bool
	// UpstreamError says a templated or projected tool's upstream answered
	// 4xx or 5xx: the result is the status and the error body, capped, and
	// the agent sees it as a tool error.
	UpstreamError bool
	// Hops are the redirects the call followed, in order.
	Hops []Hop
	// Credential says what credential the call sent, for the audit.
	Credential CredentialInfo
}

// ArgError is a call the tool refuses to build: invalid, unsafe or
// malformed arguments. Its message names what is wrong without echoing the
// offending value.
type ArgError struct {
	Msg string
}

func (e *ArgError) Error() string { return e.Msg }

// Env is what tools take from their surroundings rather than from config.
// The zero Env uses the system resolver.
type Env struct {
	// Resolve looks up a host's addresses; nil uses the system resolver.
	// Tests inject one to stand in for hostile DNS.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// SelfAddrs returns the broker's own listening addresses, which no
	// tool may dial. nil means none.
	SelfAddrs func() []netip.AddrPort
	// Tokens holds the OAuth 2.0 tokens of oauth2 tools, shared by every
	// tool compiled with this Env: tools with one secret refresh it once,
	// and a reloaded config goes on with the tokens of the old one. nil
	// gives each tool its own.
	Tokens *Tokens
}

// ExecError is a call that was allowed but failed on its way to or from the
// upstream. Msg is safe to show the agent; Detail is for the audit record.
// Both are already scrubbed of every secret.
type ExecError struct {
	Msg    string
	Detail string
	// Hops are the redirects the call followed before it failed.
	Hops []Hop
	// Credential says what credential the call sent or tried to get.
	Credential CredentialInfo
}

func (e *ExecError) Error() string { return e.Msg }

// Compile checks one tool's configuration and compiles it. Errors are
// *policy.FieldError with paths under "tools.<name>".
func Compile(name string, c Config, env Env) (Tool, []error) {
	switch c.Kind {
	case "http":
		return compileHTTP(name, c, env)
	case "s3":
		return compileS3(name, c, env)
	default:
		return nil, []error{&policy.FieldError{Path: "tools." + name + ".kind", Msg: `must be "http" or "s3"`}}
	}
}
