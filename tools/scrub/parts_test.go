package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/keyhole-dev/keyhole/tools/scrub/scrubtest"
)

// issueToken is shaped like the 33-character bearer token of the red-team
// finding (issue 14, item 1).
const issueToken = "SKtokA1b2C3d4E5f6G7h8I9j0KlMnOpqR"

// TestScrubPartsOfAForm covers invariant 9 (no part of a secret reaches
// the agent): a run of min(8, half the form) bytes of any form is
// redacted, a shorter one is not, and no decoded view of the output shows
// eight characters of the secret.
func TestScrubPartsOfAForm(t *testing.T) {
	tok := issueToken
	b64 := base64.StdEncoding.EncodeToString([]byte(tok))
	hx := hex.EncodeToString([]byte(tok))
	le := utf16le(tok)
	colon := hexSeparated([]byte(tok), ":")
	tests := []struct {
		name   string
		secret string
		body   string
		want   string // exact output; "" means only the outcome is checked
		out    Outcome
	}{
		{"issue: 32 of 33 at a cut", tok, `{"headers":{"Authorization":"Bearer ` + tok[:32], `{"headers":{"Authorization":"Bearer [REDACTED]`, Replaced},
		{"eight at the end", tok, "Bearer " + tok[:8], "Bearer [REDACTED]", Replaced},
		{"seven at the end", tok, "Bearer " + tok[:7], "Bearer " + tok[:7], Clean},
		{"eight in the middle", tok, "x=" + tok[10:18] + "&y", "x=[REDACTED]&y", Replaced},
		{"seven in the middle", tok, "x=" + tok[10:17] + "&y", "x=" + tok[10:17] + "&y", Clean},
		{"suffix of eight", tok, tok[25:] + " tail", "[REDACTED] tail", Replaced},
		{"two parts", tok, tok[:9] + " and " + tok[20:29], "[REDACTED] and [REDACTED]", Replaced},
		{"whole then part", tok, tok + tok[:12], "[REDACTED]", Replaced},
		{"base64 cut after nine", tok, "Basic " + b64[:9], "Basic [REDACTED]", Replaced},
		{"base64 cut after seven", tok, "Basic " + b64[:7], "Basic " + b64[:7], Clean},
		{"hex eight digits", tok, "id=" + hx[6:14], "id=[REDACTED]", Replaced},
		{"hex seven digits", tok, "id=" + hx[6:13], "id=" + hx[6:13], Clean},
		{"hex upper part", tok, strings.ToUpper(hx[:20]), "[REDACTED]", Replaced},
		{"hex with colons, four bytes", tok, "fp " + colon[:11], "fp [REDACTED]", Replaced},
		{"hex with colons, three bytes", tok, "fp " + colon[:8], "fp " + colon[:8], Clean},
		{"hex with colons, seven digits from a separator", tok, "fp " + colon[2:13], "fp " + colon[2:13], Clean},
		{"hex with colons, eight digits from mid-byte", tok, "fp " + colon[1:13], "fp [REDACTED]", Replaced},
		{"utf16 eight characters", tok, "\xff\xfe" + le[:16], "\xff\xfe[REDACTED]", Replaced},
		{"utf16 seven characters", tok, "\xff\xfe" + le[:14], "\xff\xfe" + le[:14], Clean},
		{"json escapes, two characters", tok, `"\u0053\u004b"`, `"\u0053\u004b"`, Clean},
		{"json escapes, seven characters", tok, `"` + escapeEvery(tok[:7], 1, `\u%04x`) + `"`, "", Clean},
		{"json escapes, eight characters", tok, `"` + escapeEvery(tok[:8], 1, `\u%04x`) + `"`, `"[REDACTED]"`, Replaced},
		{"percent escapes, seven bytes", tok, "q=" + everyBytePercent([]byte(tok[3:10])), "", Clean},
		{"percent escapes, eight bytes", tok, "q=" + everyBytePercent([]byte(tok[3:11])), "q=[REDACTED]", Replaced},
		{"short secret half", "hunter2abc", "pw " + "hunter", "pw [REDACTED]", Replaced},
		{"short secret under half", "hunter2abc", "pw hunt", "pw hunt", Clean},
		{"non-ASCII secret cut inside a character", "päss😀wörd-1234", "x päss😀w", "x [REDACTED]", Replaced},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New([]byte(tc.secret))
			got, o := s.Scrub([]byte(tc.body))
			if o != tc.out || tc.want != "" && string(got) != tc.want {
				t.Fatalf("Scrub(%q) = %q, %v; want %q, %v", tc.body, got, o, tc.want, tc.out)
			}
			if utf8.ValidString(tc.body) && !utf8.Valid(got) {
				t.Fatalf("Scrub(%q) = %q: valid UTF-8 became invalid", tc.body, got)
			}
			k := min(8, (len(tc.secret)+1)/2)
			if n, view := scrubtest.Exposed([]byte(tc.secret), got); n >= k {
				t.Fatalf("Scrub(%q) = %q exposes %d bytes of the secret in view %s", tc.body, got, n, view)
			}
		})
	}
}

