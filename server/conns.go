package server

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of the broker's TCP listeners (--http, --metrics). The unix
// socket is not counted: local clients and admin commands reach the
// broker however many TCP clients there are.
const (
	// DefaultMaxConns caps the TCP connections the broker holds at once.
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerSource caps those from one source address.
	DefaultMaxConnsPerSource = 64
	// reservedFiles are descriptors kept for the vault, the audit log,
	// the unix socket and upstream calls, however many TCP clients come.
	reservedFiles = 128
)

// Deadlines of every HTTP server the broker runs. A request's headers
// must arrive within headerTimeout and its body within bodyTimeout; an
// idle keep-alive connection is closed after idleTimeout. Responses have
// no deadline: an event stream stays open as long as its client listens.
const (
	headerTimeout  = 10 * time.Second
	bodyTimeout    = 30 * time.Second
	idleTimeout    = 2 * time.Minute
	maxHeaderBytes = 64 << 10
)

// newHTTPServer is an http.Server with the broker's deadlines and header cap.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       bodyTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// connLimit is a listener that holds at most max connections at once, and
// at most perSource from one IP address. A connection over either cap is
// closed as soon as it is accepted, before anything is read, and counted
// in Refused: a flood from one address neither exhausts the process's
// descriptors nor keeps clients from other addresses out.
type connLimit struct {
	net.Listener
	max, perSource int
	refused        atomic.Int64

	mu    sync.Mutex
	open  int
	bySrc map[string]int
}

// limitConns wraps l; max or perSource <= 0 take the defaults, and max is
// lowered to leave reservedFiles of the process's descriptor limit free.
func limitConns(l net.Listener, maxConns, perSource int) *connLimit {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	if perSource <= 0 {
		perSource = DefaultMaxConnsPerSource
	}
	if n := fileLimit(); n > 0 && n < uint64(maxConns+reservedFiles) {
		maxConns = max(int(n)-reservedFiles, 16)
	}
	return &connLimit{Listener: l, max: maxConns, perSource: min(perSource, maxConns), bySrc: map[string]int{}}
}

// Accept returns the next connection within the caps, closing the ones
// over them.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := remoteIP(c)
		l.mu.Lock()
		if l.open >= l.max || l.bySrc[src] >= l.perSource {
			l.mu.Unlock()
			l.refused.Add(1)
			c.Close()
			continue
		}
		l.open++
		l.bySrc[src]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, src: src}, nil
	}
}

// Refused is how many connections the caps closed.
func (l *connLimit) Refused() int64 { return l.refused.Load() }

// Open is how many connections are held.
func (l *connLimit) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

func (l *connLimit) release(src string) {
	l.mu.Lock()
	l.open--
	if l.bySrc[src]--; l.bySrc[src] <= 0 {
		delete(l.bySrc, src)
	}
	l.mu.Unlock()
}

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	l    *connLimit
	src  string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}
