package tools

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/tools/egress"
	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// httpMaxRedirects is the most same-origin redirect hops one call follows.
const httpMaxRedirects = 5

// httpHop is one request of a call: the first, or a same-origin redirect.
type httpHop struct {
	method string
	segs   []string
	query  url.Values
	body   []byte
	// hasBody distinguishes an empty body from none.
	hasBody bool
}

// Execute sends a prepared call with the secret injected and shapes the
// response. The tool timeout bounds the whole call, body read included.
// Redirects are returned to the agent as they are, unless the tool follows
// same_origin redirects and env.Authorize authorizes the hop (see nextHop);
// each hop followed is listed in the result (or the error). Every byte of
// the result and of a returned *ExecError is scrubbed of every form of the
// secret, with env.Scrubber.
func (t *httpTool) Execute(ctx context.Context, call *Call, secret []byte, env CallEnv) (*Result, error) {
	if call == nil || call.http == nil || call.tool != t {
		return nil, &ExecError{Msg: "call was not prepared by this http tool"}
	}
	sc := env.Scrubber
	if sc == nil {
		return nil, &ExecError{Msg: "internal error: the call has no scrubber"}
	}
	if len(secret) == 0 {
		return nil, &ExecError{Msg: "credential is empty", Detail: "secret " + t.cred.Secret + " is empty"}
	}
	ctx, cancel := t.callContext(ctx)
	defer cancel()
	cred, info, sc, err := t.credential(ctx, secret, env)
	if err != nil {
		return nil, err
	}

	hop := httpHop{
		method:  call.Request.Method,
		segs:    call.Request.Segments,
		query:   call.http.query,
		body:    call.http.body,
		hasBody: call.http.hasBody,
	}
	var resp *http.Response
	var hops []Hop
	fail := func(err error) (*Result, error) {
		ee := t.execError(ctx, sc, err)
		ee.Hops, ee.Credential = hops, info
		return nil, ee
	}
	for n := 0; ; n++ {
		req, err := t.newRequest(ctx, hop, call.http.header, cred)
		if err != nil {
			return fail(err)
		}
		resp, err = t.client.Do(req)
		if err != nil {
			return fail(err)
		}
		if n > 0 {
			hops[n-1].Status = resp.StatusCode
		}
		next, ok := t.nextHop(resp, req.URL, hop, env.Authorize)
		if !ok || n == httpMaxRedirects {
			break
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		hop = next
		p, _ := sc.String(t.hopRequest(hop.method, hop.segs).Path())
		hops = append(hops, Hop{Method: hop.method, Path: p})
	}
	defer resp.Body.Close()
	res, err := t.shape(ctx, resp, sc, int64(len(call.http.body)))
	if err != nil {
		var ee *ExecError
		if errors.As(err, &ee) {
			ee.Hops, ee.Credential = hops, info
		}
		return nil, err
	}
	res.Hops, res.Credential = hops, info
	return res, nil
}

// credential returns what a call injects, what the audit records of it,
// and the scrubber for the call's result: for a static secret, the
// secret and env.Scrubber; for oauth2 and github_app, the token the
// minter gives and a scrubber that also covers every value derived from
// the secret, the token just minted included.
func (t *httpTool) credential(ctx context.Context, secret []byte, env CallEnv) ([]byte, CredentialInfo, *scrub.Scrubber, error) {
	if t.mint == nil {
		return secret, CredentialInfo{Kind: CredStatic}, env.Scrubber, nil
	}
	m, err := t.mint.token(ctx, secret, env)
	if err != nil {
		return nil, CredentialInfo{}, nil, err
	}
	return []byte(m.token), m.info, m.sc, nil
}

// Scrubber implements Tool.
func (t *httpTool) Scrubber(secret []byte) *scrub.Scrubber {
	return scrub.New(t.scrubValues(secret)...)
}

// minUserScrub is the shortest basic-auth user name scrubbed on its own:
// APIs such as Stripe put the key in the user name, but a short one
// ("admin") is a word, not a key, and would redact ordinary text.
const minUserScrub = 8

// scrubValues lists every value whose forms must not reach the agent: the
// secret itself; for basic, the password and a key-length user name (or
// the user name whatever its length when the password is empty: then it is
// the key); for aws_sigv4, each credential field. The whole "user:password"
// is not one of them: any eight-byte part of a value is redacted, and
// "alice:p" is mostly a public name; every form of the whole holds the
// forms of the password, which are.
func (t *httpTool) scrubValues(secret []byte) [][]byte {
	switch t.cred.Inject {
	case "basic":
		user, pass, ok := bytes.Cut(secret, []byte(":"))
		if !ok {
			break
		}
		var vals [][]byte
		if len(pass) > 0 {
			vals = append(vals, pass)
		}
		if len(user) >= minUserScrub || len(pass) == 0 && len(user) > 0 {
			vals = append(vals, user)
		}
		if len(vals) > 0 {
			return vals
		}
	case "aws_sigv4":
		return awsSecretValues(secret)
	}
	if t.mint != nil {
		return t.mint.scrubValues(secret)
	}
	return [][]byte{secret}
}

// httpCredError is an injection failure; its message names no part of the
// secret.
type httpCredError struct{ msg string }

func (e *httpCredError) Error() string { return "tools: " + e.msg }

// newRequest builds one upstream request from checked parts and injects the
// credential last.
func (t *httpTool) newRequest(ctx context.Context, hop httpHop, header map[string][]string, secret []byte) (*http.Request, error) {
	q := url.Values{}
	for k, vs := range hop.query {
		q[k] = slices.Clone(vs)
	}
	if t.cred.Inject == "query" {
		q.Set(t.cred.Param, string(secret))
	}
	u := t.upstreamURL(hop.segs, q.Encode())
	var body io.Reader
	if hop.hasBody {
		body = bytes.NewReader(hop.body)
	}
	req, err := http.NewRequestWithContext(ctx, hop.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("tools: build request: %w", err)
	}
	req.URL, req.Host = u, u.Host
	for k, vs := range header {
		req.Header[k] = slices.Clone(vs)
	}
	if !hop.hasBody {
		req.Header.Del("Content-Type")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "keyhole")
	}
	switch t.cred.Inject {
	case "bearer", "oauth2", "github_app":
		if !httpguts.ValidHeaderFieldValue(string(secret)) {
			return nil, &httpCredError{"credential is not a valid header value"}
		}
		req.Header.Set("Authorization", "Bearer "+string(secret))
	case "header":
		if !httpguts.ValidHeaderFieldValue(string(secret)) {
			return nil, &httpCredError{"credential is not a valid header value"}
		}
		req.Header.Set(t.cred.Header, t.cred.Prefix+string(secret))
	case "basic":
		user, pass, ok := strings.Cut(string(secret), ":")
		if !ok {
			return nil, &httpCredError{`basic credential must be "user:password"`}
		}
		req.SetBasicAuth(user, pass)
	case "aws_sigv4":
		if err := signAWS(req, hop.body, secret, t.aws); err != nil {
			return nil, &httpCredError{"aws_sigv4 signing failed: " + err.Error()}
		}
	}
	return req, nil
}

