package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"maps"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Entry types.
const (
	typeCall    = "call"
	typeIntent  = "intent"
	typeOutcome = "outcome"
)

// timeLayout is fixed-width so times order as strings, in SQL too.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// entry is one link of the chain, as stored. Field order is the canonical
// encoding: the MAC covers the JSON encoding of every field before mac.
type entry struct {
	Seq         uint64            `json:"seq"`
	Replica     string            `json:"replica,omitempty"` // the broker whose chain it is (PostgreSQL)
	Type        string            `json:"type"`
	Of          uint64            `json:"of,omitempty"` // outcome: the intent's seq
	Time        string            `json:"time"`
	Session     string            `json:"session"`
	Scope       string            `json:"scope"`
	Config      string            `json:"config,omitempty"`
	Client      string            `json:"client,omitempty"`
	Tool        string            `json:"tool"`
	Kind        string            `json:"kind,omitempty"`
	Method      string            `json:"method,omitempty"`
	Host        string            `json:"host,omitempty"`
	Path        string            `json:"path,omitempty"`
	QueryNames  []string          `json:"query_names,omitempty"`
	Bucket      string            `json:"bucket,omitempty"`
	Action      string            `json:"action,omitempty"`
	Key         string            `json:"key,omitempty"`
	Args        json.RawMessage   `json:"args,omitempty"`
	ArgsSHA256  string            `json:"args_sha256,omitempty"`
	Decision    Decision          `json:"decision"`
	Code        string            `json:"code,omitempty"`
	Reason      string            `json:"reason,omitempty"`
	Grant       string            `json:"grant,omitempty"`
	Credential  string            `json:"credential,omitempty"`
	CredVersion int               `json:"credential_version,omitempty"`
	Status      int               `json:"status,omitempty"`
	BytesIn     int64             `json:"bytes_in,omitempty"`
	BytesOut    int64             `json:"bytes_out,omitempty"`
	Duration    int64             `json:"duration_ns,omitempty"`
	Scrubbed    bool              `json:"scrubbed,omitempty"`
	Hops        []Hop             `json:"hops,omitempty"`
	CredKind    string            `json:"credential_kind,omitempty"`
	TokenID     string            `json:"token_id,omitempty"`
	TokenExp    string            `json:"token_expires,omitempty"`
	Cut         map[string]string `json:"cut,omitempty"`
	Operator    string            `json:"operator,omitempty"`
	Source      string            `json:"source,omitempty"`
	Count       int               `json:"count,omitempty"`
	Prev        string            `json:"prev"`
	MAC         string            `json:"mac,omitempty"` // set only when read back
}

// macKey computes the log's MACs.
type macKey []byte

func newMACKey(k []byte) macKey { return append(macKey(nil), k...) }

