package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// guard is a loopback listener that must receive no connection from the
// code under test.
type guard struct {
	ln   net.Listener
	port uint16
}

func newGuard(t *testing.T) *guard {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &guard{ln: ln, port: uint16(ln.Addr().(*net.TCPAddr).Port)}
}

// untouched fails t unless the first connection in the guard's accept queue
// is a sentinel made now, which proves that nothing connected before it.
func (g *guard) untouched(t *testing.T) {
	t.Helper()
	sentinel, err := net.Dial("tcp", g.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sentinel.Close()
	conn, err := g.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.RemoteAddr().String() != sentinel.LocalAddr().String() {
		t.Fatalf("listener on %s accepted a connection from %s before the sentinel: the guard was bypassed", g.ln.Addr(), conn.RemoteAddr())
	}
}

// fixedResolver answers every lookup with addrs and counts the lookups.
func fixedResolver(calls *atomic.Int32, addrs ...string) Resolver {
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		calls.Add(1)
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
}

func TestDialContextRefuses(t *testing.T) {
	g := newGuard(t)
	port := strconv.Itoa(int(g.port))
	tests := map[string]struct {
		addr    string
		resolve []string // the resolver's answer for host names
		rules   Rules
	}{
		"decimal 2130706433":       {"2130706433:" + port, []string{"127.0.0.1"}, Rules{}},
		"hex 0x7f000001":           {"0x7f000001:" + port, []string{"127.0.0.1"}, Rules{}},
		"octal 0177.0.0.1":         {"0177.0.0.1:" + port, []string{"127.0.0.1"}, Rules{}},
		"short 127.1":              {"127.1:" + port, []string{"127.0.0.1"}, Rules{}},
		"octal with private rules": {"0177.0.0.1:" + port, []string{"127.0.0.1"}, Rules{AllowPrivate: true}},
		"loopback literal":         {"127.0.0.1:" + port, nil, Rules{}},
		"loopback v6 literal":      {"[::1]:" + port, nil, Rules{}},
		"mapped loopback":          {"[::ffff:127.0.0.1]:" + port, nil, Rules{}},
		"compatible loopback":      {"[::127.0.0.1]:" + port, nil, Rules{}},
		"nat64 loopback":           {"[64:ff9b::7f00:1]:" + port, nil, Rules{}},
		"6to4 loopback":            {"[2002:7f00:1::1]:" + port, nil, Rules{}},
		"teredo loopback":          {"[2001:0:4136:e378:8000:63bf:80ff:fffe]:" + port, nil, Rules{}},
		"mapped metadata":          {"[::ffff:169.254.169.254]:80", nil, Rules{AllowPrivate: true}},
		"nat64 metadata":           {"[64:ff9b::a9fe:a9fe]:80", nil, Rules{AllowPrivate: true}},
		"6to4 metadata":            {"[2002:a9fe:a9fe::1]:80", nil, Rules{AllowPrivate: true}},
		"metadata v6":              {"[fd00:ec2::254]:80", nil, Rules{AllowPrivate: true}},
		"metadata literal":         {"169.254.169.254:80", nil, Rules{AllowPrivate: true}},
		"unspecified":              {"0.0.0.0:" + port, nil, Rules{AllowPrivate: true}},
		"name to loopback":         {"upstream.example:" + port, []string{"127.0.0.1"}, Rules{}},
		"name to metadata":         {"upstream.example:80", []string{"169.254.169.254"}, Rules{AllowPrivate: true}},
		"mixed answer":             {"upstream.example:" + port, []string{"93.184.216.34", "127.0.0.1"}, Rules{}},
		"mixed answer private":     {"upstream.example:" + port, []string{"127.0.0.1", "10.0.0.1", "169.254.169.254"}, Rules{AllowPrivate: true}},
		"empty host":               {":" + port, nil, Rules{AllowPrivate: true}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int32
			d := &Dialer{Rules: tc.rules, Resolve: fixedResolver(&calls, tc.resolve...)}
			// A cancelled context: should the guard ever let the public
			// address of a mixed answer through, the dial stops before any
			// packet leaves and the test still fails (not ErrRefused).
			ctx, cancel := context.WithCancel(context.Background())
			if tc.resolve == nil || tc.resolve[0] != "93.184.216.34" {
				defer cancel()
			} else {
				cancel()
			}
			conn, err := d.DialContext(ctx, "tcp", tc.addr)
			if err == nil {
				conn.Close()
				t.Fatalf("DialContext(%q) connected; want refused", tc.addr)
			}
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("DialContext(%q) = %v, want ErrRefused", tc.addr, err)
			}
			g.untouched(t)
		})
	}
}

