package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]Options{
		"short key":    {Path: filepath.Join(dir, "a.db"), Key: make([]byte, 16)},
		"unknown mode": {Path: filepath.Join(dir, "b.db"), Key: testKey, Arguments: "some"},
		"no path":      {Key: testKey},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			if l, err := Open(opts); err == nil {
				l.Close()
				t.Fatalf("Open(%+v) = nil error, want one", opts)
			}
		})
	}
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	fi, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("audit file mode = %v, want 0600", perm)
	}
}

func TestWriteThenGet(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	rec := denied("s1", "github")
	rec.Duration = 3 * time.Millisecond
	seq := mustWrite(t, l, rec)
	if seq != 1 {
		t.Fatalf("first Write seq = %d, want 1", seq)
	}
	got, err := l.Get(seq)
	if err != nil {
		t.Fatalf("Get(%d) = %v", seq, err)
	}
	want := rec
	want.Seq, want.Time = 1, t0
	want.Args = json.RawMessage(`{"method":"DELETE","path":"/repos/acme/api"}`)
	want.ArgsSHA256 = got.ArgsSHA256
	want.Prev, want.MAC = "", got.MAC
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Get(%d) =\n%+v\nwant\n%+v", seq, got, want)
	}
	if len(got.MAC) != 64 || len(got.ArgsSHA256) != 64 {
		t.Fatalf("Get(%d) mac=%q args_sha256=%q, want 64 hex digits each", seq, got.MAC, got.ArgsSHA256)
	}
	if _, err := l.Get(99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(99) = %v, want ErrNotFound", err)
	}
}

func TestWriteRejectsNonFinalDecision(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	for _, d := range []Decision{"", Interrupted, Running, "maybe"} {
		rec := denied("s", "github")
		rec.Decision = d
		if _, err := l.Write(context.Background(), rec); err == nil {
			t.Errorf("Write(decision %q) = nil error, want one", d)
		}
	}
	if _, err := l.Begin(context.Background(), denied("s", "github")); err == nil {
		t.Errorf("Begin(decision deny) = nil error, want one")
	}
}

func TestBeginFinishReadsAsOneRecord(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	ctx := context.Background()
	p, err := l.Begin(ctx, allowed("s1", "github"))
	if err != nil {
		t.Fatalf("Begin = %v", err)
	}
	recs := mustQuery(t, l, Filter{})
	if len(recs) != 1 || recs[0].Decision != Running {
		t.Fatalf("Query during the call = %+v, want one record with decision %q", recs, Running)
	}
	out := allowed("s1", "github")
	out.Session, out.Tool = "ignored", "ignored" // Finish takes only the outcome fields
	out.Status, out.BytesIn, out.BytesOut, out.Duration, out.Scrubbed = 200, 10, 20, time.Second, true
	if err := p.Finish(ctx, out); err != nil {
		t.Fatalf("Finish = %v", err)
	}
	if err := p.Finish(ctx, out); err == nil {
		t.Fatalf("second Finish = nil error, want one")
	}
	recs = mustQuery(t, l, Filter{})
	if len(recs) != 1 {
		t.Fatalf("Query after the call = %d records, want 1: %+v", len(recs), recs)
	}
	r := recs[0]
	if r.Seq != p.Seq() || r.Decision != Allow || r.Status != 200 || r.BytesIn != 10 || r.BytesOut != 20 ||
		r.Duration != time.Second || !r.Scrubbed || r.Session != "s1" || r.Tool != "github" ||
		r.Grant != "triage[0]" || r.Credential != "github_token" || r.CredVersion != 2 {
		t.Fatalf("merged record = %+v", r)
	}
	// Prev/MAC are those of the outcome entry (seq 2), which follows the intent.
	intent, _, _ := l.macAt(1)
	if r.Prev != intent || r.MAC == intent || r.MAC == "" {
		t.Fatalf("merged record prev=%s mac=%s, want prev = intent mac %s", r.Prev, r.MAC, intent)
	}
	for _, seq := range []uint64{1, 2} {
		got, err := l.Get(seq)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("Get(%d) = %+v, %v; want the merged record %+v", seq, got, err, r)
		}
	}
}

