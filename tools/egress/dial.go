package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every error for an address the rules refuse.
var ErrRefused = errors.New("egress: address refused")

// Rules say which classes of address a tool may reach. The zero Rules allow
// only Public addresses.
type Rules struct {
	// AllowPrivate also allows Loopback, Private, CGNAT, LinkLocal and
	// Reserved addresses (allow_private_network).
	AllowPrivate bool
	// AllowMetadata also allows Metadata addresses (allow_metadata); it
	// has effect only together with AllowPrivate.
	AllowMetadata bool
}

// Check returns nil if the rules allow dialing ip, else an error wrapping
// ErrRefused that names the class ("egress: address refused: metadata").
// Unspecified, Multicast and Broadcast addresses are always refused.
func (r Rules) Check(ip netip.Addr) error {
	c := Classify(ip)
	switch c {
	case Public:
		return nil
	case Loopback, Private, CGNAT, LinkLocal, Reserved:
		if r.AllowPrivate && ip.IsValid() {
			return nil
		}
	case Metadata:
		if r.AllowPrivate && r.AllowMetadata {
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrRefused, c)
}

// Resolver looks up the addresses of a host name.
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

// Dialer dials upstreams under Rules. Its zero value (with the default
// resolver, no own listeners and a 10s timeout) reaches public addresses
// only. It is safe for concurrent use if Resolve and Self are.
type Dialer struct {
	Rules Rules
	// Resolve looks up host names; nil uses net.DefaultResolver.LookupNetIP
	// with network "ip".
	Resolve Resolver
	// Self returns the broker's own listening addresses, which are refused
	// even when Rules allow their class. A listener on 0.0.0.0 or :: matches
	// every local address (loopback and the host's interface addresses) on
	// its port. nil means none.
	Self func() []netip.AddrPort
	// Timeout bounds each connect; zero means 10s.
	Timeout time.Duration
}

const defaultTimeout = 10 * time.Second

// DialContext connects to addr ("host:port") on a TCP network. It resolves
// host (IP literals are used as they are; host names that are really
// numeric IPv4 forms such as "127.1", "0x7f000001" or "2130706433" are
// refused), refuses the whole dial if ANY resolved address is refused, so a
// DNS answer mixing public and private addresses is refused, then dials the
// allowed addresses in order with a net.Dialer whose ControlContext checks
// again the address actually dialed. Refusals wrap ErrRefused. Errors name
// the host and addresses but carry nothing else; they are meant for the
// audit, not the agent.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("egress: dial %s: network %q not allowed", addr, network)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("egress: dial: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("egress: dial %s: invalid port", addr)
	}
	ips, err := d.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var targets []netip.AddrPort
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		if err := d.check(ap); err != nil {
			return nil, fmt.Errorf("egress: dial %s: %s: %w", addr, ap.Addr(), err)
		}
		if network == "tcp" || (network == "tcp4") == ap.Addr().Is4() {
			targets = append(targets, ap)
		}
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("egress: dial %s: no %s address", addr, network)
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	nd := &net.Dialer{Timeout: timeout, ControlContext: d.control}
	var errs []error
	for _, ap := range targets {
		conn, err := nd.DialContext(ctx, network, ap.String())
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("egress: dial %s: %w", addr, errors.Join(errs...))
}

// resolve returns the addresses of host: itself if it is an IP literal,
// else what the resolver answers.
func (d *Dialer) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	if host == "" {
		return nil, fmt.Errorf("egress: dial: %w: empty host", ErrRefused)
	}
	if numericHost(host) {
		return nil, fmt.Errorf("egress: dial %s: %w: non-canonical numeric address", host, ErrRefused)
	}
	resolve := d.Resolve
	if resolve == nil {
		resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ips, err := resolve(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("egress: resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("egress: resolve %s: no addresses", host)
	}
	return ips, nil
}

// numericHost reports whether host's last label is all digits or a 0x hex
// number. No DNS name has such a top-level label, but C resolvers
// (inet_aton) read "127.1", "0177.0.0.1", "0x7f000001" and "2130706433" as
// IPv4 addresses, and a reader might read "0177" as 177: refusing them
// leaves no room for two interpretations.
func numericHost(host string) bool {
	host = strings.TrimSuffix(host, ".")
	label := host[strings.LastIndexByte(host, '.')+1:]
	if label == "" {
		return false
	}
	lower := strings.ToLower(label)
	if strings.HasPrefix(lower, "0x") {
		return true
	}
	return strings.Trim(label, "0123456789") == ""
}

// control is the net.Dialer ControlContext: it checks the address the
// socket is about to connect to, whatever produced it.
func (d *Dialer) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("egress: dial %s: %w: unparsable address", address, ErrRefused)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if err := d.check(ap); err != nil {
		return fmt.Errorf("egress: dial %s: %w", address, err)
	}
	return nil
}

// check applies the rules and the own-listener refusal to ap, whose address
// is unmapped.
func (d *Dialer) check(ap netip.AddrPort) error {
	if err := d.Rules.Check(ap.Addr()); err != nil {
		return err
	}
	if d.Self == nil {
		return nil
	}
	ip := ap.Addr().WithZone("")
	var local []netip.Addr // the host's addresses, looked up only if needed
	for _, self := range d.Self() {
		if self.Port() != ap.Port() {
			continue
		}
		sip := self.Addr().WithZone("").Unmap()
		if sip == ip {
			return fmt.Errorf("%w: keyhole's own listener", ErrRefused)
		}
		if !sip.IsUnspecified() {
			continue
		}
		if local == nil {
			local = localAddrs()
		}
		for _, l := range local {
			if l == ip {
				return fmt.Errorf("%w: keyhole's own listener", ErrRefused)
			}
		}
		if ip.IsLoopback() || ip.IsUnspecified() {
			return fmt.Errorf("%w: keyhole's own listener", ErrRefused)
		}
	}
	return nil
}

// localAddrs returns the addresses of the host's interfaces, unmapped and
// without zones.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return []netip.Addr{}
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().WithZone("").Unmap())
		}
	}
	return out
}

// NewTransport returns an *http.Transport that dials only through d. Proxy
// is proxy when non-nil and otherwise none: the environment's proxy
// settings are never used, and a named proxy is itself dialed through d.
// TLS verification is always on: tlsConfig (cloned; it may carry RootCAs
// from a tool's ca_file) has InsecureSkipVerify forced off and TLS 1.2 as
// its floor. headerTimeout bounds the wait for response headers.
func NewTransport(d *Dialer, tlsConfig *tls.Config, proxy *url.URL, headerTimeout time.Duration) *http.Transport {
	cfg := &tls.Config{}
	if tlsConfig != nil {
		cfg = tlsConfig.Clone()
	}
	cfg.InsecureSkipVerify = false
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	t := &http.Transport{
		DialContext:            d.DialContext,
		TLSClientConfig:        cfg,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  headerTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    64,
		IdleConnTimeout:        90 * time.Second,
	}
	if proxy != nil {
		t.Proxy = http.ProxyURL(proxy)
	}
	return t
}
