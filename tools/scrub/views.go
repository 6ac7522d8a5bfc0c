package scrub

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/url"
	"unicode/utf8"
)

// Views: what a client makes of a body before anyone reads it. A JSON
// parser turns "\u0053" into "S", a browser turns "&#83;" into "S", a URL
// decoder turns "%53" into "S", and a base64 or hex decoder skips line
// breaks. A form that is literal in such a view but not in the body cannot
// be redacted byte for byte, so finding one withholds the whole body.
//
// Building a view costs a copy, so each is built only when the body holds
// an escape that decodes to a byte some form contains (an escaped quote or
// newline cannot complete a form of a token made of letters and digits);
// line breaks are checked where they stand, on a window around each.

// maxViewDepth bounds views of views (a percent escape inside a JSON
// escape, and so on).
const maxViewDepth = 2

// jsonEscapes maps the byte after a backslash to what the two-byte JSON
// escape decodes to, as encoding/json decodes it.
var jsonEscapes = func() [256]byte {
	var t [256]byte
	for _, c := range []byte(`"\/bfnrt`) {
		var s string
		if err := json.Unmarshal([]byte{'"', '\\', c, '"'}, &s); err == nil && len(s) == 1 {
			t[c] = s[0]
		}
	}
	return t
}()

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

// jsonView returns b with its JSON escapes decoded, if one of them decodes
// to an interesting byte.
func (m *matcher) jsonView(b []byte) ([]byte, bool) {
	trigger := false
	for i := 0; !trigger; i++ {
		j := bytes.IndexByte(b[i:], '\\')
		if j < 0 || i+j+1 >= len(b) {
			break
		}
		i += j + 1 // at the byte after the backslash
		switch c := b[i]; {
		case c == 'u' && i+5 <= len(b):
			var u [2]byte
			if _, err := hex.Decode(u[:], b[i+1:i+5]); err == nil {
				trigger = m.interestingRune(rune(u[0])<<8 | rune(u[1]))
			}
		case jsonEscapes[c] != 0:
			trigger = m.interesting[jsonEscapes[c]]
		}
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

// interestingRune reports whether the UTF-8 encoding of r (of a \u escape)
// starts with a byte some form holds; a surrogate half stands for a 4-byte
// sequence.
func (m *matcher) interestingRune(r rune) bool {
	if 0xD800 <= r && r < 0xE000 {
		return m.interesting[0xF0] || m.interesting[0xF1] || m.interesting[0xF2] || m.interesting[0xF3] || m.interesting[0xF4]
	}
	var enc [utf8.UTFMax]byte
	utf8.EncodeRune(enc[:], r)
	return m.interesting[enc[0]]
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
// one of them decodes to an interesting byte.
func (m *matcher) percentView(b []byte) ([]byte, bool) {
	trigger := false
	for i := 0; !trigger; i++ {
		j := bytes.IndexByte(b[i:], '%')
		if j < 0 || i+j+3 > len(b) {
			break
		}
		i += j
		var c [1]byte
		if _, err := hex.Decode(c[:], b[i+1:i+3]); err == nil {
			trigger = m.interesting[c[0]]
		}
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
// of them decodes to an interesting byte.
func (m *matcher) htmlView(b []byte) ([]byte, bool) {
	trigger := false
	for i := 0; !trigger; i++ {
		j := bytes.IndexByte(b[i:], '&')
		if j < 0 {
			break
		}
		i += j
		// The longest named reference is 33 bytes with its '&' and ';'.
		end := min(len(b), i+34)
		if k := bytes.IndexByte(b[i+1:end], ';'); k >= 0 {
			end = i + 1 + k + 1
		}
		tok := string(b[i:end])
		dec := html.UnescapeString(tok)
		if dec == tok {
			continue
		}
		for k := 0; k < len(dec) && !trigger; k++ {
			trigger = m.interesting[dec[k]]
		}
	}
	if !trigger {
		return nil, false
	}
	return []byte(html.UnescapeString(string(b))), true
}

// joined reports whether a form appears in b once line breaks are taken
// out: base64 wrapped at 64 or 76 columns, hex dumps over several lines.
// A break is a run of CR and LF, raw or JSON-escaped (\r, \n). Only windows
// across a break are checked, and only where the bytes on either side can
// be neighbours in a form (directly, or with a space between for hex
// separated by spaces); a form wholly on one line was matched already.
func (m *matcher) joined(b []byte) bool {
	for _, c := range []byte{'\n', '\r', '\\'} {
		for i := 0; ; i++ {
			j := bytes.IndexByte(b[i:], c)
			if j < 0 {
				break
			}
			i += j
			if c == '\\' && (i+1 >= len(b) || b[i+1] != 'n' && b[i+1] != 'r') {
				continue
			}
			if m.joinedAt(b, i) {
				return true
			}
		}
	}
	return false
}

// joinedAt checks the break that holds b[at].
func (m *matcher) joinedAt(b []byte, at int) bool {
	start, end := at, at
	for start > 0 && breakBefore(b, start) > 0 {
		start -= breakBefore(b, start)
	}
	for end < len(b) && breakAt(b, end) > 0 {
		end += breakAt(b, end)
	}
	if start == 0 || end == len(b) {
		return false
	}
	a, z := b[start-1], b[end]
	direct := m.pair(a, z)
	spaced := m.pair(a, ' ') && m.pair(' ', z)
	if !direct && !spaced {
		return false
	}
	w := m.maxK - 1
	left := make([]byte, 0, 2*w+1)
	for i := start; i > 0 && len(left) < w; {
		if n := breakBefore(b, i); n > 0 {
			i -= n
			continue
		}
		i--
		left = append(left, b[i])
	}
	var right []byte
	for i := end; i < len(b) && len(right) < w; {
		if n := breakAt(b, i); n > 0 {
			i += n
			continue
		}
		right = append(right, b[i])
		i++
	}
	slicesReverse(left)
	win := append(left, right...)
	if direct && len(m.find(win, nil, true)) > 0 {
		return true
	}
	if spaced {
		win = append(append(append(win[:0:0], left...), ' '), right...)
		return len(m.find(win, nil, true)) > 0
	}
	return false
}

// breakAt returns the length of the line break (CR, LF, \r, \n) at b[i],
// or 0.
func breakAt(b []byte, i int) int {
	switch {
	case b[i] == '\n' || b[i] == '\r':
		return 1
	case b[i] == '\\' && i+1 < len(b) && (b[i+1] == 'n' || b[i+1] == 'r'):
		return 2
	}
	return 0
}

// breakBefore returns the length of the line break that ends just before
// b[i], or 0.
func breakBefore(b []byte, i int) int {
	switch {
	case b[i-1] == '\n' || b[i-1] == '\r':
		return 1
	case i >= 2 && b[i-2] == '\\' && (b[i-1] == 'n' || b[i-1] == 'r'):
		return 2
	}
	return 0
}

func slicesReverse(b []byte) {
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
}
