package scrub

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// matcher finds every run of at least form.k bytes of any form in a body.
//
// Every such run holds a gram: g bytes of its form (g is at most 8 and at
// most every form's k). Every gram in turn holds a q-byte piece (q is 4, or
// g when g is smaller) that starts at a multiple of step = g-q+1 in the
// body. So the scan reads a q-byte piece at every step-th position only,
// and tests it against a bitmap of all q-grams of all forms; on a hit it
// tests the g-grams around it against a second bitmap, and only then looks
// the gram up in the forms and extends the match both ways as far as the
// form goes. Both bitmaps hold grams with bit 0x20 of every byte set, so one
// test serves exact and case-folded forms alike (a superset; the lookup is
// exact).
type matcher struct {
	forms []form
	g, q  int
	step  int
	// qbits and gbits are the bitmaps, indexed by the top qlog/glog bits
	// of a multiplicative hash of the folded gram.
	qbits, gbits []uint64
	qlog, glog   int
	// pairs has bit a<<8|b set for every two adjacent bytes a, b of a form
	// matched exactly; foldPairs the same, lower-cased, for case-folded
	// forms.
	pairs, foldPairs [1 << 16 / 64]uint64
	// interesting marks every byte that occurs in some form (both cases
	// for case-folded forms); an escape that decodes to none of them
	// cannot complete a form.
	interesting [256]bool
	// maxK is the largest k; maxLen the longest form.
	maxK, maxLen int
	hasFold      bool
}

const (
	foldBits = 0x2020202020202020
	hashQ    = 0x9E3779B1
	hashG    = 0x9E3779B97F4A7C15
	hashG2   = 0xC2B2AE3D27D4EB4F
)

func newMatcher(fs []form) *matcher {
	m := &matcher{forms: fs, g: maxPart}
	grams := 0
	for _, f := range fs {
		m.g = min(m.g, f.k)
		m.maxK = max(m.maxK, f.k)
		m.maxLen = max(m.maxLen, len(f.b))
		m.hasFold = m.hasFold || f.fold
		grams += len(f.b)
		for i, c := range f.b {
			m.interesting[c] = true
			if f.fold {
				m.interesting[upperASCII(c)] = true
			}
			if i > 0 {
				m.setPair(f.b[i-1], c, f.fold)
			}
		}
	}
	if len(fs) == 0 {
		return m
	}
	m.q = min(4, m.g)
	m.step = m.g - m.q + 1
	m.qlog = bitmapLog(grams)
	m.glog = m.qlog + 1
	m.qbits = make([]uint64, 1<<m.qlog/64)
	m.gbits = make([]uint64, 1<<m.glog/64)
	for _, f := range fs {
		for i := 0; i+m.q <= len(f.b); i++ {
			setBit(m.qbits, m.qhash(load(f.b, i, m.q)))
		}
		for i := 0; i+m.g <= len(f.b); i++ {
			x := load(f.b, i, m.g)
			setBit(m.gbits, m.ghash(x, hashG))
			setBit(m.gbits, m.ghash(x, hashG2))
		}
	}
	return m
}

// bitmapLog sizes a bitmap at about 16 bits per gram, between 4 KiB and
// 512 KiB (the g-gram filter takes twice that).
func bitmapLog(grams int) int {
	return min(max(bits.Len(uint(grams*16)), 15), 22)
}

func (m *matcher) setPair(a, b byte, fold bool) {
	if fold {
		h := uint16(lowerASCII(a))<<8 | uint16(lowerASCII(b))
		m.foldPairs[h>>6] |= 1 << (h & 63)
		return
	}
	h := uint16(a)<<8 | uint16(b)
	m.pairs[h>>6] |= 1 << (h & 63)
}

// pair reports whether a then b may occur in some form.
func (m *matcher) pair(a, b byte) bool {
	h := uint16(a)<<8 | uint16(b)
	if m.pairs[h>>6]&(1<<(h&63)) != 0 {
		return true
	}
	h = uint16(lowerASCII(a))<<8 | uint16(lowerASCII(b))
	return m.foldPairs[h>>6]&(1<<(h&63)) != 0
}

