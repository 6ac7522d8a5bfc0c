package scrub

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
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

// escape is a kind of escape a view decodes.
type escape uint8

const (
	jsonEscape escape = iota
	percentEscape
	htmlEscape
)

// at returns what the escape of kind e at b[i] decodes to (in d, a scratch
// buffer of the caller's) and the escape's length, 0 when there is none.
func (e escape) at(b []byte, i int, d *scratch) ([]byte, int) {
	switch e {
	case jsonEscape:
		return jsonEscapeAt(b, i, d)
	case percentEscape:
		return percentAt(b, i, d)
	}
	return htmlRefAt(b, i, d)
}

// before is at for an escape that ends just before b[i].
func (e escape) before(b []byte, i int, d *scratch) ([]byte, int) {
	switch e {
	case jsonEscape:
		return jsonEscapeBefore(b, i, d)
	case percentEscape:
		return percentBefore(b, i, d)
	}
	return htmlRefBefore(b, i, d)
}

// scratch holds what one escape decodes to: a rune, or the two a named
// HTML reference may stand for.
type scratch [2 * utf8.UTFMax]byte

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

// jsonEscapeAt decodes the JSON escape at b[i] (a \u escape on its own:
// a surrogate half stands for the lead byte of a 4-byte sequence).
func jsonEscapeAt(b []byte, i int, d *scratch) ([]byte, int) {
	if i+1 >= len(b) || b[i] != '\\' {
		return nil, 0
	}
	c := b[i+1]
	if c != 'u' {
		if e := jsonEscapes[c]; e != 0 {
			d[0] = e
			return d[:1], 2
		}
		return nil, 0
	}
	var u [2]byte
	if i+6 > len(b) {
		return nil, 0
	}
	if _, err := hex.Decode(u[:], b[i+2:i+6]); err != nil {
		return nil, 0
	}
	r := rune(u[0])<<8 | rune(u[1])
	if 0xD800 <= r && r < 0xE000 {
		d[0] = 0xF0
		return d[:1], 6
	}
	return d[:utf8.EncodeRune(d[:], r)], 6
}

// jsonEscapeBefore decodes a JSON escape that ends just before b[i].
func jsonEscapeBefore(b []byte, i int, d *scratch) ([]byte, int) {
	if i >= 6 {
		if dec, n := jsonEscapeAt(b, i-6, d); n == 6 {
			return dec, n
		}
	}
	if i >= 2 {
		if dec, n := jsonEscapeAt(b, i-2, d); n == 2 {
			return dec, n
		}
	}
	return nil, 0
}

// percentAt decodes the percent escape at b[i].
func percentAt(b []byte, i int, d *scratch) ([]byte, int) {
	if i+3 > len(b) || b[i] != '%' {
		return nil, 0
	}
	if _, err := hex.Decode(d[:1], b[i+1:i+3]); err != nil {
		return nil, 0
	}
	return d[:1], 3
}

// percentBefore decodes a percent escape that ends just before b[i].
func percentBefore(b []byte, i int, d *scratch) ([]byte, int) {
	if i < 3 {
		return nil, 0
	}
	return percentAt(b, i-3, d)
}

// maxRefLen is the longest HTML character reference looked at, '&' and
// ';' included (the longest named one is 33 bytes).
const maxRefLen = 34

// htmlRefAt decodes the character reference at b[i] as html.UnescapeString
// does: "&#83;", "&#x53;", "&#83" or "&name;". A numeric reference beyond
// ASCII (which HTML remaps in places) stands for the lead byte 0xC2.
func htmlRefAt(b []byte, i int, d *scratch) ([]byte, int) {
	if i+2 >= len(b) || b[i] != '&' {
		return nil, 0
	}
	j := i + 1
	if b[j] == '#' {
		j++
		base, digit := 10, isDigit
		if j < len(b) && (b[j] == 'x' || b[j] == 'X') {
			j, base, digit = j+1, 16, isHexDigit
		}
		start := j
		for j < len(b) && j-i < maxRefLen && digit(b[j]) {
			j++
		}
		code, err := strconv.ParseUint(string(b[start:j]), base, 32)
		if err != nil {
			return nil, 0
		}
		if j < len(b) && b[j] == ';' {
			j++
		}
		if code == 0 || code >= utf8.RuneSelf {
			d[0] = 0xC2
		} else {
			d[0] = byte(code)
		}
		return d[:1], j - i
	}
	for j < len(b) && j-i < maxRefLen && isAlnum(b[j]) {
		j++
	}
	if j >= len(b) || b[j] != ';' {
		// Names without ';' decode only to Latin-1 letters and symbols, or
		// to & < > " which no form holds alone.
		return nil, 0
	}
	j++
	dec := htmlRefLookup(b[i:j])
	if dec == "" {
		return nil, 0
	}
	return d[:copy(d[:], dec)], j - i
}