func TestDanglingIntentReadsInterruptedAfterReopen(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	if _, err := l.Begin(context.Background(), allowed("s1", "github")); err != nil {
		t.Fatalf("Begin = %v", err)
	}
	mustWrite(t, l, denied("s1", "github"))
	if err := l.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	l = f.open()
	defer l.Close()
	recs := mustQuery(t, l, Filter{})
	if len(recs) != 2 || recs[0].Decision != Interrupted || recs[1].Decision != Deny {
		t.Fatalf("records after reopen = %+v, want [interrupted, deny]", recs)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Entries != 3 || rep.Head != 3 {
		t.Fatalf("Verify after reopen = %+v, want ok with 3 entries (intent, deny, interrupted outcome)", rep)
	}
	// Reopening again adds nothing: the intent has its outcome now.
	l.Close()
	l = f.open()
	if rep := mustVerify(t, l); rep.Entries != 3 {
		t.Fatalf("Verify after second reopen = %+v, want 3 entries", rep)
	}
}

func TestArgumentModes(t *testing.T) {
	big := `{"body":"` + strings.Repeat("é", MaxArgs) + `"}`
	tests := map[string]struct {
		mode     string
		args     string
		wantArgs string // "" means absent
		wantHash bool
	}{
		"full keeps small args compact": {ArgsFull, `{ "a" : 1 }`, `{"a":1}`, true},
		"default is full":               {"", `{"a":1}`, `{"a":1}`, true},
		"full truncates large args":     {ArgsFull, big, "prefix", true},
		"full keeps non-JSON as string": {ArgsFull, `{oops`, `"{oops"`, true},
		"hashed keeps only the hash":    {ArgsHashed, `{"a":1}`, "", true},
		"none keeps nothing":            {ArgsNone, `{"a":1}`, "", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.opts.Arguments = tc.mode
			l := f.open()
			defer l.Close()
			rec := denied("s", "github")
			rec.Args = json.RawMessage(tc.args)
			got, err := l.Get(mustWrite(t, l, rec))
			if err != nil {
				t.Fatal(err)
			}
			switch tc.wantArgs {
			case "":
				if got.Args != nil {
					t.Fatalf("args = %s, want none", got.Args)
				}
			case "prefix":
				var s string
				if err := json.Unmarshal(got.Args, &s); err != nil || len(s) > MaxArgs || !strings.HasPrefix(big, s) || len(s) < MaxArgs-4 {
					t.Fatalf("args = %.80s… (%d bytes), want a JSON string of the first ~%d bytes", got.Args, len(got.Args), MaxArgs)
				}
			default:
				if string(got.Args) != tc.wantArgs {
					t.Fatalf("args = %s, want %s", got.Args, tc.wantArgs)
				}
			}
			if (got.ArgsSHA256 != "") != tc.wantHash {
				t.Fatalf("args_sha256 = %q, want present=%v", got.ArgsSHA256, tc.wantHash)
			}
		})
	}
}

