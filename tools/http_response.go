package tools

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/keyhole-dev/keyhole/tools/scrub"
)

// httpMaxResponseHeaders caps the header fields of an upstream response.
const httpMaxResponseHeaders = 100

// httpMaxErrorBody caps the error body a templated or projected tool shows
// for an upstream error: enough for the error's message, too little to
// carry what response.fields keeps back.
const httpMaxErrorBody = 4096

// httpResponseHeaders are the response headers the agent may see; so are
// those starting with "x-ratelimit-" or "ratelimit-". Set-Cookie,
// authentication and hop-by-hop headers never pass.
var httpResponseHeaders = map[string]bool{
	"content-type": true, "content-length": true, "etag": true, "last-modified": true,
	"link": true, "location": true, "retry-after": true, "x-request-id": true, "cache-control": true,
}

// httpView is the structured result of an http call, as the agent sees it.
//
// Body is the body's JSON value when the body is complete JSON; otherwise
// the body as a string, base64-encoded (BodyEncoding "base64") when it is
// not UTF-8. With response.fields, Body is the projection (see project) and
// a body that is not complete JSON is withheld (null, with Note). A body
// in which a credential was found in an encoded form is withheld too
// (null, Withheld, Note). Invalid UTF-8 inside a JSON body is replaced by
// U+FFFD (InvalidUTF8), so every frame carrying the result is valid.
type httpView struct {
	Status       int               `json:"status"`
	Headers      map[string]string `json:"headers"`
	Body         any               `json:"body"`
	BodyEncoding string            `json:"body_encoding,omitempty"`
	Truncated    bool              `json:"truncated"`
	Withheld     bool              `json:"withheld,omitempty"`
	InvalidUTF8  bool              `json:"invalid_utf8_replaced,omitempty"`
	Note         string            `json:"note,omitempty"`
}

// shape reads the (decompressed) body, scrubs it and only then cuts it at
// max_bytes, and builds the result. It reads Margin() bytes past max_bytes
// so that a credential the cut falls into is redacted whole. Last, every
// byte the agent would receive is checked again (see sealResult).
func (t *httpTool) shape(ctx context.Context, resp *http.Response, sc *scrub.Scrubber, bytesOut int64) (*Result, error) {
	n := 0
	for _, vs := range resp.Header {
		n += len(vs)
	}
	if n > httpMaxResponseHeaders {
		return nil, &ExecError{
			Msg:    fmt.Sprintf("upstream response has more than %d header fields", httpMaxResponseHeaders),
			Detail: fmt.Sprintf("%d header fields, status %d", n, resp.StatusCode),
		}
	}
	// A templated or projected tool answers an upstream error as an error:
	// the status and the error body as sent, capped short, not a
	// projection of it (which would be empty).
	upstreamErr := resp.StatusCode >= 400 && (t.templated() || len(t.fields) > 0)
	maxBytes := t.maxBytes
	if upstreamErr {
		maxBytes = min(maxBytes, httpMaxErrorBody)
	}
	limit := int64(maxBytes) + int64(sc.Margin())
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, t.execError(ctx, sc, err)
	}
	res := &Result{Status: resp.StatusCode, BytesIn: int64(len(raw)), BytesOut: bytesOut, UpstreamError: upstreamErr}
	body, cut, outcome := sc.Capped(raw, maxBytes, int64(len(raw)) > limit)
	res.Truncated = cut
	view := httpView{Status: resp.StatusCode, Truncated: cut}
	var hit bool
	view.Headers, hit, view.InvalidUTF8 = httpShapeHeaders(resp.Header, sc)
	projHit := false
	switch {
	case outcome == scrub.Withheld:
		view.Body, view.Withheld, view.Note = nil, true, scrub.WithheldNote
	case upstreamErr:
		httpShapeRaw(&view, body, resp.Header.Get("Content-Type"))
		view.Note = fmt.Sprintf("the upstream answered %d; its error body is shown as sent (at most %d bytes)", resp.StatusCode, maxBytes)
	default:
		projHit = t.shapeBody(&view, body, resp.Header.Get("Content-Type"), sc)
	}
	view.fixContentLength()
	res.Structured, res.Text = view, view.text(maxBytes)
	sealed := sealResult(res, sc, func() any {
		return httpView{Status: resp.StatusCode, Headers: map[string]string{}, Truncated: cut, Withheld: true, Note: scrub.WithheldNote}
	}, func(v any) string { return v.(httpView).text(maxBytes) })
	res.Withheld = view.Withheld || sealed
	res.Scrubbed = hit || outcome != scrub.Clean || projHit || sealed
	return res, nil
}

