package tools

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3TokenPrefix starts every continuation token keyhole gives the agent.
// The rest is the base64url of the last key or common prefix the page
// returned (after a uvarint of its length) and of the upstream's own
// token, if any. The next page is listed with the upstream's token, or
// with start-after the last entry when the page was cut by keyhole (at
// max_keys or response.max_bytes) or the upstream gave no usable token;
// entries up to the last one returned are dropped, as some stores list a
// common prefix again on the next page. No S3 token holds a ":", so a
// token of keyhole's and one of an upstream's cannot be confused.
const s3TokenPrefix = "keyhole:"

// s3ListEnvelope is the JSON of a list result without entries or token.
const s3ListEnvelope = len(`{"objects":[],"common_prefixes":[],"truncated":false}`)

// Limits of continuation tokens.
const (
	// s3MaxTokenBytes is the longest continuation_token an agent may send
	// (the schema's maxLength).
	s3MaxTokenBytes = 8192
	// s3MaxUpstreamToken is the longest upstream token passed on inside
	// one of keyhole's; AWS's and MinIO's are a few hundred bytes.
	s3MaxUpstreamToken = 4096
)

// s3Position is where the next list page starts: after the key after,
// and with the upstream's token when it has one.
type s3Position struct {
	after    string
	upstream string
}

// encode returns the continuation token of the position.
func (p s3Position) encode() string {
	b := binary.AppendUvarint(nil, uint64(len(p.after)))
	b = append(append(b, p.after...), p.upstream...)
	return s3TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// s3DecodeToken returns the position a continuation token of keyhole's
// carries, ok false for any other token (passed on to the upstream as it
// is), or an *ArgError for a keyhole token that does not decode.
func s3DecodeToken(token string) (s3Position, bool, error) {
	rest, ok := strings.CutPrefix(token, s3TokenPrefix)
	if !ok {
		return s3Position{}, false, nil
	}
	bad := &ArgError{Msg: "continuation_token is not one keyhole issued; pass next_continuation_token unchanged"}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return s3Position{}, true, bad
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n > s3MaxKeyBytes || n > uint64(len(b)-w) {
		return s3Position{}, true, bad
	}
	p := s3Position{after: string(b[w : w+int(n)]), upstream: string(b[w+int(n):])}
	if p.after == "" && p.upstream == "" || !utf8.ValidString(p.after) || len(p.upstream) > s3MaxUpstreamToken || s3CheckText("", p.upstream) != nil {
		return s3Position{}, true, bad
	}
	return p, true, nil
}

// s3Entry is one listed object or common prefix, in listing order.
type s3Entry struct {
	name   string
	prefix bool // a common prefix, not an object
	obj    S3Object
}

// list lists the keys under prefix, one page. The page the agent gets
// holds at most the asked max_keys entries (objects and common prefixes
// together, as S3 counts them) and its JSON at most response.max_bytes,
// whatever the upstream sent: a store that ignores max-keys cannot flood
// the agent. A page that goes on carries a continuation token of keyhole's
// (see s3TokenPrefix).
func (t *s3Tool) list(ctx context.Context, s *s3Scrubber, prefix string, c *s3Call, opt func(*s3.Options)) (*Result, error) {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(t.bucket), MaxKeys: aws.Int32(min(c.maxKeys, t.maxKeys))}
	if prefix != "" {
		in.Prefix = aws.String(prefix)
	}
	if c.delimiter != "" {
		in.Delimiter = aws.String(c.delimiter)
	}
	switch {
	case c.token != "":
		in.ContinuationToken = aws.String(c.token)
	case c.at.upstream != "":
		in.ContinuationToken = aws.String(c.at.upstream)
	case c.at.after != "":
		in.StartAfter = aws.String(c.at.after)
	}
	out, err := t.client.ListObjectsV2(ctx, in, opt)
	if err != nil {
		return nil, err
	}
	r, cut, err := t.page(s, out, prefix, c)
	if err != nil {
		return nil, err
	}
	return &Result{Structured: r, Status: s3Status(out.ResultMetadata), BytesIn: s3BytesIn(out.ResultMetadata), Truncated: cut}, nil
}

