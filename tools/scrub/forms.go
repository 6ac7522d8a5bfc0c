package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// minDerived is the shortest derived (encoded) form worth matching; shorter
// ones would redact ordinary text. The raw secret is always matched.
const minDerived = 4

// forms returns every form of secret that a Scrubber matches: the raw value
// first, then each distinct derived encoding of at least four bytes. It
// returns nil for an empty secret. Tests and callers use it to see exactly
// what is covered.
func forms(secret []byte) [][]byte {
	if len(secret) == 0 {
		return nil
	}
	seen := map[string]bool{string(secret): true}
	out := [][]byte{bytes.Clone(secret)}
	add := func(form string) {
		if len(form) < minDerived || seen[form] {
			return
		}
		seen[form] = true
		out = append(out, []byte(form))
	}
	for _, f := range base64Forms(secret) {
		add(f)
	}
	add(hex.EncodeToString(secret))
	add(strings.ToUpper(hex.EncodeToString(secret)))
	for _, f := range percentForms(secret) {
		add(f)
		add(lowerPercent(f))
	}
	for _, f := range jsonForms(secret) {
		add(f)
	}
	return out
}

// base64Forms returns the base64 forms of s in the standard and URL
// alphabets at the three alignments s can have inside a larger base64
// stream. For alignment k the secret is encoded behind k filler bytes and
// only characters fully determined by s are kept (the GitHub Actions masking
// technique); the forms s takes at the end of a stream (with the final,
// partly zero-filled character, padded and unpadded) are kept too.
func base64Forms(s []byte) []string {
	var out []string
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k := 0; k < 3; k++ {
			buf := make([]byte, k+len(s))
			copy(buf[k:], s)
			padded := enc.EncodeToString(buf)
			first := (8*k + 5) / 6      // first character with no filler bits
			end := 8 * (k + len(s)) / 6 // characters fully determined by the input
			if end > first {
				out = append(out, padded[first:end])
			}
			out = append(out, strings.TrimRight(padded, "=")[first:], padded[first:])
		}
	}
	return out
}

// percentForms returns s URL-encoded as url.QueryEscape and url.PathEscape
// do, and with every byte percent-encoded; all with upper-case hex.
func percentForms(s []byte) []string {
	var all strings.Builder
	for _, c := range s {
		all.WriteByte('%')
		all.WriteString(strings.ToUpper(hex.EncodeToString([]byte{c})))
	}
	return []string{url.QueryEscape(string(s)), url.PathEscape(string(s)), all.String()}
}

// lowerPercent returns s with the two hex digits after every '%' in lower case.
func lowerPercent(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lowerHex(b[i+1]), lowerHex(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lowerHex(c byte) byte {
	if 'A' <= c && c <= 'F' {
		return c + ('a' - 'A')
	}
	return c
}

// jsonForms returns s as it appears inside a JSON string (without quotes):
// encoding/json's form (which escapes <, > and &), the form of encoders that
// do not escape HTML, that form with "/" escaped as "\/", the control
// bytes and "\<>& (and also /') written as \u00xx (lower and upper hex),
// and, for valid UTF-8, every character \u-escaped.
func jsonForms(s []byte) []string {
	var out []string
	if m, err := json.Marshal(string(s)); err == nil {
		out = append(out, string(m[1:len(m)-1]))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(string(s)); err == nil {
		plain := strings.TrimSuffix(buf.String(), "\n")
		plain = plain[1 : len(plain)-1]
		out = append(out, plain, strings.ReplaceAll(plain, "/", `\/`))
	}
	// Encoders differ on whether "/" and "'" are escaped too.
	for _, escaped := range []string{`"\<>&`, `"\<>&/'`} {
		var lower, upper strings.Builder
		for _, c := range s {
			if c < 0x20 || strings.IndexByte(escaped, c) >= 0 {
				lower.WriteString(`\u00` + hex.EncodeToString([]byte{c}))
				upper.WriteString(`\u00` + strings.ToUpper(hex.EncodeToString([]byte{c})))
				continue
			}
			lower.WriteByte(c)
			upper.WriteByte(c)
		}
		out = append(out, lower.String(), upper.String())
	}
	if utf8.Valid(s) {
		var lower, upper strings.Builder
		for _, r := range string(s) {
			units := []uint16{uint16(r)}
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				units = []uint16{uint16(r1), uint16(r2)}
			}
			for _, u := range units {
				h := hex.EncodeToString([]byte{byte(u >> 8), byte(u)})
				lower.WriteString(`\u` + h)
				upper.WriteString(`\u` + strings.ToUpper(h))
			}
		}
		out = append(out, lower.String(), upper.String())
	}
	return out
}
