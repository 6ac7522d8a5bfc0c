package servertest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
)

// Browser is a browser tab for tests of the console without a browser:
// it keeps cookies per host, follows no redirect (so a test sees each
// one), and posts forms with the CSRF token of the last page that had
// one.
type Browser struct {
	// Base is the console's origin (http://127.0.0.1:7778).
	Base   string
	Client *http.Client
	// CSRF is the token the console put in its forms.
	CSRF string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// NewBrowser returns a signed-out browser for the console at base.
func NewBrowser(base string) *Browser {
	jar, _ := cookiejar.New(nil)
	return &Browser{Base: base, Client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// SignIn opens a login link and the overview, and keeps the CSRF token.
func (b *Browser) SignIn(link string) error {
	resp, _, err := b.Do(http.MethodGet, link, nil, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		return fmt.Errorf("GET the login link = %d (Location %q), want 303 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body, err := b.Do(http.MethodGet, "/ui/", nil, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /ui/ after signing in = %d:\n%s", resp.StatusCode, body)
	}
	if b.CSRF = CSRFOf(body); b.CSRF == "" {
		return fmt.Errorf("the overview has no CSRF token:\n%s", body)
	}
	return nil
}

// CSRFOf returns the CSRF token of a page's forms, or "".
func CSRFOf(page string) string {
	if m := csrfField.FindStringSubmatch(page); m != nil {
		return m[1]
	}
	return ""
}

// Do sends a request to the console: target is a path or a whole URL;
// a form is posted as application/x-www-form-urlencoded; header may set
// Host. It returns the answer and its whole body.
func (b *Browser) Do(method, target string, form url.Values, header map[string]string) (*http.Response, string, error) {
	if strings.HasPrefix(target, "/") {
		target = b.Base + target
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		return nil, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", method, target, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp, string(out), err
}

// Post submits a form with the browser's CSRF token, unless the form
// sets its own.
func (b *Browser) Post(path string, form url.Values) (*http.Response, string, error) {
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.CSRF)
	}
	return b.Do(http.MethodPost, path, form, nil)
}
