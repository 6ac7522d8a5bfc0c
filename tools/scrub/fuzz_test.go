package scrub

import (
	"bytes"
	"testing"
)

// FuzzScrub checks that for every form of a secret of four or more bytes,
// embedded between arbitrary bytes, neither the raw secret nor that form
// survives Bytes outside a Redacted marker, and that Bytes is idempotent.
func FuzzScrub(f *testing.F) {
	f.Add([]byte(token), []byte("Bearer "), []byte("\r\n"))
	f.Add([]byte(`p"<>&\x`), []byte(`{"v":"`), []byte(`"}`))
	f.Add([]byte("D]ab"), []byte("[REDACTE"), []byte("abab"))
	f.Add([]byte("\xff\xfesecret"), []byte("\x80"), []byte("\xc3"))
	f.Fuzz(func(t *testing.T, secret, prefix, suffix []byte) {
		if len(secret) < 4 {
			t.Skip()
		}
		s := New(secret)
		for _, form := range forms(secret) {
			in := bytes.Join([][]byte{prefix, form, suffix}, nil)
			// ok may be false only when every occurrence already sits
			// inside a marker; exposed checks that below.
			out, ok := s.Bytes(in)
			if !ok && !bytes.Equal(out, in) {
				t.Fatalf("Bytes(%q) = %q, false; want the input when nothing was replaced", in, out)
			}
			for _, p := range [][]byte{secret, form} {
				if at := exposed(out, p); at >= 0 {
					t.Fatalf("Bytes(%q) = %q: %q survives at %d outside %s", in, out, p, at, Redacted)
				}
			}
			again, changed := s.Bytes(out)
			if changed || !bytes.Equal(again, out) {
				t.Fatalf("Bytes(%q) = %q, %v; want it unchanged (idempotent)", out, again, changed)
			}
		}
	})
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