func (m *matcher) qhash(x uint64) uint32 {
	x |= foldBits & mask(m.q)
	return uint32(x) * hashQ >> (32 - m.qlog)
}

// ghash is one of the two hashes (by mul) of the g-gram bitmap, a Bloom
// filter: a gram passes when both bits are set.
func (m *matcher) ghash(x, mul uint64) uint32 {
	x |= foldBits & mask(m.g)
	return uint32(x * mul >> (64 - m.glog))
}

func setBit(bm []uint64, h uint32) { bm[h>>6] |= 1 << (h & 63) }

func hasBit(bm []uint64, h uint32) bool { return bm[h>>6]&(1<<(h&63)) != 0 }

// mask keeps the low n bytes of a uint64.
func mask(n int) uint64 {
	if n >= 8 {
		return ^uint64(0)
	}
	return 1<<(8*n) - 1
}

// load returns b[p:p+n] (n <= 8, p+n <= len(b)) as a little-endian integer.
func load(b []byte, p, n int) uint64 {
	if p+8 <= len(b) {
		return binary.LittleEndian.Uint64(b[p:]) & mask(n)
	}
	var x uint64
	for i := n - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[p+i])
	}
	return x
}

// find appends to dst the range of every maximal run of at least form.k
// bytes of a form in b (runs of different forms or alignments may overlap),
// in no particular order. With first, it returns as soon as it has one.
func (m *matcher) find(b []byte, dst []span, first bool) []span {
	n := len(b)
	if len(m.forms) == 0 || n < m.g {
		return dst
	}
	var last span // the latest run found, whose grams need no second look
	qbits, shift, step := m.qbits, uint(32-m.qlog), m.step
	for c := 0; c+m.q <= n; c += step {
		if m.q == 4 && c+4 <= n {
			// The common case, kept small so it stays fast.
			h := (binary.LittleEndian.Uint32(b[c:]) | foldBits&0xFFFFFFFF) * hashQ >> shift
			if qbits[h>>6]&(1<<(h&63)) == 0 {
				continue
			}
		} else if !hasBit(qbits, m.qhash(load(b, c, m.q))) {
			continue
		}
		for o := 0; o <= m.g-m.q; o++ {
			p := c - o
			if p < 0 || p+m.g > n || last.start <= p && p+m.g <= last.end {
				continue
			}
			if x := load(b, p, m.g); !hasBit(m.gbits, m.ghash(x, hashG)) || !hasBit(m.gbits, m.ghash(x, hashG2)) {
				continue
			}
			before := len(dst)
			dst = m.verify(b, p, dst)
			for _, sp := range dst[before:] {
				if sp.end > last.end {
					last = sp
				}
			}
			if first && len(dst) > 0 {
				return dst
			}
		}
	}
	return dst
}

// verify looks up the gram at b[p:p+g] in every form and appends the runs
// it extends to that are long enough.
func (m *matcher) verify(b []byte, p int, dst []span) []span {
	gram := b[p : p+m.g]
	var lower [maxPart]byte
	if m.hasFold {
		for i, c := range gram {
			lower[i] = lowerASCII(c)
		}
	}
	for fi := range m.forms {
		f := &m.forms[fi]
		key := gram
		if f.fold {
			key = lower[:m.g]
		}
		for off := 0; off+m.g <= len(f.b); {
			i := bytes.Index(f.b[off:], key)
			if i < 0 {
				break
			}
			off += i
			if s, e := extend(b, f, p-off, p, p+m.g); f.weight(s-(p-off), e-(p-off)) >= f.k {
				dst = append(dst, span{s, e})
			}
			off++
		}
	}
	return dst
}

// extend grows the match b[s:e] of form f placed at body offset d as far as
// b and f agree.
func extend(b []byte, f *form, d, s, e int) (int, int) {
	for s > 0 && s-1 >= d && same(b[s-1], f.b[s-1-d], f.fold) {
		s--
	}
	for e < len(b) && e-d < len(f.b) && same(b[e], f.b[e-d], f.fold) {
		e++
	}
	return s, e
}

func same(c, want byte, fold bool) bool {
	if fold {
		c = lowerASCII(c)
	}
	return c == want
}

func upperASCII(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}