func TestDialContextRebinding(t *testing.T) {
	g := newGuard(t)
	var calls atomic.Int32
	d := &Dialer{Resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
		if calls.Add(1) == 1 {
			return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}}
	addr := net.JoinHostPort("rebind.example", strconv.Itoa(int(g.port)))

	// First answer is public and allowed. A cancelled context stops the
	// dial before any packet leaves, so the test sends nothing off-host.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.DialContext(ctx, "tcp", addr); errors.Is(err, ErrRefused) || !errors.Is(err, context.Canceled) {
		t.Fatalf("first DialContext(%q) = %v, want allowed (context.Canceled, not ErrRefused)", addr, err)
	}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err == nil {
		conn.Close()
		t.Fatalf("second DialContext(%q) connected to the rebound 127.0.0.1; want refused", addr)
	}
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("second DialContext(%q) = %v, want ErrRefused", addr, err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("resolver called %d times, want 2 (no caching across dials)", n)
	}
	g.untouched(t)
}

func TestDialerControl(t *testing.T) {
	tests := map[string]struct {
		address string
		rules   Rules
		refused bool
	}{
		"public":                {"93.184.216.34:443", Rules{}, false},
		"loopback":              {"127.0.0.1:80", Rules{}, true},
		"mapped loopback":       {"[::ffff:127.0.0.1]:80", Rules{}, true},
		"loopback allowed":      {"127.0.0.1:80", Rules{AllowPrivate: true}, false},
		"metadata with private": {"169.254.169.254:80", Rules{AllowPrivate: true}, true},
		"garbage":               {"not-an-address", Rules{AllowPrivate: true}, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := &Dialer{Rules: tc.rules}
			err := d.control(context.Background(), "tcp", tc.address, nil)
			if got := errors.Is(err, ErrRefused); got != tc.refused {
				t.Fatalf("control(%q) = %v, want refused=%v", tc.address, err, tc.refused)
			}
		})
	}
}

func TestDialContextPrivateAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	var calls atomic.Int32
	d := &Dialer{Rules: Rules{AllowPrivate: true}, Resolve: fixedResolver(&calls, "127.0.0.1")}
	client := &http.Client{Transport: NewTransport(d, nil, nil, 5*time.Second)}
	for _, target := range []string{srv.URL, "http://upstream.test:" + u.Port()} {
		resp, err := client.Get(target + "/x")
		if err != nil {
			t.Fatalf("GET %s with AllowPrivate: %v", target, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("GET %s = %d %q, want 200 with a body", target, resp.StatusCode, body)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("resolver called %d times, want 1 (only for upstream.test)", n)
	}

	// Without AllowPrivate the same server is refused.
	client = &http.Client{Transport: NewTransport(&Dialer{}, nil, nil, 5*time.Second)}
	if _, err := client.Get(srv.URL); !errors.Is(err, ErrRefused) {
		t.Fatalf("GET %s without AllowPrivate = %v, want ErrRefused", srv.URL, err)
	}
}

func TestDialContextMetadataNeedsAllowMetadata(t *testing.T) {
	addr := "169.254.169.254:80"
	d := &Dialer{Rules: Rules{AllowPrivate: true}}
	if _, err := d.DialContext(context.Background(), "tcp", addr); !errors.Is(err, ErrRefused) {
		t.Fatalf("DialContext(%s) with AllowPrivate = %v, want ErrRefused", addr, err)
	}
	// Allowed with AllowMetadata; the cancelled context keeps the packet home.
	d.Rules.AllowMetadata = true
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.DialContext(ctx, "tcp", addr); errors.Is(err, ErrRefused) || !errors.Is(err, context.Canceled) {
		t.Fatalf("DialContext(%s) with AllowMetadata = %v, want allowed (context.Canceled)", addr, err)
	}
}

func TestDialContextSelf(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	self := netip.MustParseAddrPort(srv.Listener.Addr().String())
	other := netip.AddrPortFrom(self.Addr(), self.Port()+1)
	if other.Port() == 0 {
		other = netip.AddrPortFrom(self.Addr(), 1)
	}
	tests := map[string]struct {
		self    []netip.AddrPort
		refused bool
	}{
		"exact listener":         {[]netip.AddrPort{self}, true},
		"unspecified v4 on port": {[]netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), self.Port())}, true},
		"unspecified v6 on port": {[]netip.AddrPort{netip.AddrPortFrom(netip.IPv6Unspecified(), self.Port())}, true},
		"mapped listener":        {[]netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom16(self.Addr().As16()), self.Port())}, true},
		"other port":             {[]netip.AddrPort{other}, false},
		"none":                   {nil, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d := &Dialer{Rules: Rules{AllowPrivate: true}, Self: func() []netip.AddrPort { return tc.self }}
			conn, err := d.DialContext(context.Background(), "tcp", self.String())
			if tc.refused {
				if err == nil {
					conn.Close()
					t.Fatalf("DialContext(%s) with Self %v connected; want refused", self, tc.self)
				}
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("DialContext(%s) with Self %v = %v, want ErrRefused", self, tc.self, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DialContext(%s) with Self %v = %v, want a connection", self, tc.self, err)
			}
			conn.Close()
		})
	}
}