func TestQueryFilters(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	// seq: 1 deny s1/github; 2-3 allow s1/github; 4 deny s2/s3; 5-6 allow s2/github; 7 deny s1/s3
	mustWrite(t, l, denied("s1", "github"))
	f.clock.Add(time.Minute)
	mustCall(t, l, allowed("s1", "github"), 200)
	f.clock.Add(time.Minute)
	mustWrite(t, l, denied("s2", "archive"))
	f.clock.Add(time.Minute)
	mustCall(t, l, allowed("s2", "github"), 404)
	f.clock.Add(time.Minute)
	mustWrite(t, l, denied("s1", "archive"))
	tests := map[string]struct {
		f    Filter
		want []uint64
	}{
		"all":                       {Filter{}, []uint64{1, 2, 4, 5, 7}},
		"session":                   {Filter{Session: "s1"}, []uint64{1, 2, 7}},
		"session is exact":          {Filter{Session: "S1"}, []uint64{}},
		"tool":                      {Filter{Tool: "archive"}, []uint64{4, 7}},
		"session and tool":          {Filter{Session: "s1", Tool: "github"}, []uint64{1, 2}},
		"decision":                  {Filter{Decision: Allow}, []uint64{2, 5}},
		"session decision":          {Filter{Session: "s2", Decision: Deny}, []uint64{4}},
		"scope":                     {Filter{Scope: "triage"}, []uint64{1, 2, 4, 5, 7}},
		"since":                     {Filter{Since: t0.Add(2 * time.Minute)}, []uint64{4, 5, 7}},
		"until":                     {Filter{Until: t0.Add(2 * time.Minute)}, []uint64{1, 2}},
		"since and until":           {Filter{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, []uint64{2, 4}},
		"time and decision":         {Filter{Since: t0.Add(time.Minute), Decision: Deny}, []uint64{4, 7}},
		"last two":                  {Filter{Limit: 2}, []uint64{5, 7}},
		"last two of tool github":   {Filter{Tool: "github", Limit: 2}, []uint64{2, 5}},
		"last one since":            {Filter{Since: t0, Limit: 1}, []uint64{7}},
		"after seq":                 {Filter{AfterSeq: 2}, []uint64{4, 5, 7}},
		"after an intent's seq":     {Filter{AfterSeq: 4, Session: "s2"}, []uint64{5}},
		"before seq":                {Filter{BeforeSeq: 5}, []uint64{1, 2, 4}},
		"last two before seq":       {Filter{BeforeSeq: 7, Limit: 2}, []uint64{4, 5}},
		"last one before an intent": {Filter{BeforeSeq: 5, Session: "s1", Limit: 1}, []uint64{2}},
		"between seqs":              {Filter{AfterSeq: 1, BeforeSeq: 7}, []uint64{2, 4, 5}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := seqs(mustQuery(t, l, tc.f))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Query(%+v) seqs = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
	recs := mustQuery(t, l, Filter{Session: "s2", Tool: "github"})
	if len(recs) != 1 || recs[0].Status != 404 || recs[0].Decision != Allow {
		t.Fatalf("Query(s2/github) = %+v, want the merged call with status 404", recs)
	}
}

func TestBeginFailsWhenStoreFails(t *testing.T) {
	tests := map[string]func(l *Log){
		"store closed underneath": func(l *Log) { l.st.close() },
		"file descriptor closed":  func(l *Log) { l.st.(*sqliteStore).wal.Close() },
	}
	for name, breakIt := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			l := f.open()
			defer l.Close()
			mustWrite(t, l, denied("s", "github"))
			breakIt(l)
			if _, err := l.Begin(context.Background(), allowed("s", "github")); err == nil {
				t.Fatalf("Begin on a broken store = nil error, want one")
			}
			if _, err := l.Write(context.Background(), denied("s", "github")); err == nil {
				t.Fatalf("Write after the failure = nil error, want one (fail closed)")
			}
		})
	}
}

// A checkpoint that cannot be written does not undo the durable intent it
// follows, but the log then fails closed: the next call is refused.
func TestCheckpointFailureFailsTheNextBegin(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	boom := errors.New("vault is read-only")
	f.cp.refuse(boom)
	p, err := l.Begin(context.Background(), allowed("s", "github"))
	if err != nil {
		t.Fatalf("Begin = %v, want the intent made durable", err)
	}
	// The checkpoint is written after the waiters are woken; wait for the
	// writer to have tried it.
	deadline := time.Now().Add(5 * time.Second)
	for l.failure() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := l.Begin(context.Background(), allowed("s", "github")); !errors.Is(err, boom) {
		t.Fatalf("Begin after a failed checkpoint = %v, want %v", err, boom)
	}
	if err := p.Finish(context.Background(), Record{Decision: Allow, Status: 200}); !errors.Is(err, boom) {
		t.Fatalf("Finish after a failed checkpoint = %v, want %v (fail closed)", err, boom)
	}
	f.cp.refuse(nil)
	recs := mustQuery(t, l, Filter{})
	if len(recs) != 1 || recs[0].Decision != Running {
		t.Fatalf("records = %+v, want the one intent, still running", recs)
	}
}

