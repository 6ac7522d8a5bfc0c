package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/sessions"
	"github.com/keyhole-dev/keyhole/tools"
)

// ServeOptions configures `keyhole serve`.
type ServeOptions struct {
	RuntimeOptions
	// HTTPAddr, if set, serves MCP over streamable HTTP for phantom tokens.
	HTTPAddr string
	// MetricsAddr, if set, serves Prometheus /metrics there (it is always on
	// the unix socket).
	MetricsAddr string
	// TLSCert and TLSKey serve HTTPAddr over TLS.
	TLSCert, TLSKey string
	// InsecureHTTP allows plain HTTP on a non-loopback address.
	InsecureHTTP bool
	// AllowedOrigins are extra Origin values accepted on a loopback listener.
	AllowedOrigins []string
	// IdleExit, if set, stops the broker once it has had no active session
	// and no request for this long.
	IdleExit time.Duration
	// Reload re-reads the config when it receives (SIGHUP).
	Reload <-chan struct{}
	// ShutdownTimeout bounds how long in-flight calls may finish.
	ShutdownTimeout time.Duration
	// Ready, if set, is called with the listeners' addresses once serving.
	Ready func(socket, http net.Addr)
}

// Serve runs the broker until ctx is done: it owns the data dir, listens on
// its unix socket and optionally on TCP, and on shutdown stops accepting,
// lets in-flight calls finish, and flushes the audit log.
func Serve(ctx context.Context, o ServeOptions) error {
	if err := SharedBrokerSupported(); err != nil {
		return err
	}
	if o.HTTPAddr != "" {
		if err := checkListenAddr(o); err != nil {
			return err
		}
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	var self selfAddrs
	o.Env.SelfAddrs = self.get
	rt, err := Open(o.RuntimeOptions)
	if err != nil {
		return err
	}
	defer rt.Close()
	store, err := sessions.Open(rt.DataDir.File(SessionsFile))
	if err != nil {
		return err
	}
	defer store.Close()
	b := rt.Broker
	m := NewLiveSessions(store, LiveSessionsOptions{Config: b.Config, Now: b.now, Logger: b.log})
	o.Metrics.CountSessions(m.ActiveCount)
	reload := func() error { return reloadConfig(b, rt.Audit, o.ConfigPath, o.Env) }

	activity := &idleTracker{last: time.Now()}
	sock, err := ListenSocket(rt.DataDir)
	if err != nil {
		return err
	}
	servers := []*http.Server{{Handler: activity.wrap(b.SocketHandler(m, rt.Vault, reload, o.Metrics)), ReadHeaderTimeout: 10 * time.Second}}
	listeners := []net.Listener{sock}
	tlsFlags := []bool{false}

	var httpAddr net.Addr
	if o.HTTPAddr != "" {
		l, err := net.Listen("tcp", o.HTTPAddr)
		if err != nil {
			sock.Close()
			return fmt.Errorf("keyhole: listen on %s: %w", o.HTTPAddr, err)
		}
		httpAddr = l.Addr()
		self.add(l.Addr())
		loop := isLoopbackAddr(l.Addr())
		h := b.HTTPHandler(m, HTTPOptions{Loopback: loop, AllowedOrigins: o.AllowedOrigins})
		servers = append(servers, &http.Server{Handler: activity.wrap(h), ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, l)
		tlsFlags = append(tlsFlags, o.TLSCert != "")
		if !loop && o.TLSCert == "" {
			b.log.Warn("serving MCP over plain HTTP on a non-loopback address: tokens travel in clear text", LogAddr, l.Addr().String())
		}
	}
	if o.MetricsAddr != "" {
		l, err := net.Listen("tcp", o.MetricsAddr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("keyhole: listen on %s: %w", o.MetricsAddr, err)
		}
		self.add(l.Addr())
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{}))
		servers = append(servers, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, l)
		tlsFlags = append(tlsFlags, false)
	}

	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func(srv *http.Server, l net.Listener, useTLS bool) {
			var err error
			if useTLS {
				err = srv.ServeTLS(l, o.TLSCert, o.TLSKey)
			} else {
				err = srv.Serve(l)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(srv, listeners[i], tlsFlags[i])
	}
	b.log.Info("broker serving", "socket", sock.Addr().String(), "http", addrString(httpAddr), LogConfig, o.ConfigPath)
	if o.Ready != nil {
		o.Ready(sock.Addr(), httpAddr)
	}

	var idle <-chan time.Time
	if o.IdleExit > 0 {
		t := time.NewTicker(min(o.IdleExit/4, 5*time.Second) + time.Millisecond)
		defer t.Stop()
		idle = t.C
	}
	flush := time.NewTicker(time.Second)
	defer flush.Stop()
	defer m.Flush()
	var serveErr error
loop:
	for {
		select {
		case <-flush.C:
			m.Flush()
		case <-ctx.Done():
			break loop
		case err := <-errc:
			serveErr = err
			break loop
		case <-o.Reload:
			if err := reload(); err != nil {
				b.log.Error("reload rejected; keeping the old config", LogError, err)
			}
		case <-idle:
			if m.ActiveCount() == 0 && activity.idleFor() >= o.IdleExit {
				b.log.Info("no sessions; idle exit", "after", o.IdleExit)
				break loop
			}
		}
	}
	timeout := o.ShutdownTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); srv.Shutdown(sctx) }()
	}
	wg.Wait()
	b.log.Info("broker stopped")
	return serveErr
}

