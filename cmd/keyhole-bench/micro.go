package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// micro is one line of `go test -bench -benchmem` output.
type micro struct {
	// Name is the package (relative to the module) and the benchmark
	// without "Benchmark" and the GOMAXPROCS suffix: "policy Decide/100/allowed".
	Name string
	// Values maps a unit ("ns/op", "B/op", "allocs/op", "MB/s", or a
	// custom metric such as "records/s") to its value.
	Values map[string]float64
	// Units are the units in the order go test printed them.
	Units []string
}

const modulePath = "github.com/keyhole-dev/keyhole"

// parseMicro reads go test -bench output and returns its benchmark lines
// in order. Lines that are not results (pkg:, goos:, PASS, ok) are skipped.
func parseMicro(r io.Reader) ([]micro, error) {
	var out []micro
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(p), modulePath), "/")
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		m := micro{Name: strings.TrimPrefix(stripProcs(f[0]), "Benchmark"), Values: map[string]float64{}}
		if pkg != "" {
			m.Name = pkg + " " + m.Name
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("micro: %q: value %q: %w", line, f[i], err)
			}
			m.Values[f[i+1]] = v
			m.Units = append(m.Units, f[i+1])
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("micro: %w", err)
	}
	return out, nil
}

// stripProcs removes the "-N" GOMAXPROCS suffix go test adds to a name.
func stripProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

// result formats m's values: "412 ns/op · 0 B/op · 0 allocs/op · 9.9 MB/s".
func (m micro) result() string {
	parts := make([]string, 0, len(m.Units))
	for _, u := range m.Units {
		parts = append(parts, num(m.Values[u])+" "+u)
	}
	return strings.Join(parts, " · ")
}

// target returns the target for m and whether m meets it; "" when
// no target applies.
func (m micro) target() (string, bool) {
	switch {
	case strings.HasPrefix(m.Name, "policy Decide/100/"):
		return "≤ 1 µs and 0 allocs/op", m.Values["ns/op"] <= 1000 && m.Values["allocs/op"] == 0
	case strings.HasPrefix(m.Name, "tools/scrub Scrub/") && strings.HasSuffix(m.Name, "/1secrets"):
		return "≥ 300 MB/s per core", m.Values["MB/s"] >= 300
	}
	return "", false
}

// num formats v with at most three significant decimals and thousands
// separators for large values.
func num(v float64) string {
	switch {
	case v >= 1000:
		s := strconv.FormatFloat(v, 'f', 0, 64)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		return s
	case v >= 100 || v == float64(int64(v)):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
