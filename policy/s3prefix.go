package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// S3Prefix is one compiled prefix of an s3 grant: the keys it grants.
//
// A prefix matches whole key segments: "reports/2026" grants the key
// reports/2026 and every key under reports/2026/, never
// reports/2026-secret/payroll.csv or reports/20260/x.csv. A prefix that ends
// in "/" ("reports/2026/") grants the keys under it. A trailing "*" asks for
// a plain string prefix: "reports/2026*" grants every key that starts with
// "reports/2026". "" grants the whole bucket.
type S3Prefix struct {
	// Text is the prefix as written in keyhole.yaml.
	Text string
	// Key is the one key granted beside those under Under ("reports/2026"
	// for the prefix "reports/2026"), or "" for none.
	Key string
	// Under grants every key that starts with it: "reports/2026/" for
	// "reports/2026" and "reports/2026/", "reports/2026" for
	// "reports/2026*", "" for the whole bucket.
	Under string
}

// GrantsKey reports whether p grants the object key (get, head).
func (p S3Prefix) GrantsKey(key string) bool {
	return p.Key != "" && key == p.Key || strings.HasPrefix(key, p.Under)
}

// GrantsList reports whether p grants a list of the keys that start with
// prefix. Every key such a list can return must be granted, so prefix must
// itself start with Under: under the grant "reports/2026" a list of
// "reports/2026/" is granted, but a list of "reports/2026" (which reaches
// reports/2026-secret/…) or of "reports/20" is not.
func (p S3Prefix) GrantsList(prefix string) bool {
	return strings.HasPrefix(prefix, p.Under)
}

// Whole reports whether p grants the whole bucket.
func (p S3Prefix) Whole() bool { return p.Under == "" }

// Meaning says in words which keys p grants, as `config check` and the
// tool's description show it: `reports/2026 (the key reports/2026 and
// every key under reports/2026/)`.
func (p S3Prefix) Meaning() string {
	switch {
	case p.Whole():
		return `"" (the whole bucket)`
	case p.Key != "":
		return p.Text + " (the key " + p.Key + " and every key under " + p.Under + ")"
	case strings.HasSuffix(p.Text, "*"):
		return p.Text + " (every key that starts with " + strconv.Quote(p.Under) + ")"
	default:
		return p.Text + " (every key under " + p.Under + ")"
	}
}

// parseS3Prefix compiles a prefix as written in a grant. The error's
// message is written for the person editing keyhole.yaml.
func parseS3Prefix(px string) (S3Prefix, error) {
	p := S3Prefix{Text: px}
	plain := strings.HasSuffix(px, "*")
	base := strings.TrimSuffix(px, "*")
	switch {
	case px == "*":
		return p, fmt.Errorf(`"*" alone is the whole bucket; write "" for it`)
	case strings.Contains(base, "*"):
		return p, fmt.Errorf("%q: \"*\" is no wildcard; it may only end a prefix, where it asks for a plain string prefix (\"reports/2026*\" grants every key that starts with \"reports/2026\")", px)
	case strings.HasPrefix(px, "/"):
		return p, fmt.Errorf("%q starts with \"/\"; S3 keys have no leading slash (write %q)", px, strings.TrimLeft(px, "/"))
	case hasControl(px):
		return p, fmt.Errorf("%q contains a control character, which no key holds", px)
	case strings.Contains(px, `\`):
		return p, fmt.Errorf("%q contains a backslash, which keys may not hold (some S3-compatible stores read it as \"/\")", px)
	case len(base) > 1024:
		return p, fmt.Errorf("%q is longer than 1024 bytes, the longest S3 key", px[:32]+"…")
	}
	segs := strings.Split(base, "/")
	if plain {
		// The last part of a string prefix is the start of a name
		// ("reports/.*" grants reports/.env): only whole segments are
		// checked.
		segs = segs[:len(segs)-1]
	}
	for _, seg := range segs {
		if seg == "." || seg == ".." {
			return p, fmt.Errorf("%q has a %q segment; keys with one are refused, name the prefix itself", px, seg)
		}
	}
	switch {
	case plain:
		p.Under = base
	case px == "" || strings.HasSuffix(px, "/"):
		p.Under = px
	default:
		p.Key, p.Under = px, px+"/"
	}
	return p, nil
}