// TestScrubEncodedForms covers invariant 9 for forms a client decodes
// (issue 14, item 2): each body is scrubbed in place when the form is
// literal, withheld when only a decoded view shows it, and no view of the
// output shows eight characters of the secret.
func TestScrubEncodedForms(t *testing.T) {
	tok := issueToken
	b64 := base64.StdEncoding.EncodeToString([]byte("me:" + tok + ":and some more bytes to wrap"))
	hx := hex.EncodeToString([]byte(tok))
	tests := []struct {
		name string
		body string
		out  Outcome
	}{
		// JSON strings with some characters \u-escaped: the literal runs
		// between escapes are redacted where they are long enough, and the
		// body is withheld where none is.
		{"json first char escaped", `{"t":"\u0053` + tok[1:] + `"}`, Replaced},
		{"json every other char escaped", `{"t":"` + escapeEvery(tok, 2, `\u%04x`) + `"}`, Withheld},
		{"json every third char escaped", `{"t":"` + escapeEvery(tok, 3, `\u%04x`) + `"}`, Withheld},
		{"json every other char mixed-case hex", `{"t":"` + escapeEvery(tok, 2, `\u%04X`) + `"}`, Withheld},
		{"json every char escaped mixed case", `{"t":"` + mixCase(escapeEvery(tok, 1, `\u%04x`)) + `"}`, Replaced},
		{"json one char escaped mid-token", `["` + tok[:12] + `\u00` + hex.EncodeToString([]byte{tok[12]}) + tok[13:] + `"]`, Replaced},
		{"json escaped slash inside base64", `{"b":"` + strings.ReplaceAll(base64.StdEncoding.EncodeToString([]byte("??>"+tok)), "/", `\/`) + `"}`, Replaced},
		{"json escaped utf16", `{"t":"` + escapeEvery(utf16le(tok), 1, `\u%04x`) + `"}`, Withheld},
		// Percent-encoding.
		{"percent one byte", "/x/%53" + tok[1:], Replaced},
		{"percent one byte lower case", "/x/" + tok[:5] + "%6" + hex.EncodeToString([]byte{tok[5]})[1:] + tok[6:], Replaced},
		{"percent every byte mixed case", "q=" + mixCase(everyBytePercent([]byte(tok))), Replaced},
		{"percent every other byte", "q=" + escapeEvery(tok, 2, "%%%02X"), Withheld},
		{"percent every third byte lower case", "q=" + escapeEvery(tok, 3, "%%%02x"), Withheld},
		// base64 wrapped by MIME and PEM writers.
		{"base64 wrapped at 76 LF", wrap(b64, 76, "\n"), Replaced},
		{"base64 wrapped at 76 CRLF", wrap(b64, 76, "\r\n"), Replaced},
		{"base64 wrapped at 64 LF", wrap(b64, 64, "\n"), Replaced},
		{"base64 wrapped at 4", wrap(b64, 4, "\n"), Withheld},
		{"base64 wrapped at 6 CRLF", wrap(b64, 6, "\r\n"), Withheld},
		{"base64 wrapped in a JSON string", `{"pem":"` + wrap(b64, 5, `\n`) + `"}`, Withheld},
		// Hex with separators and in mixed case.
		{"hex colons", "fp " + hexSeparated([]byte(tok), ":"), Replaced},
		{"hex colons upper", "fp " + strings.ToUpper(hexSeparated([]byte(tok), ":")), Replaced},
		{"hex spaces mixed case", mixCase(hexSeparated([]byte(tok), " ")), Replaced},
		{"hex dashes", hexSeparated([]byte(tok), "-"), Replaced},
		{"hex mixed case", mixCase(hx), Replaced},
		{"hex dump over lines", wrap(hexSeparated([]byte(tok), " "), 12, "\n"), Replaced},
		// HTML character references.
		{"html decimal", "<p>&#83;" + tok[1:] + "</p>", Replaced},
		{"html hex reference", "<p>" + tok[:9] + "&#x" + hex.EncodeToString([]byte{tok[9]}) + ";" + tok[10:] + "</p>", Replaced},
		{"html every char", "<p>" + escapeEvery(tok, 1, "&#%d;") + "</p>", Withheld},
		{"html every other char hex", "<p>" + escapeEvery(tok, 2, "&#x%X;") + "</p>", Withheld},
		{"html named reference", "<p>ghp&lowbar;" + tok + "</p>", Replaced},
		{"html named reference joins a part", "<p>" + "abc&lowbar;" + "</p>", Clean},
		// UTF-16 text.
		{"utf16le", "\xff\xfe" + utf16le("token: "+tok), Replaced},
		{"utf16be", "\xfe\xff" + utf16be("token: "+tok), Replaced},
		// Views of views.
		{"percent escapes inside json escapes", `{"q":"` + escapeEvery(tok, 2, `\u0025%02x`) + `"}`, Withheld},
		{"percent inside json escape", `{"q":"\u0025` + hex.EncodeToString([]byte{tok[0]}) + tok[1:] + `"}`, Replaced},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New([]byte(tok), []byte("me:"+tok))
			got, o := s.Scrub([]byte(tc.body))
			if o != tc.out {
				t.Fatalf("Scrub(%q) = %q, %v; want %v", tc.body, got, o, tc.out)
			}
			if o == Withheld && string(got) != Redacted {
				t.Fatalf("Scrub(%q) = %q, withheld; want %q alone", tc.body, got, Redacted)
			}
			if n, view := scrubtest.Exposed([]byte(tok), got); n >= 8 {
				t.Fatalf("Scrub(%q) = %q exposes %d bytes of the secret in view %s", tc.body, got, n, view)
			}
			if o != Clean && !s.Contains([]byte(tc.body)) {
				t.Fatalf("Contains(%q) = false, want true", tc.body)
			}
			if o == Replaced && s.Contains(got) {
				t.Fatalf("Contains(Scrub(%q)) = true: the output still holds a part", tc.body)
			}
		})
	}
}

