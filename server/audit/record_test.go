package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fullRecord sets every field of a Record to a distinct non-zero value, by
// reflection, so a field added to Record is set here without anyone
// remembering to.
func fullRecord(t *testing.T) Record {
	t.Helper()
	var r Record
	v := reflect.ValueOf(&r).Elem()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch f.Interface().(type) {
		case string:
			f.SetString("v-" + strings.ToLower(name))
		case Decision:
			f.Set(reflect.ValueOf(Allow))
		case time.Time:
			f.Set(reflect.ValueOf(t0.Add(time.Hour)))
		case time.Duration:
			f.SetInt(int64(1234 * time.Microsecond))
		case json.RawMessage:
			f.Set(reflect.ValueOf(json.RawMessage(`{"a":1}`)))
		case []string:
			f.Set(reflect.ValueOf([]string{"x-" + name, "y-" + name}))
		case map[string]string:
			f.Set(reflect.ValueOf(map[string]string{"k-" + name: "v"}))
		case []Hop:
			f.Set(reflect.ValueOf([]Hop{{Method: "GET", Path: "/h-" + name, Status: 302}, {Method: "GET", Path: "/h2", Status: 200}}))
		case int, int64:
			f.SetInt(int64(i + 1))
		case uint64:
			f.SetUint(uint64(i + 1))
		case bool:
			f.SetBool(true)
		default:
			t.Fatalf("Record.%s has a type (%s) this test does not fill: extend it", name, f.Type())
		}
	}
	return r
}

// Issue 12 item 5: no field of a Record is lost between the caller's Record
// and the stored entry and back, for a call written whole and for an
// intent with its outcome.
func TestRecordRoundTripsEveryField(t *testing.T) {
	in := fullRecord(t)
	// Fields the log sets itself, not the caller.
	setByLog := map[string]bool{"Seq": true, "Prev": true, "MAC": true, "ArgsSHA256": true}
	check := func(t *testing.T, got Record) {
		t.Helper()
		gv, wv := reflect.ValueOf(got), reflect.ValueOf(in)
		for i := range gv.NumField() {
			name := gv.Type().Field(i).Name
			if name == "Replica" {
				continue // set by the log, only in a chain in PostgreSQL (postgres_test.go)
			}
			if setByLog[name] {
				if gv.Field(i).IsZero() {
					t.Errorf("Record.%s is not set by the log", name)
				}
				continue
			}
			if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
				t.Errorf("Record.%s = %#v after the round trip, want %#v", name, gv.Field(i).Interface(), wv.Field(i).Interface())
			}
		}
	}
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	mustWrite(t, l, denied("s", "github")) // so the records below have a prev
	t.Run("call", func(t *testing.T) {
		got, err := l.Get(mustWrite(t, l, in))
		if err != nil {
			t.Fatal(err)
		}
		check(t, got)
	})
	t.Run("intent and outcome", func(t *testing.T) {
		p, err := l.Begin(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Finish(context.Background(), in); err != nil {
			t.Fatal(err)
		}
		got, err := l.Get(p.Seq())
		if err != nil {
			t.Fatal(err)
		}
		check(t, got)
		for _, r := range mustQuery(t, l, Filter{Limit: 1}) {
			check(t, r)
		}
	})
}

// Issue 14 item 10: agent-chosen fields are capped; the record keeps the
// hash of each whole value, and a 1 MiB path costs kilobytes, not
// megabytes.
func TestAgentChosenFieldsAreCapped(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	huge := "/" + strings.Repeat("é", 512<<10) // 1 MiB
	names := make([]string, 1000)
	for i := range names {
		names[i] = "q" + strings.Repeat("n", i)
	}
	rec := denied("s", strings.Repeat("t", 100_000))
	rec.Path, rec.Reason, rec.Key, rec.Client, rec.QueryNames = huge, "GET "+huge+" is not granted", huge, huge, names
	seq := mustWrite(t, l, rec)
	got, err := l.Get(seq)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := l.st.get(seq)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(raw.Value); n > 10*MaxField+MaxQueryNames*MaxField/8 {
		t.Fatalf("stored entry is %d bytes for a 1 MiB path", n)
	}
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	allNames, _ := json.Marshal(names)
	want := map[string]string{
		"path": sum(huge), "reason": sum(rec.Reason), "key": sum(huge), "client": sum(huge),
		"tool": sum(rec.Tool), "query_names": sum(string(allNames)),
	}
	if !reflect.DeepEqual(got.Cut, want) {
		t.Fatalf("Cut = %v, want %v", got.Cut, want)
	}
	for name, v := range map[string][2]string{
		"path": {got.Path, huge}, "reason": {got.Reason, rec.Reason}, "key": {got.Key, huge},
		"client": {got.Client, huge}, "tool": {got.Tool, rec.Tool},
	} {
		kept, whole := v[0], v[1]
		if len(kept) > MaxField || !strings.HasSuffix(kept, "…") || !strings.HasPrefix(whole, strings.TrimSuffix(kept, "…")) {
			t.Errorf("%s = %d bytes %.20q…, want the first bytes of the value, at most %d, ending in …", name, len(kept), kept, MaxField)
		}
	}
	if len(got.QueryNames) != MaxQueryNames || got.QueryNames[0] != "q" {
		t.Fatalf("query names = %d, want the first %d", len(got.QueryNames), MaxQueryNames)
	}
	// A short record is not touched.
	small, _ := l.Get(mustWrite(t, l, denied("s", "github")))
	if small.Cut != nil || small.Path != "/repos/acme/api" {
		t.Fatalf("a short record = %+v, want it unchanged and no cut", small)
	}
	if rep := mustVerify(t, l); !rep.OK {
		t.Fatalf("Verify = %+v", rep)
	}
}

