package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyhole-dev/keyhole/server/access"
)

//go:embed templates static
var assets embed.FS

// assetVersion is a hash of the static files, in their URLs, so a
// browser never runs a script of an older broker.
var assetVersion = func() string {
	h := sha256.New()
	fs.WalkDir(assets, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := assets.ReadFile(p)
			h.Write([]byte(p))
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}()

// staticHandler serves the embedded CSS and script.
func staticHandler() http.Handler {
	sub, _ := fs.Sub(assets, "static")
	files := http.StripPrefix("/ui/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("v") == assetVersion {
			w.Header().Set("Cache-Control", "private, max-age=86400, immutable")
		} else {
			w.Header().Set("Cache-Control", "no-cache")
		}
		files.ServeHTTP(w, r)
	})
}

// pages are the parsed templates, one set per page, each the layout and
// the page's own content.
type pages struct {
	byName map[string]*template.Template
}

var funcs = template.FuncMap{
	"vis":      visible,
	"lines":    visibleBlock,
	"next":     func(seq uint64) uint64 { return seq + 1 },
	"target":   target,
	"answer":   answerOf,
	"card":     cardOf,
	"summary":  func(r access.Request) string { return r.Summary() },
	"flag":     flagText,
	"cut":      cut,
	"windows":  func() []string { return []string{"7d", "30d", "90d"} },
	"time":     fmtTime,
	"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"dur":      fmtDuration,
	"ms":       func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + " ms" },
	"short":    shortHash,
	"join":     strings.Join,
	"add":      func(a, b int) int { return a + b },
	"pathseg":  url.PathEscape,
	"decclass": decisionClass,
}

func parsePages() (*pages, error) {
	base, err := template.New("layout.tmpl").Funcs(funcs).ParseFS(assets, "templates/layout.tmpl", "templates/parts.tmpl")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	names, err := fs.Glob(assets, "templates/page_*.tmpl")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, n := range names {
		t, err := template.Must(base.Clone()).ParseFS(assets, n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(path.Base(n), "page_"), ".tmpl")
		p.byName[name] = t
	}
	return p, nil
}

// view is what every page's template gets: the page's own data in Data,
// and what the layout needs.
type view struct {
	Title string
	// Nav is the section the page belongs to (overview, sessions, …).
	Nav      string
	SignedIn bool
	// Console names the console session; CSRF is its token for forms.
	Console  string
	CSRF     string
	Operator string
	Now      time.Time
	// Open counts the open access requests (a badge in the navigation).
	Open    int
	Version string
	Data    any
}

// render writes page name with data, for the signed-in session s.
func (c *Console) render(w http.ResponseWriter, status int, s consoleSession, name, title, nav string, data any) {
	v := view{Title: title, Nav: nav, SignedIn: true, Console: s.ID, CSRF: s.CSRF, Operator: c.o.Operator,
		Now: c.o.Now(), Version: assetVersion, Data: data}
	if c.o.Access != nil {
		for _, r := range c.o.Access.List(false) {
			if r.State == "open" {
				v.Open++
			}
		}
	}
	c.write(w, status, name, v)
}

func (c *Console) write(w http.ResponseWriter, status int, name string, v view) {
	t := c.pages.byName[name]
	var buf bytes.Buffer
	if t == nil {
		plainError(w, http.StatusInternalServerError, "console: no page "+name)
		return
	}
	if err := t.ExecuteTemplate(&buf, "layout.tmpl", v); err != nil {
		c.o.Logger.Error("console: render", "page", name, "error", err)
		plainError(w, http.StatusInternalServerError, "console: the page could not be rendered")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// message is the data of the message page: a heading and what to do.
type message struct {
	Heading string
	Text    string
	// Login says to show how to sign in.
	Login bool
}

// fail answers with a page that says what went wrong, with the
// navigation when the browser is signed in.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, text string) {
	heading := http.StatusText(status)
	if s, _, ok := c.session(r); ok {
		c.render(w, status, s, "message", heading, "", message{Heading: heading, Text: text})
		return
	}
	c.write(w, status, "message", view{Title: heading, Now: c.o.Now(), Version: assetVersion, Data: message{Heading: heading, Text: text, Login: status == http.StatusUnauthorized || status == http.StatusForbidden}})
}

// signedOut answers with the page that says how to sign in.
func (c *Console) signedOut(w http.ResponseWriter, r *http.Request, status int, text string) {
	c.write(w, status, "message", view{Title: "Sign in", Now: c.o.Now(), Version: assetVersion,
		Data: message{Heading: "Sign in to the keyhole console", Text: text, Login: true}})
}

// visible shows s as inert text on one line: control characters (line
// breaks and terminal escapes among them), bidirectional and other
// invisible format characters, line separators and invalid UTF-8 are
// written as escapes (\u202e, \x1b), so they can neither reorder nor hide
// what surrounds them. html/template then escapes the markup.
func visible(s string) string { return escapeInvisible(s, false) }

// visibleBlock is visible for a block of text shown in <pre>: line breaks
// and tabs stay.
func visibleBlock(s string) string { return escapeInvisible(s, true) }

func escapeInvisible(s string, keepLines bool) string {
	clean := true
	for _, r := range s {
		if invisible(r, keepLines) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case invisible(r, keepLines):
			if r < 0x80 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

func invisible(r rune, keepLines bool) bool {
	if keepLines && (r == '\n' || r == '\t') {
		return false
	}
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) ||
		unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029'
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func fmtDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

func itoa(i int) string { return strconv.Itoa(i) }

func shortHash(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

func decisionClass(d any) string {
	switch fmt.Sprint(d) {
	case "allow", "approved", "used":
		return "ok"
	case "deny", "denied":
		return "bad"
	case "error", "interrupted", "expired":
		return "warn"
	}
	return "info"
}