// TestContains covers invariant 9's oracle: what an agent sends is checked
// for every form and every long part of one, literal or encoded, and
// ordinary arguments pass.
func TestContains(t *testing.T) {
	tok := issueToken
	tests := []struct {
		name string
		args string
		want bool
	}{
		{"whole token", `{"q":"` + tok + `"}`, true},
		{"guess of eight", `{"q":"` + tok[:8] + `"}`, true},
		{"guess of eight in the middle", `{"path":"/x/` + tok[3:11] + `"}`, true},
		{"seven known plus a wrong guess", `{"q":"` + tok[:7] + `Z"}`, false},
		{"seven known plus the right guess", `{"q":"` + tok[1:8] + string(tok[8]) + `"}`, true},
		{"json escaped guess", `{"q":"\u0053` + tok[1:9] + `"}`, true},
		{"percent escaped guess", `{"path":"/%53` + tok[1:9] + `"}`, true},
		{"base64 of the token", `{"body":"` + base64.StdEncoding.EncodeToString([]byte(tok)) + `"}`, true},
		{"base64 part", `{"body":"` + base64.StdEncoding.EncodeToString([]byte(tok))[4:14] + `"}`, true},
		{"hex of a part", `{"q":"` + hex.EncodeToString([]byte(tok[5:10])) + `"}`, true},
		{"html reference", `{"body":"&#83;` + tok[1:9] + `"}`, true},
		{"ordinary arguments", `{"method":"GET","path":"/repos/acme/api/issues","query":{"state":"open","per_page":"100"}}`, false},
		{"seven characters", `{"q":"` + tok[:7] + `"}`, false},
		{"markdown body", `{"body":"Fixed in 4f2a9c1.\n\nSee https://example.com/a%20b?x=1&amp;y=2 \u00e9t\u00e9"}`, false},
	}
	s := New([]byte(tok))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.Contains([]byte(tc.args)); got != tc.want {
				t.Fatalf("Contains(%q) = %v, want %v", tc.args, got, tc.want)
			}
		})
	}
}