// nextHop decides whether to follow resp, a redirect of the request to
// cur. It follows only when the tool has follow_redirects: same_origin and
// authorize is set, and only to the tool's own scheme, host and port, to a
// path that canonicalizes under the base path, with a query that passes
// the same checks as the agent's; authorize must then allow the hop as a
// policy.Request. 301, 302 and 303 turn a non-GET/HEAD into a GET without
// body; 307 and 308 keep method and body.
func (t *httpTool) nextHop(resp *http.Response, cur *url.URL, hop httpHop, authorize func(policy.Request) error) (httpHop, bool) {
	if !t.follow || authorize == nil {
		return httpHop{}, false
	}
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return httpHop{}, false
	}
	loc := resp.Header.Get("Location")
	if loc == "" || httpHasControl(loc) {
		return httpHop{}, false
	}
	target, err := cur.Parse(loc)
	if err != nil || target.Scheme != t.origin.Scheme || target.User != nil || target.Opaque != "" {
		return httpHop{}, false
	}
	host, ok := httpNormalizeHost(target)
	if !ok || httpHostPort(host, target.Scheme) != httpHostPort(t.origin.Host, t.origin.Scheme) {
		return httpHop{}, false
	}
	segs, err := httpCanonicalPath(target.EscapedPath(), false)
	if err != nil || len(segs) < len(t.baseSegs) || !slices.Equal(segs[:len(t.baseSegs)], t.baseSegs) {
		return httpHop{}, false
	}
	q, err := url.ParseQuery(target.RawQuery)
	if err != nil {
		return httpHop{}, false
	}
	if t.cred.Inject == "query" {
		for k := range q {
			if strings.EqualFold(k, t.cred.Param) {
				delete(q, k)
			}
		}
	}
	if t.checkQuery(q) != nil {
		return httpHop{}, false
	}
	next := httpHop{method: hop.method, segs: segs[len(t.baseSegs):], query: q, body: hop.body, hasBody: hop.hasBody}
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther:
		if hop.method != http.MethodGet && hop.method != http.MethodHead {
			next.method = http.MethodGet
		}
		next.body, next.hasBody = nil, false
	}
	if authorize(t.hopRequest(next.method, next.segs)) != nil {
		return httpHop{}, false
	}
	return next, true
}

// httpHostPort returns host with its port made explicit.
func httpHostPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "443"
	if scheme == "http" {
		port = "80"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// execError turns a failure on the way to or from the upstream into an
// *ExecError: a short, generic message for the agent and the scrubbed Go
// error (which may quote the URL, with a query-injected key) as Detail.
func (t *httpTool) execError(ctx context.Context, sc *scrub.Scrubber, err error) *ExecError {
	detail, _ := sc.String(err.Error())
	var (
		ne      net.Error
		credErr *httpCredError
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		hostErr x509.HostnameError
	)
	msg := "upstream unreachable"
	switch {
	case errors.As(err, &credErr):
		msg = "credential could not be applied: " + strings.TrimPrefix(detail, "tools: ")
	case errors.Is(err, egress.ErrRefused):
		msg = "upstream request refused: address not allowed by egress policy"
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		msg = fmt.Sprintf("upstream timed out after %s", t.timeout)
	case errors.Is(err, context.Canceled):
		msg = "call canceled"
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &hostErr):
		msg = "upstream TLS certificate not trusted"
	}
	return &ExecError{Msg: msg, Detail: detail}
}

// hopRequest is the policy.Request a redirect hop is re-authorized as.
func (t *httpTool) hopRequest(method string, segs []string) policy.Request {
	return policy.Request{Tool: t.name, Method: method, Segments: segs}
}