// sealResult checks every byte the agent would receive of res — its
// structured content as JSON and its text — once more, whole: a credential
// that only the rendering put together (two scrubbed parts side by side,
// an escape the encoder added) or a structure that does not marshal
// replaces the result by withheld() and its text, and sealResult reports
// true. Text that is not UTF-8 is made valid.
func sealResult(res *Result, sc *scrub.Scrubber, withheld func() any, text func(any) string) bool {
	res.Text = strings.ToValidUTF8(res.Text, "\uFFFD")
	js, err := json.Marshal(res.Structured)
	if err == nil && utf8.Valid(js) && !sc.Contains(js) && !sc.ContainsString(res.Text) {
		res.StructuredJSON = js
		return false
	}
	res.Structured, res.StructuredJSON = withheld(), nil
	res.Text = text(res.Structured)
	return true
}

// httpShapeHeaders keeps the allowlisted headers, lower-cased, values of a
// repeated header joined with ", ", names and values scrubbed (a value
// withheld becomes Redacted) and made valid UTF-8. It reports whether
// anything was scrubbed and whether invalid UTF-8 was replaced.
func httpShapeHeaders(h http.Header, sc *scrub.Scrubber) (map[string]string, bool, bool) {
	out := map[string]string{}
	hit, invalid := false, false
	for k, vs := range h {
		name := strings.ToLower(k)
		if !httpResponseHeaders[name] && !strings.HasPrefix(name, "x-ratelimit-") && !strings.HasPrefix(name, "ratelimit-") {
			continue
		}
		name, h1 := sc.String(name)
		val, h2 := sc.String(strings.Join(vs, ", "))
		if !utf8.ValidString(val) {
			val, invalid = strings.ToValidUTF8(val, "\uFFFD"), true
		}
		out[name] = val
		hit = hit || h1 || h2
	}
	return out, hit, invalid
}

// shapeBody sets view.Body from the scrubbed body and reports whether the
// projection needed scrubbing. A JSON body with invalid UTF-8 in its
// strings has it replaced by U+FFFD, and says so.
func (t *httpTool) shapeBody(view *httpView, body []byte, contentType string, sc *scrub.Scrubber) bool {
	if len(body) == 0 {
		view.Body = ""
		return false
	}
	isJSON := !view.Truncated && json.Valid(body)
	if isJSON && !utf8.Valid(body) {
		// Outside strings JSON is ASCII, so only string contents change.
		body, view.InvalidUTF8 = bytes.ToValidUTF8(body, []byte("\uFFFD")), true
	}
	if len(t.fields) > 0 {
		if !isJSON {
			view.Note = "body withheld: only response.fields may be returned and the body is not complete JSON"
			return false
		}
		proj, o := sc.Scrub(t.project(body))
		if o == scrub.Withheld || !json.Valid(proj) {
			view.Body, view.Withheld, view.Note = nil, true, scrub.WithheldNote
			return true
		}
		view.Body = json.RawMessage(proj)
		return o != scrub.Clean
	}
	httpShapeRaw(view, body, contentType)
	return false
}

