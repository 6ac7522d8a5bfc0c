package scrub

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/url"
)

// Views: what a client makes of a body before anyone reads it. A JSON
// parser turns "\u0053" into "S", a browser turns "&#83;" into "S", a URL
// decoder turns "%53" into "S", and a base64 or hex decoder skips line
// breaks. A form that is literal in such a view but not in the body cannot
// be redacted byte for byte, so finding one withholds the whole body.
//
// Building a view costs a copy, so each is built only when the body holds
// an escape that decodes to a byte some form contains, next to a byte it can
// stand beside in that form (an escaped quote or newline cannot complete a
// form of a token made of letters and digits); line breaks are checked
// where they stand, on a window around each.

// maxViewDepth bounds views of views (a percent escape inside a JSON
// escape, and so on).
const maxViewDepth = 2

// encoded reports whether a decoded view of b, or a line-joined window of
// it, holds a form of a secret.
func (s *Scrubber) encoded(b []byte, depth int) bool {
	m := s.m
	if len(m.forms) == 0 {
		return false
	}
	if m.joined(b) {
		return true
	}
	if depth >= maxViewDepth {
		return false
	}
	for _, view := range []func([]byte) ([]byte, bool){m.jsonView, m.percentView, m.htmlView} {
		if v, ok := view(b); ok && (len(m.find(v, nil, true)) > 0 || s.encoded(v, depth+1)) {
			return true
		}
	}
	return false
}

// jsonView returns b with its JSON escapes decoded, if one of them could be
// part of a form (see worth).
func (m *matcher) jsonView(b []byte) ([]byte, bool) {
	trigger := false
	var sc scratch
	for i := 0; !trigger; {
		if i = nextByte(b, i, '\\'); i < 0 {
			break
		}
		dec, n := jsonEscapeAt(b, i, &sc)
		if n == 0 {
			i++
			continue
		}
		trigger = m.worth(b, i, i+n, dec, jsonEscape)
		i += n
	}
	if !trigger {
		return nil, false
	}
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		// A piece is what may stand inside one JSON string: no quote or
		// control byte, except escaped.
		i := 0
		for i < len(b) {
			if c := b[i]; c == '\\' && i+1 < len(b) {
				i += 2
			} else if c == '"' || c < 0x20 {
				break
			} else {
				i++
			}
		}
		out = appendJSONPiece(out, b[:i])
		if i < len(b) {
			out = append(out, b[i])
			i++
		}
		b = b[i:]
	}
	return out, true
}

// appendJSONPiece appends p decoded as JSON string contents; when p is not
// valid as a whole, each run of valid escapes in it is decoded on its own
// and the rest kept as it is.
func appendJSONPiece(out, p []byte) []byte {
	if bytes.IndexByte(p, '\\') < 0 {
		return append(out, p...)
	}
	q := make([]byte, 0, len(p)+2)
	var s string
	if json.Unmarshal(append(append(append(q, '"'), p...), '"'), &s) == nil {
		return append(out, s...)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\\')
		if i < 0 {
			return append(out, p...)
		}
		out, p = append(out, p[:i]...), p[i:]
		n := jsonEscapeRun(p)
		if n == 0 {
			out, p = append(out, p[0]), p[1:]
			continue
		}
		if json.Unmarshal(append(append(append(q[:0], '"'), p[:n]...), '"'), &s) == nil {
			out = append(out, s...)
		} else {
			out = append(out, p[:n]...)
		}
		p = p[n:]
	}
	return out
}

// jsonEscapeRun returns the length of the run of valid JSON escapes at the
// start of p.
func jsonEscapeRun(p []byte) int {
	n := 0
	for n+1 < len(p) && p[n] == '\\' {
		switch c := p[n+1]; {
		case c == 'u' && n+6 <= len(p):
			var u [2]byte
			if _, err := hex.Decode(u[:], p[n+2:n+6]); err != nil {
				return n
			}
			n += 6
		case c != 'u' && jsonEscapes[c] != 0:
			n += 2
		default:
			return n
		}
	}
	return n
}

