package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/audit"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/pgstore"
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
	// UIAddr, if set, serves the browser console there (server/console);
	// a host left out is 127.0.0.1, and another address than loopback
	// needs TLS. `keyhole ui` gets a login link through the socket.
	UIAddr string
	// TLSCert and TLSKey serve HTTPAddr and UIAddr over TLS.
	TLSCert, TLSKey string
	// InsecureHTTP allows plain HTTP on a non-loopback address.
	InsecureHTTP bool
	// AllowedOrigins are extra Origin values accepted on a loopback listener.
	AllowedOrigins []string
	// IdleExit, if set, stops the broker once it has served no stdio
	// client and no request for this long.
	IdleExit time.Duration
	// Reload re-reads the config when it receives (SIGHUP).
	Reload <-chan struct{}
	// ShutdownTimeout bounds how long in-flight calls may finish.
	ShutdownTimeout time.Duration
	// Ready, if set, is called with the listeners' addresses once serving.
	Ready func(socket, http net.Addr)
	// AutoStarted marks a broker a `keyhole stdio` started in the
	// background: a helper for stdio clients that an operator's serve, or
	// a newer stdio, may replace.
	AutoStarted bool
	// CommandLine is the command as the user typed it, for messages that
	// say what to run.
	CommandLine string
	// MaxConns and MaxConnsPerSource cap the connections of the TCP
	// listeners, in total and from one address (0: DefaultMaxConns,
	// DefaultMaxConnsPerSource). The unix socket is not counted.
	MaxConns, MaxConnsPerSource int
	// SessionsPerToken and SessionIdleTTL bound the MCP sessions of a
	// phantom token (see HTTPOptions).
	SessionsPerToken int
	SessionIdleTTL   time.Duration
}

