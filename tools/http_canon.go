package tools

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// httpCanonicalPath turns an origin-form request path into its decoded
// segments, or refuses it. It never "fixes" a path:
//
//   - the path starts with exactly one "/" (so "//host", "http://host",
//     "@host", "host:443/x" and "\\host" are refused) and holds no "?", "#",
//     "\" or control byte;
//   - it is split on "/" first, then each segment is percent-decoded exactly
//     once: a malformed escape is refused, and so is a decoded "/" or "\", a
//     control byte, or invalid UTF-8 (overlong "%c0%ae");
//   - a decoded segment may not be empty, ".", "..", start with "..", or
//     start with ".;" (Tomcat's "..;" and ".;" path parameters).
//
// Anything else, full-width "．．" and "／" or a literal "%2e" from "%252e"
// included, is opaque data: it is kept byte for byte and re-escaped by
// httpEscapedPath, never normalized. With trailingSlash a single trailing
// "/" is allowed (base_url paths such as "/v1/"); request paths refuse it,
// since policy.Request has no way to carry it. "/" alone is no segments.
func httpCanonicalPath(p string, trailingSlash bool) ([]string, error) {
	if p == "" {
		if trailingSlash {
			return nil, nil
		}
		return nil, httpPathErr(`must start with "/"`)
	}
	switch {
	case p[0] != '/':
		return nil, httpPathErr(`must be an origin-form path starting with "/", not a URL or host`)
	case p == "/":
		return nil, nil
	case p[1] == '/':
		return nil, httpPathErr(`must not start with "//"`)
	}
	rest := p[1:]
	if trailingSlash {
		rest = strings.TrimSuffix(rest, "/")
	}
	raws := strings.Split(rest, "/")
	segs := make([]string, len(raws))
	for i, raw := range raws {
		seg, err := httpDecodeSegment(raw, i+1)
		if err != nil {
			return nil, err
		}
		segs[i] = seg
	}
	return segs, nil
}

// httpDecodeSegment checks and decodes segment number i (1-based) of a path.
func httpDecodeSegment(raw string, i int) (string, error) {
	if raw == "" {
		return "", httpPathErr(fmt.Sprintf("segment %d is empty (no \"//\" or trailing \"/\")", i))
	}
	for k := 0; k < len(raw); k++ {
		switch ch := raw[k]; {
		case ch == '?' || ch == '#':
			return "", httpPathErr(`must not contain "?" or "#"; put query parameters in query`)
		case ch == '\\':
			return "", httpPathErr(fmt.Sprintf("segment %d contains a backslash", i))
		case ch < 0x20 || ch == 0x7f:
			return "", httpPathErr(fmt.Sprintf("segment %d contains a control character", i))
		}
	}
	seg, err := url.PathUnescape(raw) // exactly once
	if err != nil {
		return "", httpPathErr(fmt.Sprintf("segment %d contains a malformed percent-escape", i))
	}
	if msg := httpSegmentProblem(seg); msg != "" {
		return "", httpPathErr(fmt.Sprintf("segment %d %s", i, msg))
	}
	return seg, nil
}

// httpSegmentProblem says why a decoded segment (or template parameter
// value) may not be one path segment, or returns "".
func httpSegmentProblem(seg string) string {
	switch {
	case seg == "":
		return "is empty"
	case seg == "." || seg == ".." || strings.HasPrefix(seg, "..") || strings.HasPrefix(seg, ".;"):
		return "is a dot segment"
	}
	for k := 0; k < len(seg); k++ {
		switch ch := seg[k]; {
		case ch == '/':
			return "contains an encoded slash"
		case ch == '\\':
			return "contains a backslash"
		case ch < 0x20 || ch == 0x7f:
			return "contains a control character"
		}
	}
	if !utf8.ValidString(seg) {
		return "is not valid UTF-8"
	}
	return ""
}

func httpPathErr(msg string) error { return &ArgError{Msg: "path: " + msg} }

// httpJoinPath is "/" + segments joined by "/" ("" for none), unescaped.
func httpJoinPath(segs []string) string {
	if len(segs) == 0 {
		return ""
	}
	return "/" + strings.Join(segs, "/")
}

// httpEscapedPath is "/" + each segment escaped with url.PathEscape and
// joined by "/" ("" for none). PathEscape escapes "/", "?", "#", "%" and ";"
// within a segment, so the upstream splits it exactly as policy did.
func httpEscapedPath(segs []string) string {
	if len(segs) == 0 {
		return ""
	}
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// upstreamURL rebuilds the URL sent upstream from the tool's origin and
// base path and the request's checked segments, with Path and RawPath set
// consistently so what was checked is what is sent.
func (t *httpTool) upstreamURL(segs []string, query string) *url.URL {
	all := make([]string, 0, len(t.baseSegs)+len(segs))
	all = append(append(all, t.baseSegs...), segs...)
	u := &url.URL{
		Scheme:   t.origin.Scheme,
		Host:     t.origin.Host,
		Path:     httpJoinPath(all),
		RawPath:  httpEscapedPath(all),
		RawQuery: query,
	}
	if u.Path == "" {
		u.Path, u.RawPath = "/", ""
	}
	return u
}