// TestCapped covers the cut of issue 14, item 1: whichever byte of an
// echoed Authorization header the cut at max falls on, nothing of the
// token is left before it, and the result is never longer than max.
func TestCapped(t *testing.T) {
	tok := issueToken
	s := New([]byte(tok))
	const max = 80
	for pad := 0; pad < max; pad++ {
		body := []byte(`{"args":{"pad":"` + strings.Repeat("a", pad) + `"},"headers":{"Authorization":"Bearer ` + tok + `","Accept":"*/*"}}`)
		for _, more := range []bool{false, true} {
			read := body
			if more {
				// The reader stopped at max+Margin(); the body went on.
				read = body[:min(len(body), max+s.Margin())]
			}
			got, cut, o := s.Capped(read, max, more)
			if len(got) > max {
				t.Fatalf("Capped(pad %d, more %v) = %d bytes, want at most %d", pad, more, len(got), max)
			}
			if wantCut := more || len(body)-len(tok)+len(Redacted) > max; cut != wantCut {
				t.Fatalf("Capped(pad %d, more %v) cut = %v, want %v", pad, more, cut, wantCut)
			}
			if n, view := scrubtest.Exposed([]byte(tok), got); n > 3 {
				t.Fatalf("Capped(pad %d, more %v) = %q (%v) exposes %d bytes of the token in view %s", pad, more, got, o, n, view)
			}
			if !bytes.HasPrefix(body, got) && !bytes.Contains(got, []byte(Redacted)) {
				t.Fatalf("Capped(pad %d, more %v) = %q, neither a prefix of the body nor redacted", pad, more, got)
			}
		}
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"abcdef", 3, "abc"},
		{"abc", 10, "abc"},
		{"ab[REDACTED]cd", 5, "ab"},
		{"ab[REDACTED]cd", 12, "ab[REDACTED]"},
		{"ab[REDACTED]cd", 11, "ab"},
		{"ab[REDACTED][REDACTED]", 15, "ab[REDACTED]"},
		{"aé", 2, "a"},
		{"a😀", 4, "a"},
		{"a😀b", 5, "a😀"},
		{"\xff\xfe\xfd", 2, "\xff\xfe"},
		{"abc", -1, ""},
	}
	for _, tc := range tests {
		if got := string(Cut([]byte(tc.in), tc.n)); got != tc.want {
			t.Fatalf("Cut(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// escapeEvery writes every n-th character of s (starting with the first)
// with format (given the character's code) and the rest as they are.
func escapeEvery(s string, n int, format string) string {
	var b strings.Builder
	for i, r := range []rune(s) {
		if i%n == 0 {
			fmt.Fprintf(&b, format, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mixCase upper-cases every other letter of s.
func mixCase(s string) string {
	b := []byte(s)
	for i := range b {
		if i%2 == 1 {
			b[i] = upperASCII(b[i])
		}
	}
	return string(b)
}

// wrap breaks s into lines of width characters.
func wrap(s string, width int, eol string) string {
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width] + eol)
		s = s[width:]
	}
	b.WriteString(s)
	return b.String()
}

func utf16le(s string) string {
	var out []byte
	for _, u := range utf16.Encode([]rune(s)) {
		out = binary.LittleEndian.AppendUint16(out, u)
	}
	return string(out)
}

func utf16be(s string) string {
	var out []byte
	for _, u := range utf16.Encode([]rune(s)) {
		out = binary.BigEndian.AppendUint16(out, u)
	}
	return string(out)
}

// TestScrubHostileShapes scrubs bodies made of one escape or break over and
// over (and a low-entropy secret over its own repetition): each is a few
// passes over the body, so a scrubber that walked a run once per byte of
// it would not finish here.
func TestScrubHostileShapes(t *testing.T) {
	tok := issueToken
	const n = 1 << 18
	tests := map[string]struct {
		secret, body string
		out          Outcome
	}{
		"newlines":           {tok, strings.Repeat("\n", n), Clean},
		"CRLFs":              {tok, strings.Repeat("\r\n", n/2), Clean},
		"escaped newlines":   {tok, strings.Repeat(`\n`, n/2), Clean},
		"backslashes":        {tok, strings.Repeat(`\`, n), Clean},
		"percent escapes":    {tok, strings.Repeat("%53", n/3), Clean},
		"json escapes":       {tok, strings.Repeat(`\u0053`, n/6), Clean},
		"html references":    {tok, strings.Repeat("&#83;", n/5), Clean},
		"base64 split by LF": {tok, strings.Repeat("U0t0\n", n/5), Clean},
		"secret repeated":    {tok, strings.Repeat(tok, n/len(tok)), Replaced},
		"low-entropy secret": {"aaaaaaaaaaaaaaaa", strings.Repeat("a", n/16), Replaced},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, o := New([]byte(tc.secret)).Scrub([]byte(tc.body))
			if o != tc.out {
				t.Fatalf("Scrub(%d bytes of %.12q) = %v, want %v", len(tc.body), tc.body, o, tc.out)
			}
			if o == Replaced && string(got) != Redacted {
				t.Fatalf("Scrub(%d bytes of %.12q) = %.40q, want one %s", len(tc.body), tc.body, got, Redacted)
			}
		})
	}
}
