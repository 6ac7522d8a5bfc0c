package scrub

import (
	"bytes"
	"testing"
)

// FuzzScrub checks that for every form of a secret of four or more bytes,
// and for the shortest part of it that is redacted (at its start and at its
// end), embedded between arbitrary bytes, neither the secret, the form nor
// the part survives Scrub outside a Redacted marker; that Scrub is
// idempotent; and that Contains finds nothing in what Scrub returns.
func FuzzScrub(f *testing.F) {
	f.Add([]byte(token), []byte("Bearer "), []byte("\r\n"))
	f.Add([]byte(`p"<>&\x`), []byte(`{"v":"`), []byte(`"}`))
	f.Add([]byte("D]ab"), []byte("[REDACTE"), []byte("abab"))
	f.Add([]byte("\xff\xfesecret"), []byte("\x80"), []byte("\xc3"))
	f.Add([]byte(issueToken), []byte(`{"a":"\u00`), []byte("%4"))
	f.Fuzz(func(t *testing.T, secret, prefix, suffix []byte) {
		if len(secret) < 4 {
			t.Skip()
		}
		s := New(secret)
		for _, fm := range formsOf(secret) {
			for _, part := range [][]byte{fm.b, fm.b[:partEnd(fm)], fm.b[partStart(fm):]} {
				in := bytes.Join([][]byte{prefix, part, suffix}, nil)
				out, o := s.Scrub(in)
				if o == Withheld {
					if string(out) != Redacted {
						t.Fatalf("Scrub(%q) = %q, withheld; want %q alone", in, out, Redacted)
					}
					continue
				}
				// Clean is right only when every occurrence already sits
				// inside a marker; exposed checks that below.
				if o == Clean && !bytes.Equal(out, in) {
					t.Fatalf("Scrub(%q) = %q, clean; want the input when nothing was replaced", in, out)
				}
				for _, p := range [][]byte{secret, part} {
					if at := exposed(out, p); at >= 0 {
						t.Fatalf("Scrub(%q) = %q: %q survives at %d outside %s", in, out, p, at, Redacted)
					}
				}
				again, o2 := s.Scrub(out)
				if o2 != Clean || !bytes.Equal(again, out) {
					t.Fatalf("Scrub(%q) = %q, %v; want it unchanged (idempotent)", out, again, o2)
				}
				if !s.touchesMarker && s.Contains(out) {
					t.Fatalf("Contains(Scrub(%q) = %q) = true, want false", in, out)
				}
			}
		}
	})
}

// partEnd returns the end of the shortest prefix of f that is redacted.
func partEnd(f form) int {
	j := f.k
	for j < len(f.b) && f.weight(0, j) < f.k {
		j++
	}
	return j
}

// partStart returns the start of the shortest suffix of f that is redacted.
func partStart(f form) int {
	i := len(f.b) - f.k
	for i > 0 && f.weight(i, len(f.b)) < f.k {
		i--
	}
	return i
}

// exposed returns the position of an occurrence of p in b that is not
// wholly inside a run of adjacent Redacted markers, or -1.
func exposed(b, p []byte) int {
	covered := make([]bool, len(b))
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(Redacted))
		if j < 0 {
			break
		}
		for k := i + j; k < i+j+len(Redacted); k++ {
			covered[k] = true
		}
		i += j + len(Redacted)
	}
	for i := 0; i+len(p) <= len(b); i++ {
		if !bytes.Equal(b[i:i+len(p)], p) {
			continue
		}
		inside := true
		for k := i; k < i+len(p); k++ {
			inside = inside && covered[k]
		}
		// A marker run is adjacent markers; an occurrence inside two
		// separate runs would have to cover the bytes between them.
		if !inside {
			return i
		}
	}
	return -1
}
