// Package scrubtest measures, for tests, how much of a secret a client could
// read from bytes: literally, or after decoding them the ways clients do
// (JSON strings, percent-encoding, HTML references, base64 and hex with
// line breaks and separators removed, UTF-16). It decodes with the standard
// library only, independently of package scrub, so a test of the scrubber
// does not grade its own homework.
package scrubtest

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf16"
)

// Exposed returns the length of the longest run of secret's bytes that
// appears in data or in any view of data a client can decode, and the name
// of that view.
func Exposed(secret, data []byte) (int, string) {
	best, where := 0, ""
	for _, v := range Views(data) {
		if n := longestCommon([]byte(v.Text), secret); n > best {
			best, where = n, v.Name
		}
	}
	return best, where
}

// View is data as one kind of client would read it.
type View struct {
	Name string
	Text string
}

// Views returns data decoded every way Exposed looks at it.
func Views(data []byte) []View {
	var out []View
	for _, a := range []View{{"raw", string(data)}, {"json", jsonStrings(string(data))}} {
		for _, b := range []View{{"", a.Text}, {"+percent", percentDecode(a.Text)}, {"+html", html.UnescapeString(a.Text)}} {
			for _, c := range []View{{"", b.Text}, {"+base64", base64Decode(b.Text)}, {"+hex", hexDecode(b.Text)}, {"+utf16", utf16Decode(b.Text)}} {
				out = append(out, View{a.Name + b.Name + c.Name, c.Text})
			}
		}
	}
	return out
}

var (
	jsonString = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	percentRun = regexp.MustCompile(`(?:%[0-9A-Fa-f]{2})+`)
	// Line breaks, raw or JSON-escaped, are skipped by base64 and hex
	// decoders reading wrapped text.
	lineBreaks = regexp.MustCompile(`\r|\n|\\r|\\n`)
	base64Run  = regexp.MustCompile(`[A-Za-z0-9+/_-]{4,}=*`)
	hexRun     = regexp.MustCompile(`[0-9A-Fa-f]{2}(?:[:\- ]?[0-9A-Fa-f]{2})+`)
)

// jsonStrings returns the decoded contents of every JSON string literal in
// s, one per line.
func jsonStrings(s string) string {
	var b strings.Builder
	for _, lit := range jsonString.FindAllString(s, -1) {
		var v string
		if json.Unmarshal([]byte(lit), &v) == nil {
			b.WriteString(v)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func percentDecode(s string) string {
	return percentRun.ReplaceAllStringFunc(s, func(run string) string {
		dec, err := url.PathUnescape(run)
		if err != nil {
			return run
		}
		return dec
	})
}

// base64Decode decodes every base64 run of s (line breaks removed) at each
// of the four offsets, in both alphabets, one result per line.
func base64Decode(s string) string {
	var b strings.Builder
	for _, run := range base64Run.FindAllString(lineBreaks.ReplaceAllString(s, ""), -1) {
		run = strings.TrimRight(run, "=")
		for off := 0; off < 4 && off < len(run); off++ {
			r := run[off:]
			r = r[:len(r)/4*4]
			for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
				dec, _ := enc.DecodeString(r)
				b.Write(dec)
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

// hexDecode decodes every run of hex byte pairs of s (line breaks removed,
// one separator allowed between pairs) at both nibble offsets.
func hexDecode(s string) string {
	var b strings.Builder
	for _, run := range hexRun.FindAllString(lineBreaks.ReplaceAllString(s, " "), -1) {
		digits := strings.NewReplacer(":", "", "-", "", " ", "").Replace(run)
		for off := 0; off < 2; off++ {
			r := digits[off:]
			dec, _ := hex.DecodeString(r[:len(r)/2*2])
			b.Write(dec)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// utf16Decode reads s as UTF-16LE and UTF-16BE at both byte offsets.
func utf16Decode(s string) string {
	var b strings.Builder
	for off := 0; off < 2; off++ {
		for _, big := range []bool{false, true} {
			units := make([]uint16, 0, len(s)/2)
			for i := off; i+1 < len(s); i += 2 {
				if big {
					units = append(units, uint16(s[i])<<8|uint16(s[i+1]))
				} else {
					units = append(units, uint16(s[i+1])<<8|uint16(s[i]))
				}
			}
			b.WriteString(string(utf16.Decode(units)))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// longestCommon returns the length of the longest common substring of a
// and b.
func longestCommon(a, b []byte) int {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	best := 0
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			if a[i-1] == b[j-1] {
				cur[j] = prev[j-1] + 1
				best = max(best, cur[j])
			} else {
				cur[j] = 0
			}
		}
		prev, cur = cur, prev
	}
	return best
}