func (k macKey) sum(data ...[]byte) string {
	m := hmac.New(sha256.New, k)
	for _, d := range data {
		m.Write(d)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// macSuffix is `,"mac":"` + 64 hex digits + `"}`, the end of a sealed entry.
const (
	macField     = `,"mac":"`
	macSuffixLen = len(macField) + 64 + 2
)

// seal encodes e (whose Seq and Prev are set) and returns the stored value
// and its MAC.
func (k macKey) seal(e *entry) (string, string, error) {
	e.MAC = ""
	body, err := json.Marshal(e)
	if err != nil {
		return "", "", fmt.Errorf("audit: encode entry %d: %w", e.Seq, err)
	}
	mac := k.sum(body)
	var b bytes.Buffer
	b.Grow(len(body) + macSuffixLen)
	b.Write(body[:len(body)-1])
	b.WriteString(macField)
	b.WriteString(mac)
	b.WriteString(`"}`)
	return b.String(), mac, nil
}

// Every entry encodes as {"seq":N,<middle>"prev":"<hex>"}: seq is its
// first field and prev its last (mac is empty until read back), neither
// omitted when empty. encodeMiddle encodes the middle once, on the
// caller's goroutine; the writer, which alone knows seq and prev, only
// frames it (sealer), so the bytes are exactly seal's.
const (
	middleStart = `{"seq":0,`
	middleEnd   = `"prev":""}`
)

// encodeMiddle returns the JSON of e's fields between seq and prev, each
// followed by a comma. e.Seq and e.Prev are zeroed.
func encodeMiddle(e *entry) ([]byte, error) {
	e.Seq, e.Prev, e.MAC = 0, "", ""
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encode entry: %w", err)
	}
	if !bytes.HasPrefix(b, []byte(middleStart)) || !bytes.HasSuffix(b, []byte(middleEnd)) {
		return nil, fmt.Errorf("audit: encode entry: unexpected framing")
	}
	return b[len(middleStart) : len(b)-len(middleEnd)], nil
}

// sealer seals entries on the writer goroutine, reusing one HMAC and one
// buffer. It is not safe for concurrent use.
type sealer struct {
	mac hash.Hash
	buf []byte
	sum []byte
}

func newSealer(k macKey) *sealer { return &sealer{mac: hmac.New(sha256.New, k)} }

// seal frames the middle of an entry with seq and prev and returns the
// stored value and its MAC (a substring of it), as macKey.seal would.
func (s *sealer) seal(seq uint64, prev string, middle []byte) (string, string) {
	b := append(s.buf[:0], `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, ',')
	b = append(b, middle...)
	b = append(b, `"prev":"`...)
	b = append(b, prev...)
	b = append(b, `"}`...)
	s.buf = b
	s.mac.Reset()
	s.mac.Write(b)
	s.sum = s.mac.Sum(s.sum[:0])
	var out strings.Builder
	out.Grow(len(b) - 1 + macSuffixLen)
	out.Write(b[:len(b)-1])
	out.WriteString(macField)
	var hx [2 * sha256.Size]byte
	hex.Encode(hx[:], s.sum)
	out.Write(hx[:])
	out.WriteString(`"}`)
	v := out.String()
	return v, v[len(v)-2-len(hx) : len(v)-2]
}

// unseal parses a stored value. It returns the entry, whether its MAC
// verifies, and an error if the value is not a sealed entry at all.
func (k macKey) unseal(value string) (*entry, bool, error) {
	n := len(value)
	if n < macSuffixLen+2 || value[n-macSuffixLen:n-macSuffixLen+len(macField)] != macField || value[n-2:] != `"}` {
		return nil, false, fmt.Errorf("audit: entry is not sealed")
	}
	stored := value[n-macSuffixLen+len(macField) : n-2]
	var e entry
	if err := json.Unmarshal([]byte(value), &e); err != nil {
		return nil, false, fmt.Errorf("audit: decode entry: %w", err)
	}
	body := value[:n-macSuffixLen] + "}"
	want := k.sum([]byte(body))
	e.MAC = stored
	return &e, hmac.Equal([]byte(want), []byte(stored)), nil
}

// decode parses a stored value without checking its MAC, for readers.
func decode(value string) (*entry, error) {
	var e entry
	if err := json.Unmarshal([]byte(value), &e); err != nil {
		return nil, fmt.Errorf("audit: decode entry: %w", err)
	}
	return &e, nil
}

// signLink MACs a prune anchor, or a checkpoint written before checkpoints
// had counters, under its own domain.
func (k macKey) signLink(domain string, l link) string {
	return k.sum([]byte("keyhole-audit-"+domain+"\n"), strconv.AppendUint(nil, l.Seq, 10), []byte("\n"+l.MAC))
}

// signedLink is an anchor (or a counterless checkpoint) as stored.
type signedLink struct {
	link
	Sig string `json:"sig"`
}

func (k macKey) encodeLink(domain string, l link) []byte {
	b, _ := json.Marshal(signedLink{link: l, Sig: k.signLink(domain, l)})
	return b
}

// decodeLink parses and checks an anchor.
func (k macKey) decodeLink(domain string, data []byte) (link, error) {
	var s signedLink
	if err := json.Unmarshal(data, &s); err != nil {
		return link{}, fmt.Errorf("audit: decode %s: %w", domain, err)
	}
	if !hmac.Equal([]byte(s.Sig), []byte(k.signLink(domain, s.link))) {
		return s.link, fmt.Errorf("audit: %s at seq %d: signature does not verify", domain, s.Seq)
	}
	return s.link, nil
}

// checkpoint is the head of the chain as kept outside the log file: in the
// vault, as a copy in the log file's meta table, and in the anchor file.
type checkpoint struct {
	// N counts checkpoints: the first is 1, each next one N+1. It is 0 in
	// a checkpoint written before checkpoints had counters.
	N   uint64 `json:"n,omitempty"`
	Seq uint64 `json:"seq"`
	MAC string `json:"mac"`
	// Open is the seq of the oldest intent without an outcome at Seq, or 0:
	// a start looks for dangling intents only from there.
	Open uint64 `json:"open,omitempty"`
	// Time is when it was written, for people reading the anchor file.
	Time string `json:"time,omitempty"`
	Sig  string `json:"sig"`
}

const checkpointDomain = "checkpoint"

func (k macKey) signCheckpoint(c *checkpoint) string {
	var b []byte
	b = append(b, "keyhole-audit-checkpoint-v2\n"...)
	for _, n := range []uint64{c.N, c.Seq, c.Open} {
		b = strconv.AppendUint(b, n, 10)
		b = append(b, '\n')
	}
	b = append(b, c.MAC...)
	b = append(b, '\n')
	b = append(b, c.Time...)
	return k.sum(b)
}

// encodeCheckpoint signs c and returns it as stored.
func (k macKey) encodeCheckpoint(c checkpoint) []byte {
	c.Sig = k.signCheckpoint(&c)
	b, _ := json.Marshal(c)
	return b
}

// decodeCheckpoint parses and checks a checkpoint. One without a counter
// is checked as the earlier format signed it.
func (k macKey) decodeCheckpoint(data []byte) (checkpoint, error) {
	var c checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return checkpoint{}, fmt.Errorf("audit: decode checkpoint: %w", err)
	}
	want := k.signLink(checkpointDomain, link{Seq: c.Seq, MAC: c.MAC})
	if c.N > 0 || c.Open > 0 || c.Time != "" {
		want = k.signCheckpoint(&c)
	}
	if !hmac.Equal([]byte(c.Sig), []byte(want)) {
		return c, fmt.Errorf("audit: checkpoint at seq %d: signature does not verify", c.Seq)
	}
	return c, nil
}

// Caps on agent-chosen fields: a longer value is cut, and its hash kept.
const (
	// MaxField is the most bytes a string field of a record keeps.
	MaxField = 4096
	// MaxQueryNames is the most query parameter names a record keeps.
	MaxQueryNames = 64
)

// capFields cuts every string field longer than MaxField (at a UTF-8
// boundary, marked with "…") and query_names longer than MaxQueryNames
// names, noting in e.Cut the SHA-256 of each whole value.
func capFields(e *entry) {
	for _, f := range []struct {
		name string
		v    *string
	}{
		{"session", &e.Session}, {"scope", &e.Scope}, {"client", &e.Client}, {"tool", &e.Tool},
		{"kind", &e.Kind}, {"method", &e.Method}, {"host", &e.Host}, {"path", &e.Path},
		{"bucket", &e.Bucket}, {"action", &e.Action}, {"key", &e.Key}, {"code", &e.Code},
		{"reason", &e.Reason}, {"grant", &e.Grant}, {"credential", &e.Credential},
	} {
		if len(*f.v) <= MaxField {
			continue
		}
		noteCut(e, f.name, []byte(*f.v))
		*f.v = cutString(*f.v, MaxField-len("…")) + "…"
	}
	long := len(e.QueryNames) > MaxQueryNames
	for _, n := range e.QueryNames {
		long = long || len(n) > MaxField
	}
	if long {
		all, _ := json.Marshal(e.QueryNames)
		noteCut(e, "query_names", all)
		names := e.QueryNames[:min(len(e.QueryNames), MaxQueryNames)]
		e.QueryNames = make([]string, len(names))
		for i, n := range names {
			if len(n) > MaxField {
				n = cutString(n, MaxField-len("…")) + "…"
			}
			e.QueryNames[i] = n
		}
	}
}

func noteCut(e *entry, field string, whole []byte) {
	if e.Cut == nil {
		e.Cut = make(map[string]string)
	}
	h := sha256.Sum256(whole)
	e.Cut[field] = hex.EncodeToString(h[:])
}

// cutString returns the longest prefix of s of at most n bytes that does
// not end inside a UTF-8 sequence.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.Clone(s[:n])
}

