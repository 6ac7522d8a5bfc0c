package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
)

// Entry types.
const (
	typeCall    = "call"
	typeIntent  = "intent"
	typeOutcome = "outcome"
)

// Keys in the buntdb file. Entries are "e:" + a 20-digit seq, so key order
// is seq order. "p:" + seq marks an intent awaiting its outcome (a hint for
// recovery, outside the chain); anchorKey holds the prune anchor; "ix/"
// keys index the entries (see ixSession).
const (
	entryPrefix = "e:"
	entryEnd    = "e;" // the first key after every "e:" key
	pendingGlob = "p:*"
	anchorKey   = "anchor"
)

// timeLayout is fixed-width so time index keys order by string compare.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func entryKey(seq uint64) string   { return seqKey(entryPrefix, seq) }
func pendingKey(seq uint64) string { return seqKey("p:", seq) }

// seqKey is prefix + the 20-digit seq.
func seqKey(prefix string, seq uint64) string {
	var b [16 + seqDigits]byte
	return string(appendSeq(append(b[:0], prefix...), seq))
}

// seqOf parses the seq of an "e:" or "p:" key.
func seqOf(key string) (uint64, bool) {
	if len(key) != 22 {
		return 0, false
	}
	n, err := strconv.ParseUint(key[2:], 10, 64)
	return n, err == nil
}

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// entry is one link of the chain, as stored. Field order is the canonical
// encoding: the MAC covers the JSON encoding of every field before mac.
type entry struct {
	Seq         uint64          `json:"seq"`
	Type        string          `json:"type"`
	Of          uint64          `json:"of,omitempty"` // outcome: the intent's seq
	Time        string          `json:"time"`
	Session     string          `json:"session"`
	Scope       string          `json:"scope"`
	Config      string          `json:"config,omitempty"`
	Client      string          `json:"client,omitempty"`
	Tool        string          `json:"tool"`
	Kind        string          `json:"kind,omitempty"`
	Method      string          `json:"method,omitempty"`
	Host        string          `json:"host,omitempty"`
	Path        string          `json:"path,omitempty"`
	QueryNames  []string        `json:"query_names,omitempty"`
	Bucket      string          `json:"bucket,omitempty"`
	Action      string          `json:"action,omitempty"`
	Key         string          `json:"key,omitempty"`
	Args        json.RawMessage `json:"args,omitempty"`
	ArgsSHA256  string          `json:"args_sha256,omitempty"`
	Decision    Decision        `json:"decision"`
	Code        string          `json:"code,omitempty"`
	Reason      string          `json:"reason,omitempty"`
	Grant       string          `json:"grant,omitempty"`
	Credential  string          `json:"credential,omitempty"`
	CredVersion int             `json:"credential_version,omitempty"`
	Status      int             `json:"status,omitempty"`
	BytesIn     int64           `json:"bytes_in,omitempty"`
	BytesOut    int64           `json:"bytes_out,omitempty"`
	Duration    int64           `json:"duration_ns,omitempty"`
	Scrubbed    bool            `json:"scrubbed,omitempty"`
	Hops        []Hop           `json:"hops,omitempty"`
	CredKind    string          `json:"credential_kind,omitempty"`
	TokenID     string          `json:"token_id,omitempty"`
	TokenExp    string          `json:"token_expires,omitempty"`
	Prev        string          `json:"prev"`
	MAC         string          `json:"mac,omitempty"` // set only when read back
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

// signLink MACs a checkpoint or anchor under its own domain.
func (k macKey) signLink(domain string, l link) string {
	return k.sum([]byte("keyhole-audit-"+domain+"\n"), strconv.AppendUint(nil, l.Seq, 10), []byte("\n"+l.MAC))
}

// signedLink is a checkpoint or anchor as stored.
type signedLink struct {
	link
	Sig string `json:"sig"`
}

func (k macKey) encodeLink(domain string, l link) []byte {
	b, _ := json.Marshal(signedLink{link: l, Sig: k.signLink(domain, l)})
	return b
}

// decodeLink parses and checks a checkpoint or anchor.
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
		Seq: first.Seq, Time: t,
		Session: first.Session, Scope: first.Scope, Config: first.Config, Client: first.Client, Tool: first.Tool,
		Kind: first.Kind, Method: first.Method, Host: first.Host, Path: first.Path,
		QueryNames: first.QueryNames, Bucket: first.Bucket, Action: first.Action, Key: first.Key,
		Args: first.Args, ArgsSHA256: first.ArgsSHA256,
		Decision: first.Decision, Code: first.Code, Reason: first.Reason, Grant: first.Grant,
		Credential: first.Credential, CredVersion: first.CredVersion,
		Status: first.Status, BytesIn: first.BytesIn, BytesOut: first.BytesOut,
		Duration: time.Duration(first.Duration), Scrubbed: first.Scrubbed, Hops: first.Hops,
		CredentialKind: first.CredKind, TokenID: first.TokenID, TokenExpires: parseOptTime(first.TokenExp),
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
	r.Prev, r.MAC = outcome.Prev, outcome.MAC
	return r
}