// htmlRefBefore decodes a character reference that ends just before b[i].
func htmlRefBefore(b []byte, i int, d *scratch) ([]byte, int) {
	if i == 0 || b[i-1] != ';' {
		return nil, 0
	}
	lo := max(0, i-maxRefLen)
	k := bytes.LastIndexByte(b[lo:i-1], '&')
	if k < 0 {
		return nil, 0
	}
	if dec, n := htmlRefAt(b, lo+k, d); lo+k+n == i {
		return dec, n
	}
	return nil, 0
}

// htmlRefLookup returns what the named reference tok ("&name;") decodes to,
// or "" when it is not one. What valid names decode to is cached: pages
// repeat a few (&amp; &lt; &nbsp;), and html.UnescapeString is not free.
// The cache is an immutable map replaced whole on a new name, so a lookup
// is one atomic load; HTML has about 2,200 names, so it stays small.
func htmlRefLookup(tok []byte) string {
	cache := htmlRefs.Load()
	if dec, ok := (*cache)[string(tok)]; ok {
		return dec
	}
	s := string(tok)
	dec := html.UnescapeString(s)
	if dec == s {
		return ""
	}
	htmlRefsMu.Lock()
	defer htmlRefsMu.Unlock()
	old := *htmlRefs.Load()
	next := make(map[string]string, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[s] = dec
	htmlRefs.Store(&next)
	return dec
}

var (
	htmlRefs   atomic.Pointer[map[string]string]
	htmlRefsMu sync.Mutex
)

func init() { htmlRefs.Store(&map[string]string{}) }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHexDigit(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
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

// joinedAt checks the break that holds b[at]: the grams that cross it, in
// a window of the bytes on either side with breaks taken out (and, for hex
// separated by spaces, with a space in its place). Any run of a form that
// crosses the break holds such a gram.
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
	// w bytes a side hold any run of up to maxK bytes across the break.
	var buf [2*maxWindow + 1]byte
	w := min(m.maxK-1, maxWindow)
	n := 0
	for i := start; i > 0 && n < w; {
		if k := breakBefore(b, i); k > 0 {
			i -= k
			continue
		}
		i--
		n++
		buf[w-n] = b[i]
	}
	left := buf[w-n : w]
	var rbuf [maxWindow]byte
	right := rbuf[:0]
	for i := end; i < len(b) && len(right) < w; {
		if k := breakAt(b, i); k > 0 {
			i += k
			continue
		}
		right = append(right, b[i])
		i++
	}
	if direct {
		win := append(buf[w-n:w], right...)
		if m.crossing(win, len(left)) {
			return true
		}
	}
	if spaced {
		win := append(append(buf[w-n:w], ' '), right...)
		return m.crossing(win, len(left)) || m.crossing(win, len(left)+1)
	}
	return false
}

// maxWindow bounds the bytes a side of a break that joinedAt looks at.
const maxWindow = 32

// crossing reports whether a gram of win that holds both win[cut-1] and
// win[cut] starts a long enough run of a form.
func (m *matcher) crossing(win []byte, cut int) bool {
	for p := max(0, cut-m.g+1); p < cut && p+m.g <= len(win); p++ {
		x := load(win, p, m.g)
		if hasBit(m.gbits, m.ghash(x, hashG)) && hasBit(m.gbits, m.ghash(x, hashG2)) && len(m.verify(win, p, nil)) > 0 {
			return true
		}
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
