package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"golang.org/x/net/http/httpguts"
)

const (
	// httpMaxArgBytes caps the raw arguments of one call.
	httpMaxArgBytes = 1 << 20
	// httpMaxDepth caps JSON nesting of the arguments.
	httpMaxDepth = 64
	// httpMaxQuery caps the number of query parameter values.
	httpMaxQuery = 100
	// httpMaxHeaders caps the number of headers the agent may set.
	httpMaxHeaders = 32
)

// httpMethods is the exact, upper-case method allowlist: the methods a
// grant may name (policy), no more and no fewer.
var httpMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true, "OPTIONS": true}

// httpAgentForbidden are request headers the agent may never set: they
// carry credentials, route the request or frame the message. Accept-Encoding
// is among them because a compressed body could not be scrubbed.
var httpAgentForbidden = map[string]bool{
	"authorization": true, "cookie": true, "host": true, "connection": true,
	"keep-alive": true, "transfer-encoding": true, "content-length": true,
	"te": true, "trailer": true, "upgrade": true, "accept-encoding": true,
}

// httpRoutingHeaders are request headers that frameworks and proxies honour
// to change the method, path, host, scheme or client address they act on:
// a GET granted on one path could become a DELETE, another path or
// another host behind the upstream. The agent may not set them unless the
// tool names one in allow_headers. Keys are folded (httpFoldHeader).
var httpRoutingHeaders = map[string]string{
	"x-http-method-override": "X-HTTP-Method-Override",
	"x-http-method":          "X-HTTP-Method",
	"x-method-override":      "X-Method-Override",
	"x-original-url":         "X-Original-URL",
	"x-rewrite-url":          "X-Rewrite-URL",
	"x-original-host":        "X-Original-Host",
	"x-host":                 "X-Host",
	"forwarded":              "Forwarded",
	"x-forwarded-host":       "X-Forwarded-Host",
	"x-forwarded-proto":      "X-Forwarded-Proto",
	"x-forwarded-scheme":     "X-Forwarded-Scheme",
	"x-forwarded-port":       "X-Forwarded-Port",
	"x-forwarded-prefix":     "X-Forwarded-Prefix",
	"x-forwarded-server":     "X-Forwarded-Server",
	"x-forwarded-for":        "X-Forwarded-For",
	"x-real-ip":              "X-Real-IP",
}

// httpFoldHeader folds a header name as CGI, WSGI and PHP do when they map
// headers to variables (HTTP_X_API_KEY): case and "_" versus "-" do not
// count. Agent headers are compared with forbidden, routing and injection
// headers after folding, so X_Api_Key cannot shadow an injected X-Api-Key.
func httpFoldHeader(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// allowHeaders checks allow_headers: routing headers (by name, any case)
// that the agent of a generic tool may set after all. It returns them
// folded.
func (c *httpCompiler) allowHeaders(cfg Config) map[string]bool {
	if len(cfg.AllowHeaders) == 0 {
		return nil
	}
	if cfg.Method != "" {
		c.fail("allow_headers", "applies only to generic http tools; a templated tool takes no headers from the agent")
		return nil
	}
	allowed := map[string]bool{}
	for i, name := range cfg.AllowHeaders {
		field := fmt.Sprintf("allow_headers[%d]", i)
		f := httpFoldHeader(name)
		switch {
		case httpRoutingHeaders[f] == "":
			names := make([]string, 0, len(httpRoutingHeaders))
			for _, n := range httpRoutingHeaders {
				names = append(names, n)
			}
			sort.Strings(names)
			c.fail(field, "%s is not a method, path or host override header; only these can be allowed: %s (the rest of the refused headers never can)", httpPrintable(name, 64), strings.Join(names, ", "))
		case allowed[f]:
			c.fail(field, "is listed twice")
		}
		allowed[f] = true
	}
	return allowed
}

func httpArgErr(msg string) error { return &ArgError{Msg: msg} }

// Prepare validates the arguments and normalizes them into a Call. The raw
// arguments are capped at 1 MiB and 64 levels of nesting and may not repeat
// an object key; keys match exactly (no case folding). Then they must
// satisfy the tool's compiled schema, and the path, query, headers and body
// must be safe to send as they are: anything else is an *ArgError whose
// message never echoes the offending value.
func (t *httpTool) Prepare(args json.RawMessage) (*Call, error) {
	if len(args) > httpMaxArgBytes {
		return nil, httpArgErr("arguments: larger than 1 MiB")
	}
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage("{}")
	}
	v, err := httpDecodeJSON(args)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, httpArgErr("arguments: must be a JSON object")
	}
	if t.templated() || !httpGenericArgsValid(obj) {
		if err := t.schema.Validate(obj); err != nil {
			return nil, httpArgErr(httpSchemaMessage(err))
		}
	}
	call := &Call{Args: append(json.RawMessage(nil), args...), tool: t, http: &httpCall{}}
	call.Request.Tool = t.name
	if t.templated() {
		err = t.prepareTemplated(obj, call)
	} else {
		err = t.prepareGeneric(obj, call)
	}
	if err != nil {
		return nil, err
	}
	return call, nil
}