// Retention on a large log deletes in small transactions: writers get in
// between them, and the chain verifies after every one.
func TestPruneInSmallBatches(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	const n = 3000
	fill(t, l, n, func(i int) *entry {
		rec := denied("old", "github")
		return l.entryFrom(typeCall, &rec)
	})
	f.clock.Add(48 * time.Hour)
	var batches int
	var mu sync.Mutex
	pruneHook = func() {
		mu.Lock()
		defer mu.Unlock()
		batches++
		// A call made while the prune runs goes through at once.
		mustWrite(t, l, denied("new", "github"))
		if rep := mustVerifyUnlocked(t, l); !rep.OK {
			t.Errorf("Verify between prune batches = %+v", rep)
		}
	}
	defer func() { pruneHook = nil }()
	removed, err := l.Prune(t0.Add(24 * time.Hour))
	if err != nil {
		t.Fatalf("Prune = %v", err)
	}
	if removed != n {
		t.Fatalf("Prune removed %d calls, want %d", removed, n)
	}
	if want := (n+pruneBatch-1)/pruneBatch - 1; batches != want {
		t.Fatalf("Prune ran %d pauses between transactions, want %d (batches of %d)", batches, want, pruneBatch)
	}
	recs := mustQuery(t, l, Filter{})
	if len(recs) != batches {
		t.Fatalf("after Prune %d records, want the %d written during it", len(recs), batches)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Entries != uint64(batches) {
		t.Fatalf("Verify after Prune = %+v", rep)
	}
}

// mustVerifyUnlocked verifies while Prune holds the maintenance lock.
func mustVerifyUnlocked(t testing.TB, l *Log) Report {
	t.Helper()
	a, _, err := l.pruneAnchor()
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.walk(context.Background(), a.Seq, a.MAC, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// Follow passes the last records, then each new one, and a running call
// again once it completes: over a read-only Log beside the writer, as
// `audit tail -f` reads a live broker's log.
func TestFollow(t *testing.T) {
	f := newFixture(t)
	w := f.open()
	defer w.Close()
	mustWrite(t, w, denied("s1", "github"))
	mustWrite(t, w, denied("s2", "github"))
	o := f.opts
	o.ReadOnly, o.WriterAlive = true, func() bool { return true }
	r, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Record, 16)
	done := make(chan error, 1)
	go func() {
		done <- r.Follow(ctx, Filter{Session: "s1", Limit: 5}, func(recs []Record) error {
			for _, rec := range recs {
				got <- rec
			}
			return nil
		})
	}()
	next := func() Record {
		select {
		case rec := <-got:
			return rec
		case err := <-done:
			t.Fatalf("Follow returned %v before passing what it should", err)
		case <-time.After(20 * time.Second):
			t.Fatalf("Follow passed nothing")
		}
		return Record{}
	}
	if rec := next(); rec.Seq != 1 {
		t.Fatalf("first record = %+v, want seq 1", rec)
	}
	p, err := w.Begin(context.Background(), allowed("s1", "github"))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, denied("s2", "github")) // another session: not passed
	if rec := next(); rec.Seq != p.Seq() || rec.Decision != Running {
		t.Fatalf("record = %+v, want the call in flight", rec)
	}
	if err := p.Finish(context.Background(), Record{Decision: Allow, Status: 201}); err != nil {
		t.Fatal(err)
	}
	if rec := next(); rec.Seq != p.Seq() || rec.Decision != Allow || rec.Status != 201 {
		t.Fatalf("record = %+v, want the call again, completed", rec)
	}
	mustWrite(t, w, denied("s1", "github"))
	if rec := next(); rec.Session != "s1" || rec.Decision != Deny {
		t.Fatalf("record = %+v, want the new denial of s1", rec)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow = %v after its context ended, want nil", err)
	}
	select {
	case rec := <-got:
		t.Fatalf("Follow passed %+v, which it should not have", rec)
	default:
	}
}

// TestSealerMatchesSeal: the writer's sealer, which frames a middle
// encoded on the caller's goroutine, stores exactly the bytes and MAC the
// canonical encoding (macKey.seal) gives, for entries of every shape.
func TestSealerMatchesSeal(t *testing.T) {
	k := newMACKey(testKey)
	s := newSealer(k)
	long := strings.Repeat("é<>&\u2028x", MaxField)
	recs := map[string]Record{
		"allowed": allowed("ses_a", "github"),
		"denied":  {Time: t0, Session: "ses_b", Scope: "triage", Tool: "github", Decision: Deny, Code: "not_granted", Reason: `DELETE "/x" <not> & granted`},
		"unicode": {Time: t0, Session: "ses_ü", Scope: "s", Tool: "t", Decision: Error, Reason: "\x00\x1f\u2029 \ufffd \xff", Path: "/a%2Fb"},
		"everything": {Time: t0, Session: "s", Scope: "s", Client: "c/1", Tool: "t", Kind: "http", Method: "GET", Host: "h:1", Path: "/p",
			QueryNames: []string{"a", "b"}, Bucket: "bk", Action: "list", Key: "k", Args: json.RawMessage(`{"a": [1, 2.5e10, "x"]}`),
			Decision: Allow, Grant: "g", Credential: "cred", CredVersion: 3, Status: 200, BytesIn: 10, BytesOut: 20, Duration: 1500,
			Scrubbed: true, Hops: []Hop{{Method: "GET", Path: "/q", Status: 302}}, CredentialKind: "oauth2", TokenID: "sha256:0123456789abcdef",
			TokenExpires: t0.Add(time.Hour), Operator: "root", Source: "127.0.0.1", Count: 4},
		"cut": {Time: t0, Session: "s", Scope: "s", Tool: "t", Decision: Deny, Reason: long, QueryNames: make([]string, MaxQueryNames+5)},
	}
	prev := ""
	for name, rec := range recs {
		for _, typ := range []string{typeCall, typeIntent} {
			e := fromRecord(typ, &rec)
			e.Args, e.ArgsSHA256 = applyArgs(ArgsFull, rec.Args)
			capFields(e)
			want := *e
			want.Seq, want.Prev = 4242, prev
			wantV, wantMAC, err := k.seal(&want)
			if err != nil {
				t.Fatal(err)
			}
			mid, err := encodeMiddle(e)
			if err != nil {
				t.Fatalf("%s: encodeMiddle = %v", name, err)
			}
			gotV, gotMAC := s.seal(4242, prev, mid)
			if gotV != wantV || gotMAC != wantMAC {
				t.Fatalf("%s %s: sealer gave\n%s (mac %s)\nwant\n%s (mac %s)", name, typ, gotV, gotMAC, wantV, wantMAC)
			}
			if got, ok, err := k.unseal(gotV); err != nil || !ok || got.Seq != 4242 || got.MAC != gotMAC {
				t.Fatalf("%s %s: unseal(sealer's value) = %+v, %v, %v", name, typ, got, ok, err)
			}
			prev = gotMAC
		}
	}
}

// outcomeHook is a store whose outcome lookup runs hook once, after it
// has read that intent has none yet: a write landing between Follow's
// look at a running call and its read of the records after it.
type outcomeHook struct {
	store
	intent uint64
	once   sync.Once
	hook   func()
}

func (h *outcomeHook) outcome(intent uint64) (row, bool, error) {
	v, ok, err := h.store.outcome(intent)
	if intent == h.intent && !ok && err == nil {
		h.once.Do(h.hook)
	}
	return v, ok, err
}

// A call passed as running is passed again, complete, before a call
// written after its outcome, even when both are written while Follow
// looks at the running call.
func TestFollowPassesAFinishedCallBeforeTheCallsAfterIt(t *testing.T) {
	f := newFixture(t)
	w := f.open()
	defer w.Close()
	p, err := w.Begin(context.Background(), allowed("s1", "github"))
	if err != nil {
		t.Fatal(err)
	}
	o := f.opts
	o.ReadOnly, o.WriterAlive = true, func() bool { return true }
	r, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var later uint64
	r.st = &outcomeHook{store: r.st, intent: p.Seq(), hook: func() {
		// On Follow's goroutine: t.Error, not t.Fatal.
		if err := p.Finish(context.Background(), Record{Decision: Allow, Status: 200}); err != nil {
			t.Error(err)
		}
		var err error
		if later, err = w.Write(context.Background(), denied("s1", "github")); err != nil {
			t.Error(err)
		}
		if _, err := w.Query(Filter{}); err != nil { // in SQLite, where r reads
			t.Error(err)
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Record, 16)
	done := make(chan error, 1)
	go func() {
		done <- r.Follow(ctx, Filter{}, func(recs []Record) error {
			for _, rec := range recs {
				got <- rec
			}
			return nil
		})
	}()
	var seen []string
	for len(seen) < 3 {
		select {
		case rec := <-got:
			seen = append(seen, fmt.Sprintf("%d %s", rec.Seq, rec.Decision))
		case err := <-done:
			t.Fatalf("Follow returned %v; passed %q", err, seen)
		case <-time.After(20 * time.Second):
			t.Fatalf("Follow passed %q, want three records", seen)
		}
	}
	want := []string{fmt.Sprintf("%d running", p.Seq()), fmt.Sprintf("%d allow", p.Seq()), fmt.Sprintf("%d deny", later)}
	if !slices.Equal(seen, want) {
		t.Fatalf("Follow passed %q, want %q: the finished call before the one written after it", seen, want)
	}
}