// page shapes one list response into the result the agent gets, and says
// whether keyhole cut it.
func (t *s3Tool) page(s *s3Scrubber, out *s3.ListObjectsV2Output, prefix string, c *s3Call) (S3ListResult, bool, error) {
	entries := s3Entries(out, prefix, c.at.after)
	upstreamMore := aws.ToBool(out.IsTruncated)
	// The upstream's token, when it can be passed on in one of keyhole's.
	upstreamToken := aws.ToString(out.NextContinuationToken)
	if !upstreamMore || len(upstreamToken) > s3MaxUpstreamToken || s3CheckText("", upstreamToken) != nil {
		upstreamToken = ""
	}
	// next is the continuation of a page that ends with entry i.
	next := func(i int) string {
		switch {
		case i+1 < len(entries):
			return s.str(s3Position{after: entries[i].name}.encode())
		case upstreamMore:
			return s.str(s3Position{after: entries[i].name, upstream: upstreamToken}.encode())
		}
		return ""
	}
	r := S3ListResult{Objects: []S3Object{}, CommonPrefixes: []string{}}
	size, n := s3ListEnvelope, 0
	for i := range entries {
		if n == int(c.maxKeys) {
			break
		}
		e, js := s3Render(s, entries[i])
		add := len(js)
		if n > 0 {
			add++ // the comma
		}
		need := size + add
		if tok := next(i); tok != "" {
			tj, _ := json.Marshal(tok)
			need += len(`,"next_continuation_token":`) + len(tj) + len("true") - len("false")
		}
		if int64(need) > t.maxBytes {
			if n == 0 {
				return r, false, &ExecError{
					Msg:    fmt.Sprintf("the first entry of this list page does not fit in response.max_bytes (%d bytes); an operator must raise it", t.maxBytes),
					Detail: fmt.Sprintf("s3 list on bucket %s: entry of %d bytes", t.bucket, len(js)),
				}
			}
			break
		}
		size += add
		if e.prefix {
			r.CommonPrefixes = append(r.CommonPrefixes, e.name)
		} else {
			r.Objects = append(r.Objects, e.obj)
		}
		n++
	}
	switch {
	case n > 0:
		r.NextContinuationToken = next(n - 1)
	case upstreamToken != "":
		// Nothing of this page was new (outside the prefix, or listed
		// before): go on where the upstream would.
		r.NextContinuationToken = s.str(s3Position{after: c.at.after, upstream: upstreamToken}.encode())
	}
	// A page is truncated when there is a way on. An upstream that says
	// there is more but gives no token and nothing new cannot be paged
	// (some stores also send a token with the last page; it leads nowhere).
	r.Truncated = r.NextContinuationToken != ""
	return r, n < len(entries), nil
}

// s3Render scrubs an entry and returns it with its JSON in the result.
func s3Render(s *s3Scrubber, e s3Entry) (s3Entry, []byte) {
	if e.prefix {
		e.name = s.str(e.name)
		js, _ := json.Marshal(e.name)
		return e, js
	}
	e.obj.Key, e.obj.ETag = s.str(e.obj.Key), s.str(e.obj.ETag)
	js, _ := json.Marshal(e.obj)
	return e, js
}

// s3Entries returns the objects and common prefixes of a list response
// that are under prefix and after startAfter, merged in key order without
// duplicates. A hostile or broken upstream could list keys outside the
// prefix that was granted, repeat keys, or send them out of order; none
// of that reaches the agent, and a page cut in key order resumes where
// it was cut.
func s3Entries(out *s3.ListObjectsV2Output, prefix, startAfter string) []s3Entry {
	entries := make([]s3Entry, 0, len(out.Contents)+len(out.CommonPrefixes))
	keep := func(k string) bool {
		// A store may list a common prefix again after start-after named
		// it (keys under it sort after it); it was returned already.
		return strings.HasPrefix(k, prefix) && (startAfter == "" || k > startAfter)
	}
	for _, o := range out.Contents {
		if k := aws.ToString(o.Key); keep(k) {
			entries = append(entries, s3Entry{name: k, obj: S3Object{
				Key:          k,
				Size:         aws.ToInt64(o.Size),
				LastModified: s3Time(o.LastModified),
				ETag:         aws.ToString(o.ETag),
			}})
		}
	}
	for _, p := range out.CommonPrefixes {
		if k := aws.ToString(p.Prefix); keep(k) {
			entries = append(entries, s3Entry{name: k, prefix: true})
		}
	}
	slices.SortStableFunc(entries, func(a, b s3Entry) int {
		return cmp.Or(strings.Compare(a.name, b.name), cmp.Compare(s3Bit(a.prefix), s3Bit(b.prefix)))
	})
	return slices.CompactFunc(entries, func(a, b s3Entry) bool { return a.name == b.name && a.prefix == b.prefix })
}

func s3Bit(b bool) int {
	if b {
		return 1
	}
	return 0
}
