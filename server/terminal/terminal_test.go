package terminal

import (
	"strings"
	"testing"
)

func TestEscape_OperatorsTerminal(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"plain":            {"/repos/acme/api/issues/7", "/repos/acme/api/issues/7"},
		"unicode letters":  {"/wiki/Zürich/東京", "/wiki/Zürich/東京"},
		"newline":          {"a\nb", `a\nb`},
		"carriage return":  {"a\rb", `a\rb`},
		"tab":              {"a\tb", `a\tb`},
		"escape erase":     {"x\x1b[2Ky", `x\x1b[2Ky`},
		"escape hide":      {"x\x1b[8m", `x\x1b[8m`},
		"nul and del":      {"\x00\x7f", `\x00\x7f`},
		"c1 control":       {"a\u0085b\u009bc", `a\u0085b\u009bc`},
		"bidi override":    {"abc\u202edcba", `abc\u202edcba`},
		"bidi isolate":     {"\u2066x\u2069", `\u2066x\u2069`},
		"zero width":       {"a\u200bb\ufeff", `a\u200bb\ufeff`},
		"line separator":   {"a\u2028b", `a\u2028b`},
		"nbsp":             {"a\u00a0b", `a\u00a0b`},
		"backslash":        {`a\nb`, `a\\nb`},
		"invalid utf-8":    {"a\xffb\xc3", `a\xffb\xc3`},
		"astral format":    {"a\U000e0001b", `a\U000e0001b`},
		"space stays":      {"a b", "a b"},
		"emoji stays":      {"ok 👍", "ok 👍"},
		"forged audit row": {"nope\n9999  14:00:00.000  ses_forged  echo  GET  /b/harmless  allow  200  1ms\x1b[8m", `nope\n9999  14:00:00.000  ses_forged  echo  GET  /b/harmless  allow  200  1ms\x1b[8m`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := Escape(tt.in)
			if got != tt.want {
				t.Fatalf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
			for _, r := range got {
				if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) {
					t.Fatalf("Escape(%q) = %q still holds %U", tt.in, got, r)
				}
			}
		})
	}
}

func TestEscapeShort_CutsBetweenEscapes(t *testing.T) {
	tests := map[string]struct {
		in   string
		n    int
		want string
	}{
		"short enough":      {"abc", 5, "abc"},
		"exactly":           {"abcde", 5, "abcde"},
		"cut":               {"abcdefgh", 5, "abcd…"},
		"no cut at zero":    {"abcdefgh", 0, "abcdefgh"},
		"escape not split":  {"abc\x1bdef", 6, "abc…"},
		"escape kept whole": {"a\x1bdefgh", 7, `a\x1bd…`},
		"unicode counted":   {"ééééééé", 4, "ééé…"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got := EscapeShort(tt.in, tt.n)
			if got != tt.want {
				t.Fatalf("EscapeShort(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}

func TestEscapeAll(t *testing.T) {
	if got := EscapeAll([]string{"a", "b\nc"}, ","); got != `a,b\nc` {
		t.Fatalf("EscapeAll = %q", got)
	}
	if got := EscapeAll(nil, ","); got != "" {
		t.Fatalf("EscapeAll(nil) = %q", got)
	}
}

func BenchmarkEscapeClean(b *testing.B) {
	s := strings.Repeat("/repos/acme/api/issues/", 4)
	b.ReportAllocs()
	for b.Loop() {
		Escape(s)
	}
}