// reloadConfig applies a new config to new sessions and audits the reload;
// an invalid config is rejected and the old one stays.
func reloadConfig(b *Broker, log *audit.Log, path string, env tools.Env) error {
	rec := audit.Record{Time: b.now().UTC(), Session: "-", Scope: "-", Tool: "keyhole.reload", Decision: audit.Allow, Reason: "config reloaded from " + path}
	cfg, err := config.Load(path, env)
	if err != nil {
		rec.Decision, rec.Code, rec.Reason = audit.Error, "invalid_config", err.Error()
	} else {
		b.SetConfig(cfg)
		b.log.Info("config reloaded; new sessions use it", LogConfig, path)
	}
	if _, werr := log.Write(context.Background(), rec); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

func checkListenAddr(o ServeOptions) error {
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("keyhole: --tls-cert and --tls-key go together")
	}
	host, _, err := net.SplitHostPort(o.HTTPAddr)
	if err != nil {
		return fmt.Errorf("keyhole: --http %q: want host:port, e.g. 127.0.0.1:7777", o.HTTPAddr)
	}
	ip, err := netip.ParseAddr(host)
	loop := host == "localhost" || (err == nil && ip.IsLoopback())
	if !loop && o.TLSCert == "" && !o.InsecureHTTP {
		return fmt.Errorf("keyhole: --http %s is not a loopback address: serve it with --tls-cert/--tls-key, or accept clear-text tokens with --insecure-http", o.HTTPAddr)
	}
	return nil
}

func isLoopbackAddr(a net.Addr) bool {
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().IsLoopback()
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// selfAddrs are the broker's own TCP listeners, which no tool may dial.
type selfAddrs struct {
	mu    sync.Mutex
	addrs []netip.AddrPort
}

func (s *selfAddrs) add(a net.Addr) {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		s.mu.Lock()
		s.addrs = append(s.addrs, ap)
		s.mu.Unlock()
	}
}

func (s *selfAddrs) get() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.addrs...)
}

// idleTracker notes when the broker last served a request.
type idleTracker struct {
	last     time.Time
	mu       sync.Mutex
	inflight atomic.Int64
}

func (t *idleTracker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.inflight.Add(1)
		defer func() {
			t.inflight.Add(-1)
			t.mu.Lock()
			t.last = time.Now()
			t.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

func (t *idleTracker) idleFor() time.Duration {
	if t.inflight.Load() > 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Since(t.last)
}
