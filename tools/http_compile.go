package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/idna"

	"github.com/keyhole-dev/keyhole/policy"
)

const (
	httpDefaultTimeout  = 30 * time.Second
	httpMaxTimeout      = 5 * time.Minute
	httpDefaultMaxBytes = 262144
	httpMaxMaxBytes     = 64 << 20
)

// httpSecretName is the form of a vault secret name.
var httpSecretName = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

// httpParamName is the form of a path template parameter name.
var httpParamName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// httpGenericSchema is the argument schema of every generic http tool.
const httpGenericSchema = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["method", "path"],
  "properties": {
    "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], "description": "HTTP method, upper case."},
    "path": {"type": "string", "description": "Request path under the tool's base URL, starting with \"/\". No query string: use query."},
    "query": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Query parameters."},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra request headers. Authorization, Cookie, Host, Proxy-*, hop-by-hop headers and headers that override the method, path or host (X-HTTP-Method-Override, X-Forwarded-Host, Forwarded, ...) are refused; names are compared ignoring case and _ versus -."},
    "body": {"type": ["string", "object", "array"], "description": "Request body: a string, or JSON sent as application/json."}
  }
}`

// httpCompiler collects every configuration error of one tool, so the user
// sees them all at once.
type httpCompiler struct {
	name string
	errs []error
}

func (c *httpCompiler) fail(field, format string, args ...any) {
	c.errs = append(c.errs, &policy.FieldError{Path: "tools." + c.name + "." + field, Msg: fmt.Sprintf(format, args...)})
}

// compileHTTP checks an http tool's configuration and compiles it: origin,
// credential, limits, argument schema, path template and one *http.Client
// with the egress-checking transport. Errors are *policy.FieldError under
// "tools.<name>".
func compileHTTP(name string, cfg Config, env Env) (Tool, []error) {
	c := &httpCompiler{name: name}
	t := &httpTool{name: name, cred: cfg.Credential, aws: cfg.AWS}

	c.otherKindFields(cfg)
	t.origin, t.baseSegs = c.baseURL(cfg)
	c.credential(cfg)
	t.timeout = c.timeout(cfg.Timeout)
	t.maxBytes, t.fields, t.eachFields = c.response(cfg.Response)
	switch cfg.FollowRedirects {
	case "", "none":
	case "same_origin":
		t.follow = true
	default:
		c.fail("follow_redirects", `must be "none" or "same_origin"`)
	}
	c.template(t, cfg)
	t.allowHeaders = c.allowHeaders(cfg)
	net := checkNetwork(cfg, c.fail)

	if len(c.errs) > 0 {
		return nil, c.errs
	}
	t.description = cfg.Description
	if t.description == "" {
		t.description = t.defaultDescription()
	}
	// Execute builds each redirect hop itself, so a credential is never
	// copied to another origin.
	t.client = net.client(env, clientTimeouts{dial: t.timeout, headers: t.timeout}, nil)
	t.mint = buildMinter(name, cfg, t.client, t.timeout, env)
	return t, nil
}

func (t *httpTool) defaultDescription() string {
	base := t.origin.Scheme + "://" + t.origin.Host + httpJoinPath(t.baseSegs)
	if t.templated() {
		return fmt.Sprintf("%s %s on %s.", t.method, t.path, base)
	}
	return fmt.Sprintf("HTTP requests to %s: give method, path (under the base URL), and optionally query, headers and body.", base)
}

// otherKindFields rejects fields that belong to the s3 kind.
func (c *httpCompiler) otherKindFields(cfg Config) {
	for _, f := range []struct {
		set  bool
		name string
	}{
		{cfg.Bucket != "", "bucket"},
		{cfg.Region != "", "region"},
		{cfg.Endpoint != "", "endpoint"},
		{cfg.PathStyle, "path_style"},
		{cfg.MaxKeys != 0, "max_keys"},
		{cfg.STSEndpoint != "", "sts_endpoint"},
	} {
		if f.set {
			c.fail(f.name, "applies only to s3 tools")
		}
	}
}

// baseURL parses and normalizes base_url: an absolute https URL (http only
// with allow_private_network or allow_insecure_http) without userinfo,
// query or fragment, whose host is lower-cased, punycoded and stripped of a
// trailing dot, and whose path is canonical.
func (c *httpCompiler) baseURL(cfg Config) (*url.URL, []string) {
	origin := &url.URL{Scheme: "https", Host: "invalid"}
	if cfg.BaseURL == "" {
		c.fail("base_url", "is required")
		return origin, nil
	}
	u, err := url.Parse(cfg.BaseURL)
	switch {
	case err != nil:
		c.fail("base_url", "is not a valid URL")
		return origin, nil
	case !u.IsAbs() || u.Opaque != "":
		c.fail("base_url", "must be an absolute URL such as https://api.example.com")
		return origin, nil
	case u.User != nil:
		c.fail("base_url", "must not contain userinfo; use credential")
	case u.RawQuery != "" || u.ForceQuery:
		c.fail("base_url", "must not contain a query")
	case u.Fragment != "" || strings.Contains(cfg.BaseURL, "#"):
		c.fail("base_url", "must not contain a fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !cfg.AllowPrivateNetwork && !cfg.AllowInsecureHTTP {
			c.fail("base_url", "http is allowed only with allow_private_network or allow_insecure_http; use https")
		}
	default:
		c.fail("base_url", "scheme must be https")
	}
	host, ok := httpNormalizeHost(u)
	if !ok {
		c.fail("base_url", "host is not a valid host name, IP address or port")
	}
	origin = &url.URL{Scheme: u.Scheme, Host: host}
	segs, err := httpCanonicalPath(u.EscapedPath(), true)
	if err != nil {
		c.fail("base_url", "path: %s", strings.TrimPrefix(err.Error(), "path: "))
	}
	return origin, segs
}

// httpNormalizeHost returns u's host[:port] lower-cased, without a trailing
// dot, IDNA-encoded to punycode, and validates the port.
func httpNormalizeHost(u *url.URL) (string, bool) {
	name, port := u.Hostname(), u.Port()
	if name == "" {
		return "", false
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", false
		}
	}
	if addr, err := netip.ParseAddr(name); err == nil {
		if addr.Zone() != "" {
			return "", false
		}
		if port == "" && addr.Is6() {
			return "[" + addr.String() + "]", true
		}
		if port == "" {
			return addr.String(), true
		}
		return net.JoinHostPort(addr.String(), port), true
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	ascii, err := idna.Lookup.ToASCII(name)
	if err != nil || ascii == "" {
		return "", false
	}
	if port == "" {
		return ascii, true
	}
	return net.JoinHostPort(ascii, port), true
}

// httpInjectForbidden are headers a tool may not inject its credential
// into: they frame the message or route it.
var httpInjectForbidden = map[string]bool{
	"host": true, "connection": true, "keep-alive": true, "transfer-encoding": true,
	"content-length": true, "te": true, "trailer": true, "upgrade": true, "content-type": true,
}

// credential validates the credential block for an http tool.
func (c *httpCompiler) credential(cfg Config) {
	cr := cfg.Credential
	if !httpSecretName.MatchString(cr.Secret) {
		c.fail("credential.secret", "must match ^[a-z][a-z0-9_.-]{0,63}$")
	}
	switch cr.Inject {
	case "bearer", "basic", "query", "header", "aws_sigv4", "oauth2", "github_app":
	case "":
		c.fail("credential.inject", "is required: bearer, header, basic, query, aws_sigv4, oauth2 or github_app")
	default:
		c.fail("credential.inject", "must be bearer, header, basic, query, aws_sigv4, oauth2 or github_app")
	}
	c.mintedCredential(cfg)
	if cr.Inject == "header" {
		lower := strings.ToLower(cr.Header)
		switch {
		case cr.Header == "":
			c.fail("credential.header", "is required with inject: header")
		case !httpguts.ValidHeaderFieldName(cr.Header):
			c.fail("credential.header", "is not a valid header name")
		case httpInjectForbidden[lower] || strings.HasPrefix(lower, "proxy-"):
			c.fail("credential.header", "%s cannot carry a credential", cr.Header)
		}
		if !httpguts.ValidHeaderFieldValue(cr.Prefix) {
			c.fail("credential.prefix", "is not a valid header value")
		}
	} else {
		if cr.Header != "" {
			c.fail("credential.header", "applies only to inject: header")
		}
		if cr.Prefix != "" {
			c.fail("credential.prefix", "applies only to inject: header")
		}
	}
	if cr.Inject == "query" {
		if cr.Param == "" {
			c.fail("credential.param", "is required with inject: query")
		} else if httpHasControl(cr.Param) {
			c.fail("credential.param", "must not contain control characters")
		}
	} else if cr.Param != "" {
		c.fail("credential.param", "applies only to inject: query")
	}
	if cr.Inject == "aws_sigv4" {
		if cfg.AWS == nil || cfg.AWS.Service == "" || cfg.AWS.Region == "" {
			c.fail("aws", "service and region are required with inject: aws_sigv4")
		}
	} else if cfg.AWS != nil {
		c.fail("aws", "applies only to inject: aws_sigv4")
	}
}

func (c *httpCompiler) timeout(s string) time.Duration {
	if s == "" {
		return httpDefaultTimeout
	}
	d, err := policy.ParseDuration(s)
	switch {
	case err != nil:
		c.fail("timeout", "is not a duration such as 10s")
	case d <= 0:
		c.fail("timeout", "must be positive")
	case d > httpMaxTimeout:
		c.fail("timeout", "must be at most 5m")
	default:
		return d
	}
	return httpDefaultTimeout
}

func (c *httpCompiler) response(r Response) (int, []string, bool) {
	maxBytes := r.MaxBytes
	switch {
	case maxBytes == 0:
		maxBytes = httpDefaultMaxBytes
	case maxBytes < 0 || maxBytes > httpMaxMaxBytes:
		c.fail("response.max_bytes", "must be between 1 and %d (64 MiB)", httpMaxMaxBytes)
	}
	each := len(r.Fields) > 0
	seen := map[string]bool{}
	for i, f := range r.Fields {
		field := fmt.Sprintf("response.fields[%d]", i)
		if msg := httpFieldProblem(f); msg != "" {
			c.fail(field, "%s", msg)
		}
		if seen[f] {
			c.fail(field, "is listed twice")
		}
		seen[f] = true
		each = each && strings.HasPrefix(f, "#.") && len(f) > 2
	}
	return maxBytes, r.Fields, each
}

// httpFieldProblem returns what is wrong with a response.fields path, or
// "": only plain paths are accepted (see parseFieldPath).
func httpFieldProblem(f string) string {
	if _, err := parseFieldPath(f); err != nil {
		return strconv.Quote(f) + " " + err.Error()
	}
	return ""
}

// httpTmplSeg is one segment of a path template: a literal or a parameter.
type httpTmplSeg struct {
	lit   string
	param string
}

// template compiles method, path and input_schema (templated tool) or the
// built-in generic schema.
func (c *httpCompiler) template(t *httpTool, cfg Config) {
	if (cfg.Method == "") != (cfg.Path == "") {
		c.fail("method", "method and path must be set together (a templated tool) or both left out (a generic tool)")
		return
	}
	if cfg.Method == "" {
		if cfg.InputSchema != nil {
			c.fail("input_schema", "applies only to templated tools (with method and path)")
			return
		}
		t.schema, t.inputSchema = c.schema("", []byte(httpGenericSchema))
		return
	}
	if !httpMethods[cfg.Method] {
		c.fail("method", "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
	}
	t.method, t.path = cfg.Method, cfg.Path
	props := c.inputSchema(cfg.InputSchema)
	raw, err := json.Marshal(cfg.InputSchema)
	if err != nil {
		c.fail("input_schema", "cannot be encoded as JSON")
		return
	}
	if props != nil {
		t.schema, t.inputSchema = c.schema("input_schema", raw)
	}
	t.tmpl = c.pathTemplate(cfg.Path, props)
	used := map[string]bool{}
	for _, s := range t.tmpl {
		used[s.param] = true
	}
	for p := range props {
		if used[p] {
			continue
		}
		switch {
		case httpHasControl(p) || p == "":
			c.fail("input_schema.properties", "property names must be non-empty and free of control characters")
		case cfg.Credential.Inject == "query" && strings.EqualFold(p, cfg.Credential.Param):
			c.fail("input_schema.properties."+p, "is the credential's query parameter, set by keyhole")
		default:
			t.queryProps = append(t.queryProps, p)
		}
	}
	sort.Strings(t.queryProps)
}

// inputSchema checks that a templated tool's schema is an object schema
// and returns its properties.
func (c *httpCompiler) inputSchema(s map[string]any) map[string]any {
	if s == nil {
		c.fail("input_schema", "is required for a templated tool")
		return nil
	}
	if s["type"] != "object" {
		c.fail("input_schema.type", `must be "object"`)
		return nil
	}
	props, _ := s["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
	}
	return props
}

// schema compiles a JSON Schema once, with remote references disabled so
// loading a config never fetches anything.
func (c *httpCompiler) schema(field string, raw []byte) (*jsonschema.Schema, json.RawMessage) {
	comp := jsonschema.NewCompiler()
	comp.LoadURL = func(s string) (io.ReadCloser, error) {
		return nil, errors.New("remote schema references are not allowed")
	}
	loc := "keyhole:///tools/" + url.PathEscape(c.name) + "/input_schema.json"
	if err := comp.AddResource(loc, bytes.NewReader(raw)); err != nil {
		c.fail(field, "is not valid JSON Schema")
		return nil, nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err == nil {
		raw = compact.Bytes()
	}
	s, err := comp.Compile(loc)
	if err != nil {
		var se *jsonschema.SchemaError
		msg := err.Error()
		if errors.As(err, &se) && se.Err != nil {
			msg = se.Err.Error()
		}
		c.fail(field, "does not compile: %s", msg)
		return nil, nil
	}
	return s, json.RawMessage(raw)
}

// pathTemplate parses "/repos/{owner}/{repo}/issues": every parameter is a
// whole segment named in the schema's properties, every literal segment is
// canonical.
func (c *httpCompiler) pathTemplate(p string, props map[string]any) []httpTmplSeg {
	if !strings.HasPrefix(p, "/") {
		c.fail("path", `must start with "/"`)
		return nil
	}
	if p == "/" {
		return nil
	}
	var segs []httpTmplSeg
	seen := map[string]bool{}
	for i, raw := range strings.Split(p[1:], "/") {
		if strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") {
			name := raw[1 : len(raw)-1]
			switch {
			case !httpParamName.MatchString(name):
				c.fail("path", "segment %d: parameter name must match ^[A-Za-z_][A-Za-z0-9_]*$", i+1)
			case seen[name]:
				c.fail("path", "parameter {%s} is used twice", name)
			case props != nil && props[name] == nil:
				c.fail("path", "parameter {%s} is not defined in input_schema.properties", name)
			}
			seen[name] = true
			segs = append(segs, httpTmplSeg{param: name})
			continue
		}
		if strings.ContainsAny(raw, "{}") {
			c.fail("path", "segment %d: a parameter must be a whole segment, like /{name}/", i+1)
			continue
		}
		lit, err := httpCanonicalPath("/"+raw, false)
		if err != nil || len(lit) != 1 {
			c.fail("path", "segment %d is not a canonical path segment", i+1)
			continue
		}
		segs = append(segs, httpTmplSeg{lit: lit[0]})
	}
	return segs
}

// httpHasControl reports whether s holds an ASCII control byte.
func httpHasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