// httpGenericArgsValid reports whether obj satisfies httpGenericSchema,
// checked in Go: every key one the schema names, method and path present,
// method one of its enum, path a string, query and headers objects of
// strings, body a string, object or array. It is a fast path, never the
// last word: an object it does not pass goes through the compiled schema,
// which either accepts it or says what is wrong, so what is accepted and
// every message are the schema's. The jsonschema validator allocates about
// thirty times per call; this, nothing (TestGenericArgsFastPath).
func httpGenericArgsValid(obj map[string]any) bool {
	for k, v := range obj {
		switch k {
		case "method":
			if m, ok := v.(string); !ok || !httpMethods[m] {
				return false
			}
		case "path":
			if _, ok := v.(string); !ok {
				return false
			}
		case "query", "headers":
			m, ok := v.(map[string]any)
			if !ok {
				return false
			}
			for _, x := range m {
				if _, ok := x.(string); !ok {
					return false
				}
			}
		case "body":
			switch v.(type) {
			case string, map[string]any, []any:
			default:
				return false
			}
		default:
			return false
		}
	}
	_, method := obj["method"]
	_, path := obj["path"]
	return method && path
}

// prepareGeneric normalizes {method, path, query?, headers?, body?}.
func (t *httpTool) prepareGeneric(obj map[string]any, call *Call) error {
	method, _ := obj["method"].(string)
	if !httpMethods[method] {
		return httpArgErr("method: must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (upper case)")
	}
	path, _ := obj["path"].(string)
	segs, err := httpCanonicalPath(path, false)
	if err != nil {
		return err
	}
	call.Request.Method, call.Request.Segments = method, segs

	q := url.Values{}
	if m, ok := obj["query"].(map[string]any); ok {
		if len(m) > httpMaxQuery {
			return httpArgErr("query: more than 100 parameters")
		}
		for k, v := range m {
			s, _ := v.(string)
			q.Add(k, s)
		}
	}
	if err := t.checkQuery(q); err != nil {
		return err
	}
	call.http.query = q

	h, err := t.checkHeaders(obj["headers"])
	if err != nil {
		return err
	}
	call.http.header = h

	body, present := obj["body"]
	if !present {
		return nil
	}
	if method == http.MethodGet || method == http.MethodHead {
		return httpArgErr("body: not allowed with " + method)
	}
	call.http.hasBody = true
	if s, ok := body.(string); ok {
		call.http.body = []byte(s)
		return nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return httpArgErr("body: cannot be encoded as JSON")
	}
	call.http.body = b
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	return nil
}

// prepareTemplated renders the tool's path template with the arguments,
// each parameter one segment, and sends the other schema properties as
// query parameters.
func (t *httpTool) prepareTemplated(obj map[string]any, call *Call) error {
	segs := make([]string, 0, len(t.tmpl))
	for _, s := range t.tmpl {
		if s.param == "" {
			segs = append(segs, s.lit)
			continue
		}
		v, ok := httpScalar(obj[s.param], false)
		if !ok {
			return httpArgErr("path parameter " + s.param + ": must be a string or number")
		}
		if msg := httpSegmentProblem(v); msg != "" {
			return httpArgErr("path parameter " + s.param + ": " + msg)
		}
		segs = append(segs, v)
	}
	call.Request.Method, call.Request.Segments = t.method, segs

	q := url.Values{}
	for _, p := range t.queryProps {
		switch v := obj[p].(type) {
		case nil:
		case []any:
			for _, e := range v {
				s, ok := httpScalar(e, true)
				if !ok {
					return httpArgErr("query parameter " + p + ": array items must be strings, numbers or booleans")
				}
				q.Add(p, s)
			}
		default:
			s, ok := httpScalar(v, true)
			if !ok {
				return httpArgErr("query parameter " + p + ": must be a string, number, boolean or array of them")
			}
			q.Set(p, s)
		}
	}
	if err := t.checkQuery(q); err != nil {
		return err
	}
	call.http.query = q
	call.http.header = http.Header{}
	return nil
}

