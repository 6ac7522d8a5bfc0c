package scrub

import "bytes"

// joined reports whether a form appears in b once line breaks are taken
// out: base64 wrapped at 64 or 76 columns, hex dumps over several lines.
// A break is a run of CR and LF, raw or JSON-escaped (\r, \n). Only windows
// across a break are checked, and only where the bytes on either side can
// be neighbours in a form (directly, or with a space between for hex
// separated by spaces); a form wholly on one line was matched already.
func (m *matcher) joined(b []byte) bool {
	// The next '\n', '\r' and '\\' at or after i, found lazily, so each
	// byte is searched once and each run of breaks is checked once.
	next := [3]int{-1, -1, -1}
	for i := 0; i < len(b); {
		at := len(b)
		for k, c := range []byte{'\n', '\r', '\\'} {
			if next[k] != len(b) && next[k] < i {
				next[k] = len(b)
				if j := bytes.IndexByte(b[i:], c); j >= 0 {
					next[k] = i + j
				}
			}
			at = min(at, next[k])
		}
		if at == len(b) {
			return false
		}
		n := breakAt(b, at)
		if n == 0 { // a backslash that does not escape a line break
			i = at + 1
			continue
		}
		if m.joinedAt(b, at) {
			return true
		}
		for i = at + n; i < len(b) && breakAt(b, i) > 0; {
			i += breakAt(b, i)
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
