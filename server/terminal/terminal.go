// Package terminal makes text that someone else chose safe to print on an
// operator's terminal. An agent chooses tool names, paths, query names,
// reasons and client names, and those reach the tables `keyhole audit
// tail` and `keyhole session list` print: a newline there forges a row,
// an ANSI escape (`\x1b[2K`, `\x1b[8m`) erases or hides the rows around
// it, and a bidi override reorders what a person reads. Tables print every
// such field through Escape; JSON output keeps the exact text.
package terminal

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with everything that is not a printable character
// written as a visible Go-style escape: control characters (`\n`, `\r`,
// `\t`, `\x1b`, `\x7f`, C1 controls as `\u0085`), invisible format
// characters such as bidi overrides and isolates (`\u202e`, `\u2066`),
// zero-width characters, line and paragraph separators and spaces other
// than U+0020; invalid UTF-8 bytes become `\xNN`, and a backslash becomes
// `\\`, so an escape the agent typed cannot pass for one Escape wrote.
// Text that needs none of this is returned as it is, without allocating.
func Escape(s string) string {
	i := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || c == '\\' {
				break
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(hex2(s[i]))
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\x`)
			b.WriteString(hex2(byte(r)))
		case r < utf8.RuneSelf || unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		case r <= 0xffff:
			b.WriteString(`\u`)
			b.WriteString(pad(strconv.FormatInt(int64(r), 16), 4))
		default:
			b.WriteString(`\U`)
			b.WriteString(pad(strconv.FormatInt(int64(r), 16), 8))
		}
		i += size
	}
	return b.String()
}

// EscapeAll escapes each string of ss (a list of query names, say) and
// joins them with sep.
func EscapeAll(ss []string, sep string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Escape(s)
	}
	return strings.Join(out, sep)
}

// EscapeShort is Escape cut to at most n characters of output, a cut
// text ending in "…". It cuts between escapes, never inside one, so what
// is left of a cut escape cannot read as another character. n <= 0 does
// not cut.
func EscapeShort(s string, n int) string {
	e := Escape(s)
	if n <= 0 || utf8.RuneCountInString(e) <= n {
		return e
	}
	var b strings.Builder
	width := 0
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		piece := Escape(s[i : i+size])
		i += size
		w := utf8.RuneCountInString(piece)
		if width+w > n-1 {
			break
		}
		b.WriteString(piece)
		width += w
	}
	return b.String() + "…"
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}

func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat("0", n-len(s)) + s
}