func TestClosedLog(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	checks := map[string]error{
		"Close": l.Close(),
	}
	_, checks["Write"] = l.Write(ctx, denied("s", "t"))
	_, checks["Begin"] = l.Begin(ctx, allowed("s", "t"))
	_, checks["Query"] = l.Query(Filter{})
	_, checks["Get"] = l.Get(1)
	_, checks["Verify"] = l.Verify()
	_, checks["Prune"] = l.Prune(t0)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed log = %v, want ErrClosed", name, err)
		}
	}
}

func TestReadOnlyRefusesWrites(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	mustWrite(t, l, denied("s", "github"))
	l.Close()
	before, _ := os.ReadFile(f.path)
	ro := f.openReadOnly()
	if _, err := ro.Write(context.Background(), denied("s", "github")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Write on a read-only log = %v, want ErrReadOnly", err)
	}
	if _, err := ro.Prune(t0.Add(time.Hour)); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Prune on a read-only log = %v, want ErrReadOnly", err)
	}
	if got := mustQuery(t, ro, Filter{}); len(got) != 1 {
		t.Fatalf("read-only Query = %+v, want 1 record", got)
	}
	after, _ := os.ReadFile(f.path)
	if !bytes.Equal(before, after) {
		t.Fatalf("read-only open changed the file")
	}
}

func TestMirrorGetsEveryEntry(t *testing.T) {
	f := newFixture(t)
	f.opts.Mirror = filepath.Join(t.TempDir(), "audit.jsonl")
	l := f.open()
	mustWrite(t, l, denied("s1", "github"))
	mustCall(t, l, allowed("s1", "github"), 200)
	l.Close()
	data, err := os.ReadFile(f.opts.Mirror)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("mirror has %d lines, want 3 (call, intent, outcome):\n%s", len(lines), data)
	}
	for i, line := range lines {
		e, ok, err := macKey(testKey).unseal(line)
		if err != nil || !ok || e.Seq != uint64(i+1) {
			t.Fatalf("mirror line %d = %s: seq/MAC check failed (%v, %v)", i+1, line, ok, err)
		}
	}
}

func TestExport(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	defer l.Close()
	rec := denied("s1", "github")
	rec.Path = "=HYPERLINK(\"http://evil\")"
	mustWrite(t, l, rec)
	mustCall(t, l, allowed("s1", "github"), 200)

	var jl bytes.Buffer
	if err := l.Export(&jl, "jsonl", Filter{}); err != nil {
		t.Fatalf("Export(jsonl) = %v", err)
	}
	sc := bufio.NewScanner(&jl)
	var got []Record
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("jsonl line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if len(got) != 2 || got[0].Decision != Deny || got[1].Decision != Allow || got[1].Status != 200 {
		t.Fatalf("jsonl export = %+v", got)
	}

	var cv bytes.Buffer
	if err := l.Export(&cv, "csv", Filter{Decision: Deny}); err != nil {
		t.Fatalf("Export(csv) = %v", err)
	}
	rows, err := csv.NewReader(&cv).ReadAll()
	if err != nil {
		t.Fatalf("csv export does not parse: %v", err)
	}
	if len(rows) != 2 || rows[0][0] != "seq" || rows[1][0] != "1" || rows[1][16] != "deny" {
		t.Fatalf("csv export = %q", rows)
	}
	if path := rows[1][9]; path != `'=HYPERLINK("http://evil")` {
		t.Fatalf("csv path cell = %q, want it defused with a leading apostrophe", path)
	}
	if err := l.Export(&cv, "xml", Filter{}); err == nil {
		t.Fatalf("Export(xml) = nil error, want one")
	}
}

func TestConcurrentWritersAllRecordedChainVerifies(t *testing.T) {
	for name, delay := range map[string]time.Duration{"no linger": 0, "linger 2ms": 2 * time.Millisecond} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.opts.MaxBatchDelay = delay
			l := f.open()
			defer l.Close()
			concurrentWriters(t, l)
		})
	}
}

