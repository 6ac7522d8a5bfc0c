package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"

	"github.com/keyhole-dev/keyhole/policy"
	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/console"
)

// The browser console (`keyhole serve --ui ADDR`): its listener, its
// login links on the socket, and what it is given of the broker. The
// console itself is server/console.

// uiHook is the console of a serving broker, or none.
type uiHook struct {
	console *console.Console // nil: no --ui
	srv     *http.Server
	l       *connLimit
	tls     bool
}

// uiAddr is --ui as a listen address: a host that is left out is
// 127.0.0.1 (the console is on loopback unless asked otherwise).
func uiAddr(addr string) (string, error) {
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("keyhole: --ui %q: want host:port, e.g. 127.0.0.1:7778", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// checkUIAddr refuses a console on a non-loopback address without TLS:
// its cookie and every page would cross the network in clear text.
func checkUIAddr(o ServeOptions) error {
	if o.UIAddr == "" {
		return nil
	}
	addr, err := uiAddr(o.UIAddr)
	if err != nil {
		return err
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("keyhole: --tls-cert and --tls-key go together")
	}
	host, _, _ := net.SplitHostPort(addr)
	ip, err := netip.ParseAddr(host)
	loop := host == "localhost" || (err == nil && ip.IsLoopback())
	if !loop && o.TLSCert == "" {
		return fmt.Errorf("keyhole: --ui %s is not a loopback address: serve the console with --tls-cert/--tls-key, or on 127.0.0.1", o.UIAddr)
	}
	return nil
}

// open listens for the console when o asks for one; the broker then
// serves u.srv on u.l beside its other listeners.
func (u *uiHook) open(o ServeOptions, rt *Runtime, m *LiveSessions, self *selfAddrs) error {
	if o.UIAddr == "" {
		return nil
	}
	addr, err := uiAddr(o.UIAddr)
	if err != nil {
		return err
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("keyhole: listen on %s: %w", addr, err)
	}
	l := limitConns(tcp, o.MaxConns, o.MaxConnsPerSource)
	self.add(l.Addr())
	b := rt.Broker
	useTLS := o.TLSCert != ""
	co := consoleOptions(b, rt.Audit, rt.Vault, rt.Access, m)
	co.BaseURL = consoleURL(l.Addr(), useTLS)
	co.Loopback = isLoopbackAddr(l.Addr())
	c, err := console.New(co)
	if err != nil {
		l.Close()
		return err
	}
	srv := newHTTPServer(c.Handler())
	srv.RegisterOnShutdown(c.Close) // event streams end, so Shutdown need not wait for them
	b.log.Info("browser console", "url", co.BaseURL+"/ui/", "login", "keyhole ui")
	u.console, u.srv, u.l, u.tls = c, srv, l, useTLS
	return nil
}

// consoleOptions is what the console is given of a broker: its audit
// log, its sessions, its access requests (through the manager, bound to
// the sessions), the vault's metadata and the config. BaseURL and
// Loopback are the listener's to set.
func consoleOptions(b *Broker, log *audit.Log, v SecretStore, acc *access.Manager, m *LiveSessions) console.Options {
	ops := &adminOps{vault: v, sessions: func() (*LiveSessions, error) { return m, nil }, access: acc,
		config:  func() (*config.Loaded, error) { return b.Config(), nil },
		changes: recorder{log: func() (AuditLog, error) { return b.audit, nil }, now: b.now}}
	co := console.Options{
		Audit:    log,
		Sessions: consoleSessions{m: m, ops: ops},
		Secrets:  ops.SecretList,
		Config:   b.Config,
		Operator: decider(),
		Now:      b.now,
		Logger:   b.log,
	}
	if acc != nil {
		co.Access = consoleAccess{acc: acc, ss: accessSessions{m}}
	}
	return co
}

// consoleURL is the console's origin as a browser opens it: the
// listener's address, or the machine's name for a wildcard one.
func consoleURL(a net.Addr, useTLS bool) string {
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	host := a.String()
	if ap, err := netip.ParseAddrPort(a.String()); err == nil && ap.Addr().IsUnspecified() {
		name, err := os.Hostname()
		if err != nil {
			name = "localhost"
		}
		host = net.JoinHostPort(name, fmt.Sprint(ap.Port()))
	}
	return scheme + "://" + host
}

// socket adds the console's login route to the broker's socket handler:
// `keyhole ui` asks it for a one-time link. The console is looked up per
// request: the socket's handler is made before the console's listener.
func (u *uiHook) socket(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.Handle("/admin/console/", admin.ConsoleHandler(func() (admin.ConsoleLink, error) {
		if u.console == nil {
			return admin.ConsoleLink{}, admin.ErrNoConsole
		}
		url, expires, err := u.console.LoginURL()
		return admin.ConsoleLink{URL: url, Expires: expires}, err
	}))
	return mux
}

// consoleSessions are the broker's live sessions as the console sees
// them. A revocation in the console is `keyhole session revoke`'s: the
// session's next call is refused, its access requests end, and the
// revocation is recorded.
type consoleSessions struct {
	m   *LiveSessions
	ops *adminOps
}

var _ console.Sessions = consoleSessions{}

func (s consoleSessions) List(all bool) ([]policy.SessionInfo, error) { return s.m.List(all) }
func (s consoleSessions) Show(id string) (policy.SessionInfo, error)  { return s.m.Show(id) }

func (s consoleSessions) Revoke(id, by string) error {
	_, err := s.ops.revoke(id, "", false, by, " by "+by)
	return err
}

// consoleAccess is the access manager bound to the broker's sessions:
// the console answers requests through the manager's own Approve and
// Deny, as `keyhole access approve` does.
type consoleAccess struct {
	acc *access.Manager
	ss  access.Sessions
}

var _ console.Access = consoleAccess{}

func (a consoleAccess) List(all bool) []access.Request         { return a.acc.List(all) }
func (a consoleAccess) Show(id string) (access.Request, error) { return a.acc.Show(id) }
func (a consoleAccess) Watch() (<-chan access.Event, func())   { return a.acc.Watch() }

func (a consoleAccess) Approve(id, by, note string, forSession bool) (access.Request, error) {
	return a.acc.Approve(id, by, note, forSession, a.ss)
}

func (a consoleAccess) Deny(id, by, note string) (access.Request, error) {
	return a.acc.Deny(id, by, note, a.ss)
}