// Serve runs the broker until ctx is done, `keyhole stop` asks it to stop
// or it has been idle for IdleExit: it owns the data dir, listens on its
// unix socket and optionally on TCP, and on shutdown stops accepting,
// lets in-flight calls finish, ends its relayed stdio sessions (reason:
// broker stopped) and flushes the audit log. A broker a `keyhole stdio`
// started in the background, serving no stdio client, is stopped and
// replaced; any other running broker is an error that says what to run.
func Serve(ctx context.Context, o ServeOptions) error {
	if err := SharedBrokerSupported(); err != nil {
		return err
	}
	if o.HTTPAddr != "" {
		if err := checkListenAddr(o); err != nil {
			return err
		}
	}
	if err := checkUIAddr(o); err != nil {
		return err
	}
	if err := takeOver(ctx, o); err != nil {
		return err
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	var self selfAddrs
	o.Env.SelfAddrs = self.get
	if o.Env.Tokens == nil {
		// A reloaded config goes on with the OAuth 2.0 tokens of the old.
		o.Env.Tokens = tools.NewTokens()
	}
	o.Approvals = true // the socket takes the answers to access requests
	rt, err := Open(o.RuntimeOptions)
	if err != nil {
		return err
	}
	defer rt.Close()
	store, err := openSessionStore(rt.shared, rt.DataDir, rt.Vault)
	if err != nil {
		return err
	}
	defer store.Close()
	p := &brokerProc{o: o, rt: rt, b: rt.Broker, started: time.Now(), stop: make(chan struct{})}
	b := p.b
	// After a crash the session store may lag the audit log, so a
	// restored session counts its calls there again; after a clean stop
	// it does not (every counter was saved), and in a shared store every
	// call is counted in the store itself.
	clean, err := takeCleanStop(rt.DataDir)
	if err != nil {
		return err
	}
	history := auditUsage(rt.Audit)
	if clean || rt.shared != nil {
		history = nil
	}
	p.m = NewLiveSessions(store, LiveSessionsOptions{
		Configs:      b.Configs(),
		History:      history,
		ConfigLoaded: func(cfg *config.Loaded, why string) { auditConfig(b, rt.Audit, cfg, why) },
		Now:          b.now,
		Logger:       b.log,
		Replica:      rt.Replica(),
	})
	restored, ended, err := p.m.Restore()
	if err != nil {
		return err
	}
	if restored+ended > 0 {
		b.log.Info("sessions restored from the data dir", "restored", restored, "ended", ended)
	}
	o.Metrics.CountSessions(p.m.ActiveCount)
	o.Metrics.CountMCPSessions(b.MCPSessions)
	if sh := rt.shared; sh != nil {
		o.Metrics.CountStoreRoundTrips(func() uint64 { return pgstore.RoundTrips(sh.db) })
	}
	if err := p.listen(&self); err != nil {
		return err
	}
	return p.run(ctx)
}

// brokerProc is one run of `keyhole serve`: its runtime, its sessions,
// its listeners and what stops it.
type brokerProc struct {
	o       ServeOptions
	rt      *Runtime
	b       *Broker
	m       *LiveSessions
	started time.Time

	activity  *idleTracker
	streams   streamCloser
	servers   []*http.Server
	listeners []net.Listener
	tlsFlags  []bool
	addrs     admin.Listeners
	httpOpts  HTTPOptions
	ui        uiHook // the browser console, when UIAddr asks for one

	stop     chan struct{} // closed by `keyhole stop`
	stopOnce sync.Once
}

// listen opens the unix socket, and the HTTP and metrics listeners asked
// for.
func (p *brokerProc) listen(self *selfAddrs) error {
	b, o := p.b, p.o
	p.activity = &idleTracker{last: time.Now()}
	sock, err := ListenSocket(p.rt.DataDir)
	if err != nil {
		return err
	}
	p.addrs.Socket = sock.Addr().String()
	ops := &adminOps{
		vault:         p.rt.Vault,
		sessions:      func() (*LiveSessions, error) { return p.m, nil },
		reload:        p.reload,
		status:        p.status,
		stop:          p.requestStop,
		log:           b.log,
		config:        func() (*config.Loaded, error) { return b.Config(), nil },
		logins:        &pendingLogins{},
		access:        b.access,
		changes:       recorder{log: func() (AuditLog, error) { return b.audit, nil }, now: b.now},
		shared:        p.rt.shared,
		secretChanged: b.secretChanged,
	}
	p.httpOpts = HTTPOptions{AllowedOrigins: o.AllowedOrigins, SessionsPerToken: o.SessionsPerToken, SessionIdleTTL: o.SessionIdleTTL, Health: p.health}
	p.add(sock, p.streams.wrap(p.activity.wrap(p.ui.socket(b.socketHandler(p.m, ops, o.Metrics, p.httpOpts)))), false)

	if o.HTTPAddr != "" {
		tcp, err := net.Listen("tcp", o.HTTPAddr)
		if err != nil {
			p.closeListeners()
			return fmt.Errorf("keyhole: listen on %s: %w", o.HTTPAddr, err)
		}
		l := limitConns(tcp, o.MaxConns, o.MaxConnsPerSource)
		o.Metrics.CountConns(l)
		p.addrs.HTTP = l.Addr().String()
		self.add(l.Addr())
		loop := isLoopbackAddr(l.Addr())
		tcpOpts := p.httpOpts
		tcpOpts.Loopback = loop
		h := b.HTTPHandler(p.m, tcpOpts)
		p.add(l, p.streams.wrap(p.activity.wrap(h)), o.TLSCert != "")
		if !loop && o.TLSCert == "" {
			b.log.Warn("serving MCP over plain HTTP on a non-loopback address: tokens travel in clear text", LogAddr, l.Addr().String())
		}
	}
	if o.MetricsAddr != "" {
		tcp, err := net.Listen("tcp", o.MetricsAddr)
		if err != nil {
			p.closeListeners()
			return fmt.Errorf("keyhole: listen on %s: %w", o.MetricsAddr, err)
		}
		l := limitConns(tcp, o.MaxConns, o.MaxConnsPerSource)
		p.addrs.Metrics = l.Addr().String()
		self.add(l.Addr())
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{}))
		p.add(l, mux, false)
	}
	if err := p.ui.open(o, p.rt, p.m, self); err != nil {
		p.closeListeners()
		return err
	}
	if p.ui.console != nil {
		p.servers, p.listeners, p.tlsFlags = append(p.servers, p.ui.srv), append(p.listeners, p.ui.l), append(p.tlsFlags, p.ui.tls)
	}
	return nil
}

