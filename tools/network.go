package tools

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/keyhole-dev/keyhole/tools/egress"
)

// network is a tool's checked network settings, the same for every kind:
// which addresses it may dial, which CAs it trusts and which proxy it goes
// through.
type network struct {
	rules egress.Rules
	tls   *tls.Config
	proxy *url.URL // nil: none (environment proxies are never used)
}

// checkNetwork checks a tool's network settings (allow_private_network,
// allow_metadata, ca_file, proxy), reporting each problem through fail.
func checkNetwork(c Config, fail func(field, format string, args ...any)) network {
	n := network{
		rules: egress.Rules{AllowPrivate: c.AllowPrivateNetwork, AllowMetadata: c.AllowMetadata},
		tls:   &tls.Config{MinVersion: tls.VersionTLS12},
	}
	if c.CAFile != "" {
		pool, err := loadCAFile(c.CAFile)
		if err != nil {
			fail("ca_file", "%v", err)
		}
		n.tls.RootCAs = pool
	}
	if c.Proxy != "" {
		u, msg := proxyURL(c.Proxy)
		if msg != "" {
			fail("proxy", "%s", msg)
		}
		n.proxy = u
	}
	return n
}

// loadCAFile reads a PEM bundle of CA certificates, trusted instead of the
// system's roots.
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("holds no PEM certificate")
	}
	return pool, nil
}

// proxyURL parses a proxy setting: an http, https or socks5 URL of a
// host, without userinfo (credentials do not belong in keyhole.yaml).
func proxyURL(raw string) (*url.URL, string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		return nil, "must be an absolute URL such as http://proxy.internal:3128"
	case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "socks5":
		return nil, "scheme must be http, https or socks5"
	case u.User != nil:
		return nil, "must not hold userinfo; credentials do not belong in keyhole.yaml"
	}
	return u, ""
}

// clientTimeouts bound a tool's connections: dialing, and waiting for
// response headers.
type clientTimeouts struct {
	dial, headers time.Duration
}

// client builds a tool's one *http.Client, shared by all its calls so
// connections are reused: every address is checked at dial time by the
// egress rules (the broker's own listeners included), TLS is always
// verified, and redirects are never followed by the client (an http tool
// follows a same-origin hop itself, re-authorized; an s3 tool never).
// wrap, if set, wraps the transport (a body cap, say).
func (n network) client(env Env, t clientTimeouts, wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	dialer := &egress.Dialer{Rules: n.rules, Resolve: env.Resolve, Self: env.SelfAddrs, Timeout: t.dial}
	var rt http.RoundTripper = egress.NewTransport(dialer, n.tls, n.proxy, t.headers)
	if wrap != nil {
		rt = wrap(rt)
	}
	return &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