// applyArgs stores args according to the arguments mode.
func applyArgs(mode string, args json.RawMessage) (json.RawMessage, string) {
	if len(args) == 0 || mode == ArgsNone {
		return nil, ""
	}
	h := sha256.Sum256(args)
	sum := hex.EncodeToString(h[:])
	if mode == ArgsHashed {
		return nil, sum
	}
	var compact bytes.Buffer
	if json.Compact(&compact, args) == nil && compact.Len() <= MaxArgs {
		return compact.Bytes(), sum
	}
	// Too long, or not JSON: keep a readable prefix as a JSON string.
	src := args
	if compact.Len() > 0 {
		src = compact.Bytes()
	}
	cut := min(len(src), MaxArgs)
	for cut > 0 && cut < len(src) && !utf8.RuneStart(src[cut]) {
		cut--
	}
	s, _ := json.Marshal(string(src[:cut]))
	return s, sum
}

// fromRecord fills an entry (of type t) from a caller's record.
func fromRecord(t string, r *Record) *entry {
	return &entry{
		Type: t, Time: formatTime(r.Time),
		Session: r.Session, Scope: r.Scope, Config: r.Config, Client: r.Client, Tool: r.Tool, Kind: r.Kind,
		Method: r.Method, Host: r.Host, Path: r.Path, QueryNames: r.QueryNames,
		Bucket: r.Bucket, Action: r.Action, Key: r.Key,
		Decision: r.Decision, Code: r.Code, Reason: r.Reason, Grant: r.Grant,
		Credential: r.Credential, CredVersion: r.CredVersion,
		Status: r.Status, BytesIn: r.BytesIn, BytesOut: r.BytesOut,
		Duration: int64(r.Duration), Scrubbed: r.Scrubbed, Hops: r.Hops,
		CredKind: r.CredentialKind, TokenID: r.TokenID, TokenExp: formatOptTime(r.TokenExpires),
		Cut:      maps.Clone(r.Cut),
		Operator: r.Operator, Source: r.Source, Count: r.Count,
	}
}