func (p *brokerProc) add(l net.Listener, h http.Handler, useTLS bool) {
	p.servers = append(p.servers, newHTTPServer(h))
	p.listeners = append(p.listeners, l)
	p.tlsFlags = append(p.tlsFlags, useTLS)
}

func (p *brokerProc) closeListeners() {
	for _, l := range p.listeners {
		l.Close()
	}
}

// run serves until the broker is told to stop, then shuts down.
func (p *brokerProc) run(ctx context.Context) error {
	b, o := p.b, p.o
	errc := make(chan error, len(p.servers))
	for i, srv := range p.servers {
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
		}(srv, p.listeners[i], p.tlsFlags[i])
	}
	b.log.Info("broker serving", "socket", p.addrs.Socket, "http", p.addrs.HTTP, LogConfig, b.Config().Path, "version", Version, "pid", os.Getpid())
	if o.Ready != nil {
		var httpAddr net.Addr
		if o.HTTPAddr != "" {
			httpAddr = p.listeners[1].Addr()
		}
		o.Ready(p.listeners[0].Addr(), httpAddr)
	}

	var idle <-chan time.Time
	if o.IdleExit > 0 {
		t := time.NewTicker(min(o.IdleExit/4, 5*time.Second) + time.Millisecond)
		defer t.Stop()
		idle = t.C
	}
	flush := time.NewTicker(time.Second)
	defer flush.Stop()
	var recoverTick <-chan time.Time
	if p.rt.shared != nil && p.rt.Access != nil {
		actx, stopAnswers := context.WithCancel(context.Background())
		answersDone := make(chan struct{})
		go func() {
			defer close(answersDone)
			applyAnswers(actx, p.rt.shared, p.rt.Access, p.m, b.log)
		}()
		defer func() { stopAnswers(); <-answersDone }()
	}
	if p.rt.shared != nil {
		// Brokers of a shared store record the open intents of a dead
		// one as interrupted once its lease has expired.
		t := time.NewTicker(p.rt.shared.lease() / 3)
		defer t.Stop()
		recoverTick = t.C
		p.recoverExpired()
	}
	defer b.FlushAuthFailures(true)
	var serveErr error
loop:
	for {
		select {
		case <-flush.C:
			p.m.Flush()
			b.FlushAuthFailures(false)
			sweepAccess(p.rt.Access, p.m)
		case <-recoverTick:
			p.recoverExpired()
		case <-ctx.Done():
			break loop
		case <-p.stop:
			b.log.Info("stop requested (keyhole stop)")
			break loop
		case err := <-errc:
			serveErr = err
			break loop
		case <-o.Reload:
			if _, err := p.reload(""); err != nil {
				b.log.Error("reload rejected; keeping the old config", LogError, err)
			}
		case <-idle:
			// Phantom-token sessions outlive the broker (they are restored
			// at the next start); editors' stdio clients do not.
			if _, relays := p.m.counts(); relays == 0 && p.activity.idleFor() >= o.IdleExit {
				b.log.Info("no editor sessions; idle exit", "after", o.IdleExit)
				break loop
			}
		}
	}
	p.shutdown()
	return serveErr
}

// shutdown stops accepting, ends the event streams clients listen on,
// waits (up to ShutdownTimeout) for running calls to finish and be
// recorded, then ends the relayed stdio sessions and flushes the rest.
func (p *brokerProc) shutdown() {
	p.rt.DataDir.markStopping()
	if p.rt.Access != nil {
		p.rt.Access.Release() // held calls answer now, not after the shutdown timeout
	}
	timeout := p.o.ShutdownTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	var unfinished atomic.Bool // a call outlived the timeout
	for _, srv := range p.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if srv.Shutdown(sctx) != nil {
				unfinished.Store(true)
			}
		}()
	}
	p.streams.closeAll()
	wg.Wait()
	p.m.EndRelays(reasonBrokerStopped)
	rctx, rcancel := context.WithTimeout(context.Background(), timeout)
	p.m.RevokeMinted(rctx)
	rcancel()
	err := p.m.Flush()
	if err == nil && !unfinished.Load() && p.rt.shared == nil {
		err = markCleanStop(p.rt.DataDir)
	}
	if err != nil {
		p.b.log.Warn("the next start counts the sessions' calls in the audit log again", LogError, err)
	}
	p.b.log.Info("broker stopped")
}