func concurrentWriters(t *testing.T, l *Log) {
	const writers, each = 64, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			session := "s" + string(rune('A'+w%26)) + string(rune('a'+w/26))
			for i := range each {
				if i%2 == 0 {
					if _, err := l.Write(ctx, denied(session, "github")); err != nil {
						errs <- err
						return
					}
					continue
				}
				p, err := l.Begin(ctx, allowed(session, "github"))
				if err == nil {
					out := allowed(session, "github")
					out.Status = 200
					err = p.Finish(ctx, out)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent write: %v", err)
	}
	recs := mustQuery(t, l, Filter{})
	if len(recs) != writers*each {
		t.Fatalf("Query = %d records, want %d", len(recs), writers*each)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Seq <= recs[i-1].Seq {
			t.Fatalf("records out of order at %d: %d after %d", i, recs[i].Seq, recs[i-1].Seq)
		}
		if recs[i].Decision != Allow && recs[i].Decision != Deny {
			t.Fatalf("record %d decision = %s", recs[i].Seq, recs[i].Decision)
		}
	}
	if got := len(mustQuery(t, l, Filter{Session: "sAa"})); got != each {
		t.Fatalf("Query(session sAa) = %d records, want %d", got, each)
	}
	rep := mustVerify(t, l)
	if !rep.OK || rep.Entries != writers*each*3/2 {
		t.Fatalf("Verify = %+v, want ok with %d entries", rep, writers*each*3/2)
	}
}

func TestPruneKeepsChainVerifiable(t *testing.T) {
	f := newFixture(t)
	l := f.open()
	at := func(h int) { f.clock.t = t0.Add(time.Duration(h) * time.Hour) }
	at(0)
	mustWrite(t, l, denied("s", "github")) // seq 1
	at(1)
	mustCall(t, l, allowed("s", "github"), 200) // seq 2, 3
	at(2)
	running, err := l.Begin(context.Background(), allowed("s", "github")) // seq 4, still running
	if err != nil {
		t.Fatal(err)
	}
	at(3)
	mustWrite(t, l, denied("s", "github")) // seq 5
	at(4)
	mustCall(t, l, allowed("s", "github"), 200) // seq 6, 7

	// Everything before +4h is old, but the running call at seq 4 stops the cut.
	n, err := l.Prune(t0.Add(4 * time.Hour))
	if err != nil {
		t.Fatalf("Prune = %v", err)
	}
	if n != 2 {
		t.Fatalf("Prune removed %d calls, want 2 (seq 1 and 2)", n)
	}
	recs := mustQuery(t, l, Filter{})
	if got, want := seqs(recs), []uint64{4, 5, 6}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after Prune seqs = %v, want %v", got, want)
	}
	if recs[0].Decision != Running {
		t.Fatalf("running call after Prune = %+v, want decision %s", recs[0], Running)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Entries != 4 {
		t.Fatalf("Verify after Prune = %+v, want ok with 4 entries", rep)
	}
	if err := running.Finish(context.Background(), allowed("s", "github")); err != nil { // seq 8
		t.Fatal(err)
	}
	// Now everything can go; the chain continues from the anchor.
	if n, err := l.Prune(t0.Add(24 * time.Hour)); err != nil || n != 3 {
		t.Fatalf("second Prune = %d, %v; want 3 calls", n, err)
	}
	if n, err := l.Prune(t0.Add(24 * time.Hour)); err != nil || n != 0 {
		t.Fatalf("third Prune = %d, %v; want 0 calls", n, err)
	}
	l.Close()
	l = f.open()
	defer l.Close()
	seq := mustWrite(t, l, denied("s", "github"))
	if seq != 9 {
		t.Fatalf("Write after pruning everything got seq %d, want 9", seq)
	}
	if rep := mustVerify(t, l); !rep.OK || rep.Entries != 1 || rep.Head != 9 {
		t.Fatalf("Verify after pruning everything = %+v, want ok, 1 entry, head 9", rep)
	}
}

func TestOpenRefusesCorruptFile(t *testing.T) {
	f := newFixture(t)
	if err := os.WriteFile(f.path, []byte("this is not an SQLite database, and not a keyhole audit log either....................................."), 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Open(f.opts); err == nil {
		l.Close()
		t.Fatalf("Open(corrupt file) = nil error, want a refusal")
	}
}