// parseOptTime parses what formatOptTime wrote.
func parseOptTime(s string) time.Time {
	t, _ := time.Parse(timeLayout, s)
	return t
}

// formatOptTime formats t, or "" for the zero time.
func formatOptTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatTime(t)
}

// outcomeOf builds the outcome entry of intent from the caller's outcome.
// It repeats the intent's time, session, scope and tool so that an
// outcome entry read on its own (in the mirror or the file) names its call.
func outcomeOf(intent *entry, intentSeq uint64, o *Record) *entry {
	return &entry{
		Type: typeOutcome, Of: intentSeq, Time: intent.Time,
		Session: intent.Session, Scope: intent.Scope, Tool: intent.Tool,
		Decision: o.Decision, Code: o.Code, Reason: o.Reason,
		Status: o.Status, BytesIn: o.BytesIn, BytesOut: o.BytesOut,
		Duration: int64(o.Duration), Scrubbed: o.Scrubbed, Hops: o.Hops,
		CredKind: o.CredentialKind, TokenID: o.TokenID, TokenExp: formatOptTime(o.TokenExpires),
	}
}

// record is the Record of a call from its first entry (call or intent) and
// its outcome, which may be nil.
func record(first, outcome *entry, inflight bool) Record {
	t, _ := time.Parse(timeLayout, first.Time)
	r := Record{
		Seq: first.Seq, Replica: first.Replica, Time: t,
		Session: first.Session, Scope: first.Scope, Config: first.Config, Client: first.Client, Tool: first.Tool,
		Kind: first.Kind, Method: first.Method, Host: first.Host, Path: first.Path,
		QueryNames: first.QueryNames, Bucket: first.Bucket, Action: first.Action, Key: first.Key,
		Args: first.Args, ArgsSHA256: first.ArgsSHA256,
		Decision: first.Decision, Code: first.Code, Reason: first.Reason, Grant: first.Grant,
		Credential: first.Credential, CredVersion: first.CredVersion,
		Status: first.Status, BytesIn: first.BytesIn, BytesOut: first.BytesOut,
		Duration: time.Duration(first.Duration), Scrubbed: first.Scrubbed, Hops: first.Hops,
		CredentialKind: first.CredKind, TokenID: first.TokenID, TokenExpires: parseOptTime(first.TokenExp),
		Cut:      first.Cut,
		Operator: first.Operator, Source: first.Source, Count: first.Count,
		Prev: first.Prev, MAC: first.MAC,
	}
	if first.Type != typeIntent {
		return r
	}
	if outcome == nil {
		r.Decision = Interrupted
		if inflight {
			r.Decision = Running
		}
		return r
	}
	r.Decision, r.Code, r.Reason = outcome.Decision, outcome.Code, outcome.Reason
	r.Status, r.BytesIn, r.BytesOut = outcome.Status, outcome.BytesIn, outcome.BytesOut
	r.Duration, r.Scrubbed, r.Hops = time.Duration(outcome.Duration), outcome.Scrubbed, outcome.Hops
	r.CredentialKind, r.TokenID, r.TokenExpires = outcome.CredKind, outcome.TokenID, parseOptTime(outcome.TokenExp)
	for k, v := range outcome.Cut {
		if r.Cut == nil {
			r.Cut = make(map[string]string)
		}
		r.Cut[k] = v
	}
	r.Prev, r.MAC = outcome.Prev, outcome.MAC
	return r
}
