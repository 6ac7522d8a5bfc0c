package report

import (
	"maps"
	"slices"
	"strings"
)

// identifierLike reports whether a path segment or key name looks like an
// identifier rather than a name: it holds a digit (an issue number, a
// cus_… or UUID, a dated file) and no space. Words like "api" or "billing"
// are names: two of them are two grants, never "*".
func identifierLike(s string) bool {
	return strings.ContainsAny(s, "0123456789") && !strings.ContainsAny(s, " \t")
}

// generalizePaths returns the smallest patterns that match every path,
// generalizing a segment to "*" only where two or more distinct
// identifier-like values were seen in it, among paths that agree
// elsewhere: paths are grouped by their length and their name segments
// (an identifier-like segment groups with any other), and in each group a
// position that held two or more values becomes "*". It never makes "**";
// a path another pattern covers is left out.
func generalizePaths(paths [][]string) []string {
	type family struct {
		members [][]string
	}
	families := map[string]*family{}
	for _, p := range paths {
		key := make([]string, len(p))
		for i, s := range p {
			if identifierLike(s) {
				key[i] = "\x00id" // no segment holds a NUL
			} else {
				key[i] = s
			}
		}
		k := strings.Join(key, "/")
		if families[k] == nil {
			families[k] = &family{}
		}
		families[k].members = append(families[k].members, p)
	}
	var out [][]string
	for _, f := range families {
		pat := slices.Clone(f.members[0])
		for i := range pat {
			for _, m := range f.members[1:] {
				if m[i] != pat[i] {
					pat[i] = "*"
					break
				}
			}
		}
		out = append(out, pat)
	}
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(patternText(a), patternText(b)) })
	var texts []string
	for _, p := range dropCovered(out) {
		texts = append(texts, patternText(p))
	}
	return slices.Compact(texts)
}

// covers reports whether pattern p matches every path pattern q matches:
// the same length, and each segment "*" or equal.
func covers(p, q []string) bool {
	if len(p) != len(q) {
		return false
	}
	for i := range p {
		if p[i] != "*" && p[i] != q[i] {
			return false
		}
	}
	return true
}

func dropCovered(ps [][]string) [][]string {
	var out [][]string
	for i, q := range ps {
		covered := false
		for j, p := range ps {
			if i != j && covers(p, q) && !slices.Equal(p, q) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, q)
		}
	}
	return out
}

func patternText(segs []string) string { return "/" + strings.Join(segs, "/") }

// s3Prefixes returns the smallest prefixes that grant the keys of get or
// head calls: a key's parent ("reports/2026/") when two or more
// identifier-like names were read under it, else the key itself; never
// the whole bucket.
func s3KeyPrefixes(keys []string) []string {
	byParent := map[string][]string{}
	for _, k := range keys {
		i := strings.LastIndexByte(k, '/')
		parent, name := k[:i+1], k[i+1:]
		byParent[parent] = append(byParent[parent], name)
	}
	set := map[string]bool{}
	for parent, names := range byParent {
		slices.Sort(names)
		names = slices.Compact(names)
		ids := 0
		for _, n := range names {
			if identifierLike(n) {
				ids++
			}
		}
		if parent != "" && ids >= 2 {
			set[parent] = true
			continue
		}
		for _, n := range names {
			set[parent+n] = true
		}
	}
	return dropCoveredPrefixes(slices.Sorted(maps.Keys(set)))
}

// s3ListPrefix is the smallest prefix that grants a list of prefix p: p
// itself when it ends in "/" (or is the whole bucket), else p as a plain
// string prefix ("reports/2026*"), since a list of "reports/2026" returns
// reports/2026-secret/… too.
func s3ListPrefix(p string) string {
	if p == "" || strings.HasSuffix(p, "/") {
		return p
	}
	return p + "*"
}

// dropCoveredPrefixes leaves out a prefix that a directory prefix before
// it ("reports/") grants already.
func dropCoveredPrefixes(ps []string) []string {
	var out []string
	for _, p := range ps {
		covered := false
		for _, q := range ps {
			if q != p && strings.HasSuffix(q, "/") && strings.HasPrefix(strings.TrimSuffix(p, "*"), q) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}
