package main

import (
	"context"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server/admin"
)

func (a *App) secretLoginCmd() *cobra.Command {
	var (
		open    bool
		listen  string
		timeout time.Duration
	)
	c := &cobra.Command{
		Use:   "login NAME",
		Short: "Authorize an oauth2 credential in a browser (OAuth 2.0 authorization code with PKCE)",
		Long: `login authorizes the secret of a tool with inject: oauth2 and flow:
authorization_code. It prints the authorization URL (--open also opens it),
listens on a loopback address for the authorization server's redirect,
exchanges the code, and seals the refresh token in the vault. Register
http://127.0.0.1/callback (any port) as the app's redirect URI, or pass
--listen with the port you registered.`,
		Example: `  keyhole secret login slack_oauth --open
  keyhole secret login slack_oauth --listen 127.0.0.1:8765`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.secretLogin(cmd.Context(), args[0], listen, open, timeout)
		},
	}
	c.Flags().BoolVar(&open, "open", false, "open the authorization URL in the default browser")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "loopback address to receive the redirect on")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long to wait for the redirect")
	return c
}

// loginResult is what the redirect brought, once finished.
type loginResult struct {
	meta admin.SecretMeta
	err  error
}

func (a *App) secretLogin(ctx context.Context, name, listen string, open bool, timeout time.Duration) error {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil || !ap.Addr().IsLoopback() {
		return fmt.Errorf("--listen %q must be a loopback address and port, such as 127.0.0.1:8765", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen for the redirect: %w", err)
	}
	defer ln.Close()
	redirect := "http://" + ln.Addr().String() + "/callback"
	return a.withAdmin(func(ad admin.Admin) error {
		start, err := ad.SecretLoginStart(name, redirect)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "Open this URL in a browser to authorize keyhole (tool %s):\n\n  %s\n\nWaiting for the redirect to %s ...\n", start.Tool, start.URL, redirect)
		if open {
			if err := openBrowser(start.URL); err != nil {
				fmt.Fprintf(a.stderr, "could not open a browser (%v); open the URL yourself\n", err)
			}
		}
		done := make(chan loginResult, 1)
		srv := &http.Server{Handler: loginCallback(ad, name, start.State, done), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer func() {
			// Let the browser get its page before the command exits.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		}()
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		select {
		case r := <-done:
			if r.err != nil {
				return r.err
			}
			fmt.Fprintf(a.stdout, "logged in: secret %s holds a refresh token (version %d)\n", name, r.meta.Version)
			return nil
		case <-ctx.Done():
			return fmt.Errorf("no redirect came within %s; run `keyhole secret login %s` again", timeout, name)
		}
	})
}

// loginCallback serves the redirect: a request with the login's state
// finishes it (once) and tells the browser the outcome; anything else is
// refused and the wait goes on.
func loginCallback(ad admin.Admin, name, state string, done chan<- loginResult) http.Handler {
	var finished atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /callback", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("state") != state || !finished.CompareAndSwap(false, true) {
			http.Error(w, "This is not the redirect keyhole is waiting for.", http.StatusBadRequest)
			return
		}
		var res loginResult
		if e := q.Get("error"); e != "" {
			res.err = fmt.Errorf("the authorization server refused: %.100q %.200q", e, q.Get("error_description"))
		} else {
			res.meta, res.err = ad.SecretLoginFinish(name, state, q.Get("code"))
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<!doctype html><title>keyhole</title><p>keyhole could not finish the login: %s</p>", html.EscapeString(res.err.Error()))
		} else {
			fmt.Fprintf(w, "<!doctype html><title>keyhole</title><p>keyhole is authorized for %s. You can close this window.</p>", html.EscapeString(name))
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		done <- res
	})
	return mux
}

// openBrowser opens url in the user's browser.
func openBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}