// httpShapeRaw sets view.Body to the (scrubbed, cut) body as sent: its
// JSON value when it is complete JSON, else the text, else base64.
func httpShapeRaw(view *httpView, body []byte, contentType string) {
	if len(body) == 0 {
		view.Body = ""
		return
	}
	isJSON := !view.Truncated && json.Valid(body)
	if isJSON && !utf8.Valid(body) {
		body, view.InvalidUTF8 = bytes.ToValidUTF8(body, []byte("\uFFFD")), true
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case isJSON && len(trimmed) > 0 && (strings.Contains(mt, "json") || trimmed[0] == '{' || trimmed[0] == '['):
		view.Body = json.RawMessage(body)
	case utf8.Valid(body):
		view.Body = string(body)
	default:
		view.Body = base64.StdEncoding.EncodeToString(body)
		view.BodyEncoding = "base64"
	}
}

// fixContentLength makes the content-length the agent is shown that of
// the body it receives (scrubbed, cut or projected), not the upstream's.
func (v *httpView) fixContentLength() {
	if _, ok := v.Headers["content-length"]; !ok {
		return
	}
	n := 0
	switch b := v.Body.(type) {
	case json.RawMessage:
		n = len(b)
	case string:
		n = len(b)
	}
	v.Headers["content-length"] = strconv.Itoa(n)
}

// project keeps only the configured response fields of a JSON body.
//
// When every field is a "#." path ("#.number", "#.user.login"), the body
// must be an array and becomes an array with one object per element, keyed
// by the path without "#." ({"number": 1, "user.login": "x"}); a body that
// is not an array projects to null. Otherwise the result is one object
// keyed by the full path ({"total_count": 3, "items.#.title": [...]}).
// A path that matches nothing is left out.
func (t *httpTool) project(body []byte) []byte {
	var b bytes.Buffer
	if !t.eachFields {
		httpWriteFields(&b, gjson.ParseBytes(body), t.fields, 0)
		return b.Bytes()
	}
	root := gjson.ParseBytes(body)
	if !root.IsArray() {
		return []byte("null")
	}
	b.WriteByte('[')
	first := true
	root.ForEach(func(_, el gjson.Result) bool {
		if !first {
			b.WriteByte(',')
		}
		first = false
		httpWriteFields(&b, el, t.fields, len("#."))
		return true
	})
	b.WriteByte(']')
	return b.Bytes()
}

// httpWriteFields writes an object of the fields found in v, each path
// with its first strip bytes removed.
func httpWriteFields(b *bytes.Buffer, v gjson.Result, fields []string, strip int) {
	b.WriteByte('{')
	n := 0
	for _, f := range fields {
		path := f[strip:]
		r := fieldGet(v, path)
		if !r.Exists() {
			continue
		}
		raw := r.Raw
		if raw == "" {
			enc, err := json.Marshal(r.Value())
			if err != nil {
				continue
			}
			raw = string(enc)
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		key, _ := json.Marshal(path)
		b.Write(key)
		b.WriteByte(':')
		b.WriteString(raw)
	}
	b.WriteByte('}')
}

// text renders the view for clients that read only text:
// "HTTP 200\ncontent-type: ...\n\n<body>".
func (v httpView) text(maxBytes int) string {
	var b strings.Builder
	n := 16
	for k, val := range v.Headers {
		n += len(k) + len(val) + 3
	}
	if body, ok := v.Body.(json.RawMessage); ok {
		n += len(body)
	} else if body, ok := v.Body.(string); ok {
		n += len(body)
	}
	b.Grow(n + len(v.Note) + 64)
	b.WriteString("HTTP ")
	b.WriteString(strconv.Itoa(v.Status))
	b.WriteByte('\n')
	var small [8]string
	names := small[:0]
	for k := range v.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(v.Headers[k])
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	switch body := v.Body.(type) {
	case json.RawMessage:
		b.Write(body)
	case string:
		if v.BodyEncoding != "" {
			b.WriteString("(body is " + v.BodyEncoding + "-encoded)\n")
		}
		b.WriteString(body)
	}
	if v.InvalidUTF8 {
		b.WriteString("\n(invalid UTF-8 in the response was replaced by U+FFFD)")
	}
	if v.Note != "" {
		b.WriteString("(" + v.Note + ")")
	}
	if v.Truncated {
		b.WriteString("\n[truncated at " + strconv.Itoa(maxBytes) + " bytes]")
	}
	return b.String()
}
