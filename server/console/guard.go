package console

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// csp allows the console's own script, style and images only: no inline
// script or style, no plugin, no frame, no form to elsewhere, and no DOM
// sink that parses HTML from a string (Trusted Types with no policy).
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'; trusted-types 'none'"

// guard sets the security headers of every answer and refuses requests
// the console must not serve: a Host that is not its own on loopback
// (DNS rebinding), a foreign Origin, or a state change fetched from
// another site.
func (c *Console) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
		if c.secure {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !c.hostAllowed(r.Host) {
			c.o.Logger.Warn("console: a request for a foreign Host was refused", "host", r.Host)
			plainError(w, http.StatusForbidden, "forbidden: Host is not this console's")
			return
		}
		site := r.Header.Get("Sec-Fetch-Site")
		if origin := r.Header.Get("Origin"); origin != "" && origin != c.scheme()+"://"+r.Host && !(origin == "null" && site == "same-origin") {
			// Under Referrer-Policy: no-referrer a browser sends Origin: null
			// on its own form posts; Sec-Fetch-Site, which no page can set,
			// then says they are the console's.
			c.o.Logger.Warn("console: a request from a foreign Origin was refused", "origin", origin, "path", r.URL.Path)
			plainError(w, http.StatusForbidden, "forbidden: Origin is not this console")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && site != "" && site != "same-origin" {
			plainError(w, http.StatusForbidden, "forbidden: a state change must come from the console itself")
			return
		}
		if site == "cross-site" && r.Header.Get("Sec-Fetch-Mode") != "navigate" {
			plainError(w, http.StatusForbidden, "forbidden: the console is not served to other sites")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (c *Console) scheme() string {
	if c.secure {
		return "https"
	}
	return "http"
}

// hostAllowed: on loopback, a loopback name (any spelling of it); on
// another address, the console's own host as in BaseURL, which TLS
// vouches for.
func (c *Console) hostAllowed(hostport string) bool {
	if hostport == "" {
		return false
	}
	if c.o.Loopback {
		return loopbackHost(hostport)
	}
	return strings.EqualFold(hostport, c.origin.Host) || strings.EqualFold(hostOnly(hostport), c.origin.Hostname())
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// loopbackHost reports whether hostport names a loopback host: localhost
// or a loopback IP.
func loopbackHost(hostport string) bool {
	host := strings.Trim(hostOnly(hostport), "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func plainError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}