// httpScalar returns a string or number argument (or, with allowBool, a
// boolean) as text.
func httpScalar(v any, allowBool bool) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), allowBool
	}
	return "", false
}

// checkQuery refuses too many parameters, control bytes, and any parameter
// that shadows the credential's query parameter (case-insensitively).
func (t *httpTool) checkQuery(q url.Values) error {
	n := 0
	for k, vs := range q {
		n += len(vs)
		if n > httpMaxQuery {
			return httpArgErr("query: more than 100 parameters")
		}
		if k == "" {
			return httpArgErr("query: a parameter name is empty")
		}
		if httpHasControl(k) {
			return httpArgErr("query: a parameter name contains a control character")
		}
		for _, v := range vs {
			if httpHasControl(v) {
				return httpArgErr("query: a parameter value contains a control character")
			}
		}
		if t.cred.Inject == "query" && strings.EqualFold(k, t.cred.Param) {
			return httpArgErr("query: parameter " + t.cred.Param + " is set by keyhole")
		}
	}
	return nil
}

// checkHeaders turns the agent's headers into an http.Header, refusing
// invalid names and values, headers the agent may not set (never merging
// them), a header given twice in different case or spelling (X-A and
// x_a), and more than 32.
func (t *httpTool) checkHeaders(v any) (http.Header, error) {
	h := http.Header{}
	m, _ := v.(map[string]any)
	if len(m) > httpMaxHeaders {
		return nil, httpArgErr("headers: more than 32 headers")
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	seen := map[string]bool{}
	for _, name := range names {
		if !httpguts.ValidHeaderFieldName(name) {
			return nil, httpArgErr("headers: a header name is not a valid HTTP token")
		}
		canon := http.CanonicalHeaderKey(name)
		folded := httpFoldHeader(name)
		if msg := t.headerForbidden(folded); msg != "" {
			return nil, httpArgErr("headers: " + canon + " " + msg)
		}
		val, _ := m[name].(string)
		if !httpguts.ValidHeaderFieldValue(val) {
			return nil, httpArgErr("headers: the value of " + canon + " contains invalid characters")
		}
		if seen[folded] {
			return nil, httpArgErr("headers: " + canon + " is given twice (names differing only in case or in _ and - are one header)")
		}
		seen[folded] = true
		h.Set(canon, val)
	}
	return h, nil
}

// headerForbidden says why the agent may not set the header whose folded
// name (httpFoldHeader) is folded, or "".
func (t *httpTool) headerForbidden(folded string) string {
	switch {
	case t.cred.Inject == "header" && folded == httpFoldHeader(t.cred.Header):
		return "is set by keyhole"
	case httpAgentForbidden[folded] || strings.HasPrefix(folded, "proxy-"):
		return "may not be set by the agent"
	case httpRoutingHeaders[folded] != "" && !t.allowHeaders[folded]:
		return "could move the request's method, path or host upstream; the tool does not allow it (allow_headers)"
	case t.cred.Inject == "aws_sigv4":
		for _, s := range awsSignedHeaders {
			if folded == httpFoldHeader(s) {
				return "is set by keyhole"
			}
		}
	}
	return ""
}

// httpSchemaMessage reports a schema violation by location and keyword,
// without the instance value some jsonschema messages quote.
func httpSchemaMessage(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return "arguments: do not match the input schema"
	}
	leaf := ve
	for len(leaf.Causes) > 0 {
		leaf = leaf.Causes[0]
	}
	kw := leaf.KeywordLocation[strings.LastIndexByte(leaf.KeywordLocation, '/')+1:]
	msg := leaf.Message
	switch kw {
	case "format":
		msg = "is not valid " + msg[strings.LastIndex(msg, " is not valid ")+len(" is not valid "):]
	case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum":
		msg, _, _ = strings.Cut(msg, " but found")
	case "multipleOf":
		msg = "is not a multiple of " + msg[strings.LastIndex(msg, "multipleOf ")+len("multipleOf "):]
	case "additionalProperties":
		msg = "has a property the schema does not allow"
	}
	return "arguments" + httpPrintable(leaf.InstanceLocation, 120) + ": " + msg
}

// httpPrintable quotes control and non-ASCII bytes of s and cuts it at max
// bytes, so an agent-chosen key cannot inject lines into an error.
func httpPrintable(s string, max int) string {
	q := strconv.QuoteToASCII(s)
	q = q[1 : len(q)-1]
	if len(q) > max {
		q = q[:max] + "..."
	}
	return q
}