// recoverExpired records as interrupted the open intents of brokers of
// the shared store whose lease expired.
func (p *brokerProc) recoverExpired() {
	sh := p.rt.shared
	done, err := audit.RecoverExpired(context.Background(), audit.Options{
		Postgres: sh.db, Holder: sh.holder, LeaseTTL: sh.lease(), Key: p.rt.Vault.DeriveKey(auditKeyLabel), Checkpoint: p.rt.Vault,
	})
	for _, r := range done {
		p.b.log.Warn("recorded the open calls of a broker whose lease expired as interrupted", "replica", r)
	}
	if err != nil {
		p.b.log.Error("recover the audit chains of dead brokers", LogError, err)
	}
}

// health is what /healthz reports: the audit log takes records, and a
// shared store answers.
func (p *brokerProc) health() error {
	if err := p.rt.Audit.Err(); err != nil {
		return errors.New("the audit log refuses records")
	}
	if sh := p.rt.shared; sh != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := sh.db.Ping(ctx); err != nil {
			return errors.New("the store does not answer")
		}
	}
	return nil
}

// requestStop is `keyhole stop`: the broker stops once the answer is sent.
func (p *brokerProc) requestStop() (admin.Stopping, error) {
	p.stopOnce.Do(func() { close(p.stop) })
	return admin.Stopping{PID: os.Getpid()}, nil
}

// status is `keyhole status`.
func (p *brokerProc) status() (admin.Status, error) {
	active, relays := p.m.counts()
	dir, _ := filepath.Abs(p.rt.DataDir.Path)
	exe, exeTime := executable()
	return admin.Status{
		PID:            os.Getpid(),
		Version:        Version,
		Started:        p.started.UTC(),
		Uptime:         int64(time.Since(p.started) / time.Second),
		DataDir:        dir,
		Executable:     exe,
		ExecutableTime: exeTime,
		AutoStarted:    p.o.AutoStarted,
		Configs:        p.b.Configs().Status(),
		Sessions:       active,
		Clients:        relays,
		Listeners:      p.addrs,
	}, nil
}

// reload re-reads a config file for new sessions and audits it.
func (p *brokerProc) reload(path string) (admin.Reloaded, error) {
	return reloadConfig(p.b, p.rt.Audit, path)
}

// reloadConfig re-reads the config at path ("" is the broker's own) for
// new sessions and audits the reload; an invalid config is rejected and
// the old one stays.
func reloadConfig(b *Broker, log *audit.Log, path string) (admin.Reloaded, error) {
	if path == "" {
		path = b.Config().Path
	}
	rec := changeRecord(b.now(), ToolReload, "")
	rec.Config = path
	var res admin.Reloaded
	cfg, changed, err := b.configs.Reload(path)
	if err == nil {
		// Every cached secret is dropped (and zeroed once no call holds
		// it) on a reload, whether the config changed or not: a new
		// version's tools already get theirs evicted when it is loaded.
		b.cache.evictAll()
	}
	if err != nil {
		rec.Decision, rec.Code, rec.Reason = audit.Error, "invalid_config", err.Error()
	} else {
		res = admin.Reloaded{Config: cfg.Path, SHA256: cfg.Digest, Scopes: cfg.Policy.ScopeNames(), Changed: changed}
		rec.Reason = fmt.Sprintf("config reloaded from %s (sha256 %s)", cfg.Path, cfg.Digest[:12])
		b.log.Info("config reloaded; new sessions use it", LogConfig, cfg.Path)
	}
	if _, werr := log.Write(context.Background(), rec); werr != nil {
		return res, errors.Join(err, werr)
	}
	return res, err
}

// auditConfig records that a new version of a config file was loaded for
// new sessions.
func auditConfig(b *Broker, log *audit.Log, cfg *config.Loaded, why string) {
	rec := changeRecord(b.now(), ToolReload, fmt.Sprintf("config %s (sha256 %s) %s", cfg.Path, cfg.Digest[:12], why))
	rec.Config = cfg.Path
	if _, err := log.Write(context.Background(), rec); err != nil {
		b.log.Error("audit a config load", LogConfig, cfg.Path, LogError, err)
	}
	b.log.Info("config loaded; new sessions use it", LogConfig, cfg.Path)
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