// percentView returns b with its percent escapes decoded (any case), if
// one of them could be part of a form (see worth).
func (m *matcher) percentView(b []byte) ([]byte, bool) {
	trigger := false
	var sc scratch
	for i := 0; !trigger; {
		if i = nextByte(b, i, '%'); i < 0 {
			break
		}
		dec, n := percentAt(b, i, &sc)
		if n == 0 {
			i++
			continue
		}
		trigger = m.worth(b, i, i+n, dec, percentEscape)
		i += n
	}
	if !trigger {
		return nil, false
	}
	out := make([]byte, 0, len(b))
	for {
		i := bytes.IndexByte(b, '%')
		if i < 0 {
			return append(out, b...), true
		}
		out = append(out, b[:i]...)
		j := i
		for j+3 <= len(b) && b[j] == '%' && validHex(b[j+1:j+3]) {
			j += 3
		}
		if j == i {
			out, b = append(out, '%'), b[i+1:]
			continue
		}
		if s, err := url.PathUnescape(string(b[i:j])); err == nil {
			out = append(out, s...)
		} else {
			out = append(out, b[i:j]...)
		}
		b = b[j:]
	}
}

func validHex(p []byte) bool {
	var c [1]byte
	_, err := hex.Decode(c[:], p)
	return err == nil
}

// htmlView returns b with its HTML character references decoded, if one
// of them could be part of a form (see worth).
func (m *matcher) htmlView(b []byte) ([]byte, bool) {
	trigger := false
	var sc scratch
	for i := 0; !trigger; {
		if i = nextByte(b, i, '&'); i < 0 {
			break
		}
		dec, n := htmlRefAt(b, i, &sc)
		if n == 0 {
			i++
			continue
		}
		trigger = m.worth(b, i, i+n, dec, htmlEscape)
		i += n
	}
	if !trigger {
		return nil, false
	}
	return []byte(html.UnescapeString(string(b))), true
}

// nextByte returns the index of the first c in b at or after i, or -1. It
// looks at the next few bytes itself before calling bytes.IndexByte, since
// escapes come in runs and a call per escape costs more than the search.
func nextByte(b []byte, i int, c byte) int {
	for end := min(len(b), i+8); i < end; i++ {
		if b[i] == c {
			return i
		}
	}
	if i >= len(b) {
		return -1
	}
	if j := bytes.IndexByte(b[i:], c); j >= 0 {
		return i + j
	}
	return -1
}

// worth reports whether the escape b[i:j], which decodes to dec, could be
// part of a run of a form in the decoded view: a byte of dec occurs in some
// form and, unless every part is a single byte, dec forms a pair that some
// form holds with what stands next to it (decoded, if an escape too).
func (m *matcher) worth(b []byte, i, j int, dec []byte, e escape) bool {
	hit := false
	for _, c := range dec {
		hit = hit || m.interesting[c]
	}
	if !hit || m.g == 1 || len(dec) > 1 && m.anyPair(dec) {
		return hit
	}
	var sc scratch
	if i > 0 {
		prev := b[i-1]
		if d, n := e.before(b, i, &sc); n > 0 && len(d) > 0 {
			prev = d[len(d)-1]
		}
		if m.pair(prev, dec[0]) {
			return true
		}
	}
	if j < len(b) {
		next := b[j]
		if d, n := e.at(b, j, &sc); n > 0 && len(d) > 0 {
			next = d[0]
		}
		if m.pair(dec[len(dec)-1], next) {
			return true
		}
	}
	return false
}

// anyPair reports whether two adjacent bytes of d occur together in a form.
func (m *matcher) anyPair(d []byte) bool {
	for k := 1; k < len(d); k++ {
		if m.pair(d[k-1], d[k]) {
			return true
		}
	}
	return false
}
