package scrub

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"html"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

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
