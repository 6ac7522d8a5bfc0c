package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
)

// A report reads the chains of a store as one log: records and calls by
// time (a tie to the chain first by name), usage added up per key, and a
// seq only in a named chain.
func TestReportLogMergesEveryChainOfAStore(t *testing.T) {
	ctx := context.Background()
	url, keys, chains := sharedChains(t, "a", "b")
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, w := range []struct {
		replica string
		at      int
	}{{"a", 0}, {"b", 1}, {"a", 2}, {"b", 2}, {"a", 2}, {"b", 3}} {
		rec := audit.Record{Time: t0.Add(time.Duration(w.at) * time.Second), Session: "ses_1", Scope: "triage", Tool: "tracker",
			Decision: audit.Allow, Grant: "tracker: GET /issues/*", Credential: "github_token"}
		if _, err := chains[w.replica].Write(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	s, err := OpenSharedAudit(ctx, url, keys, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	src, err := s.ReportSources(nil, t0.Add(time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	const want = "a:1 b:1 a:2 a:3 b:2 b:3"
	var got []string
	err = src.Log.Stream(ctx, audit.Filter{Session: "ses_1"}, func(r audit.Record) error {
		got = append(got, recordName(r))
		return nil
	})
	if strings.Join(got, " ") != want || err != nil {
		t.Fatalf("Stream = %v, %v; want %s", got, err, want)
	}
	var times []time.Time
	err = src.Log.Calls(ctx, audit.CallFilter{Since: t0}, func(c audit.Call) error {
		times = append(times, c.Time)
		return nil
	})
	if len(times) != 6 || err != nil || !times[5].Equal(t0.Add(3*time.Second)) || times[3].Before(times[2]) {
		t.Fatalf("Calls = %v, %v; want the 6 calls by time", times, err)
	}
	var usage []audit.Usage
	err = src.Log.Usage(ctx, audit.UsageFilter{Credentials: []string{"github_token"}}, func(u audit.Usage) error {
		usage = append(usage, u)
		return nil
	})
	if err != nil || len(usage) != 1 || usage[0].Calls != 6 || !usage[0].First.Equal(t0) || !usage[0].Last.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("Usage = %+v, %v; want one group of 6 calls from t0 to t0+3s", usage, err)
	}

	stop := errors.New("enough")
	n := 0
	err = src.Log.Stream(ctx, audit.Filter{}, func(audit.Record) error {
		if n++; n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("Stream stopped by its callback = %v after %d records, want the callback's error after 2", err, n)
	}

	if _, err := src.Log.Get(2); !errors.Is(err, ErrAmbiguousSeq) {
		t.Fatalf("Get(2) over two chains = %v, want ErrAmbiguousSeq", err)
	}
	named, err := s.ReportSources(nil, t0, "b")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := named.Log.Get(2); err != nil || r.Replica != "b" || !r.Time.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("Get(2) of chain b = %+v, %v", r, err)
	}
	if _, err := s.ReportSources(nil, t0, "c"); err == nil || !strings.Contains(err.Error(), `no audit chain of replica "c"`) {
		t.Fatalf("ReportSources(get c) = %v, want an error naming the chains", err)
	}
}

func recordName(r audit.Record) string { return r.Replica + ":" + strconv.FormatUint(r.Seq, 10) }