func TestDialContextBadInput(t *testing.T) {
	d := &Dialer{Rules: Rules{AllowPrivate: true}}
	tests := map[string]struct{ network, addr string }{
		"udp":        {"udp", "127.0.0.1:53"},
		"unix":       {"unix", "/tmp/sock"},
		"no port":    {"tcp", "127.0.0.1"},
		"port zero":  {"tcp", "127.0.0.1:0"},
		"named port": {"tcp", "127.0.0.1:http"},
		"big port":   {"tcp", "127.0.0.1:70000"},
		"v6 on tcp4": {"tcp4", "[::1]:80"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			conn, err := d.DialContext(context.Background(), tc.network, tc.addr)
			if err == nil {
				conn.Close()
				t.Fatalf("DialContext(%q, %q) connected; want an error", tc.network, tc.addr)
			}
		})
	}
}

func TestDialContextResolverError(t *testing.T) {
	boom := errors.New("lookup failed")
	d := &Dialer{Resolve: func(context.Context, string) ([]netip.Addr, error) { return nil, boom }}
	if _, err := d.DialContext(context.Background(), "tcp", "upstream.example:443"); !errors.Is(err, boom) {
		t.Fatalf("DialContext with failing resolver = %v, want it wrapped", err)
	}
	d.Resolve = func(context.Context, string) ([]netip.Addr, error) { return nil, nil }
	if _, err := d.DialContext(context.Background(), "tcp", "upstream.example:443"); err == nil {
		t.Fatal("DialContext with empty answer succeeded; want an error")
	}
}

func TestNewTransport(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	defer srv.Close()
	d := &Dialer{Rules: Rules{AllowPrivate: true}}

	// InsecureSkipVerify is forced off: the self-signed server is rejected.
	insecure := &tls.Config{InsecureSkipVerify: true}
	tr := NewTransport(d, insecure, nil, 5*time.Second)
	if !insecure.InsecureSkipVerify {
		t.Fatal("NewTransport modified the caller's tls.Config")
	}
	if tr.TLSClientConfig.InsecureSkipVerify {
		t.Fatal("NewTransport kept InsecureSkipVerify")
	}
	_, err := (&http.Client{Transport: tr}).Get(srv.URL)
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Fatalf("GET %s with InsecureSkipVerify requested = %v, want a certificate verification error", srv.URL, err)
	}

	// With the server's CA in RootCAs, the request succeeds.
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr = NewTransport(d, &tls.Config{RootCAs: pool}, nil, 5*time.Second)
	resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
	if err != nil {
		t.Fatalf("GET %s with its CA = %v, want success", srv.URL, err)
	}
	resp.Body.Close()

	if tr.Proxy != nil {
		t.Fatal("NewTransport(proxy=nil).Proxy is set; want no proxy (never from the environment)")
	}
	if tr.MaxResponseHeaderBytes != 64<<10 || tr.ResponseHeaderTimeout != 5*time.Second || !tr.ForceAttemptHTTP2 ||
		tr.TLSHandshakeTimeout != 10*time.Second || tr.IdleConnTimeout != 90*time.Second || tr.MaxIdleConnsPerHost < 2 ||
		tr.TLSClientConfig.MinVersion < tls.VersionTLS12 {
		t.Fatalf("NewTransport settings = %+v, want the documented limits", tr)
	}
	proxy, _ := url.Parse("http://proxy.internal:3128")
	tr = NewTransport(d, nil, proxy, time.Second)
	got, err := tr.Proxy(httptest.NewRequest("GET", "https://api.example.com/", nil))
	if err != nil || got.String() != proxy.String() {
		t.Fatalf("NewTransport(proxy).Proxy(req) = %v, %v; want %s", got, err, proxy)
	}
}
