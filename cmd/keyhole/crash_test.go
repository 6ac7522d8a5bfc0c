package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// markerUpstream is an API that answers GET /issues/<marker> after holding
// the request a few milliseconds, and remembers every marker it received
// and which ones it had not yet answered.
type markerUpstream struct {
	*httptest.Server
	mu         sync.Mutex
	received   map[int]int      // marker -> requests received
	unanswered map[int]struct{} // markers received whose response is not yet written
	// hold, while set, keeps every request until it is closed, and each
	// held marker is sent on held (holdNew).
	hold chan struct{}
	held chan int
}

func newMarkerUpstream(t *testing.T) *markerUpstream {
	u := &markerUpstream{received: map[int]int{}, unanswered: map[int]struct{}{}}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/issues/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		u.mu.Lock()
		u.received[n]++
		u.unanswered[n] = struct{}{}
		hold, held := u.hold, u.held
		u.mu.Unlock()
		// Holding each request keeps calls in flight at the upstream, so a
		// kill lands between a call's intent and its outcome.
		if hold != nil {
			select {
			case held <- n:
			default:
			}
			<-hold
		} else {
			time.Sleep(time.Duration(5+n%20) * time.Millisecond)
		}
		u.mu.Lock()
		delete(u.unanswered, n)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"number":%d,"title":"ok"}`, n)
	}))
	t.Cleanup(u.Close)
	return u
}

// holdNew makes the upstream hold every request it receives from now on
// until release is called (at cleanup at the latest); held receives the
// marker of each held request.
func (u *markerUpstream) holdNew(t *testing.T) (held <-chan int, release func()) {
	hold, ch := make(chan struct{}), make(chan int, 64)
	u.mu.Lock()
	u.hold, u.held = hold, ch
	u.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			u.mu.Lock()
			u.hold, u.held = nil, nil
			u.mu.Unlock()
			close(hold)
		})
	}
	t.Cleanup(release)
	return ch, release
}

// snapshot returns the markers received so far and those not yet answered.
func (u *markerUpstream) snapshot() (received map[int]int, unanswered map[int]bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	received, unanswered = map[int]int{}, map[int]bool{}
	for n, c := range u.received {
		received[n] = c
	}
	for n := range u.unanswered {
		unanswered[n] = true
	}
	return received, unanswered
}

// crashRecord is the part of an audit record the crash test reconciles.
type crashRecord struct {
	Seq      uint64 `json:"seq"`
	Tool     string `json:"tool"`
	Session  string `json:"session"`
	Path     string `json:"path"`
	Decision string `json:"decision"`
	Status   int    `json:"status"`
	MAC      string `json:"mac"`
}

// crashRound is what one round of the crash test saw.
type crashRound struct {
	calls      int64        // tools/call requests the clients sent
	succeeded  map[int]bool // markers whose result a client received
	unanswered map[int]bool // markers the upstream held when the broker died
}

// TestInvariant6_CrashLosesNoRecord kills the broker with SIGKILL while
// eight streamable-HTTP clients call through it, restarts it, and after
// several rounds reconciles the audit log with what the upstream received
// and what the clients were told.
func TestInvariant6_CrashLosesNoRecord(t *testing.T) {
	up := newMarkerUpstream(t)
	h := brokerHome(t, up.URL)
	const rounds, clients = 5, 8
	var next atomic.Int64 // the next marker
	var all []crashRound
	for round := range rounds {
		all = append(all, crashOnce(t, h, up, round, clients, &next))
	}
	// A last start writes the outcome of the calls the last kill cut short;
	// SIGTERM then stops it cleanly.
	serve, _ := startServe(t, h)
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Fatalf("broker after the last crash did not stop cleanly: %v", err)
	}

	received, _ := up.snapshot()
	recs, changes := h.crashRecords(t)
	byMarker := indexCrashRecords(t, recs, received)
	calls := sumCalls(all)
	if int64(len(recs)) > calls {
		t.Errorf("the audit has %d records for %d calls sent", len(recs), calls)
	}
	for n, c := range received {
		if c != 1 {
			t.Errorf("upstream received marker %d %d times, want once", n, c)
		}
		if _, ok := byMarker[n]; !ok {
			t.Errorf("upstream received marker %d but the audit has no record of it", n)
		}
	}
	succeeded, heldAtKill := checkRounds(t, all, byMarker)
	if succeeded == 0 || heldAtKill == 0 {
		t.Fatalf("no round exercised the crash: %d results received, %d calls held upstream at a kill", succeeded, heldAtKill)
	}
	interrupted := 0
	for _, r := range recs {
		if r.Decision == "interrupted" {
			interrupted++
		}
	}

	r := h.run("", "audit", "verify", "--json")
	var rep struct {
		Entries  uint64 `json:"entries"`
		Head     uint64 `json:"head"`
		OK       bool   `json:"ok"`
		Problems []any  `json:"problems"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 0 || !rep.OK {
		t.Fatalf("audit verify after %d crashes = exit %d %q (%v), want ok", rounds, r.code, r.stdout, err)
	}
	// Each allowed call is an intent and an outcome: two entries, one
	// record; each change (init, secret set, session new) is one entry.
	if want := uint64(2*len(recs) + changes); rep.Entries != want || rep.Head != want {
		t.Fatalf("audit verify = %d entries, head %d; want %d (an intent and an outcome for each of %d records, and %d changes)", rep.Entries, rep.Head, want, len(recs), changes)
	}
	t.Logf("%d rounds, %d calls sent, upstream received %d, clients received %d results, %d records (%d interrupted, %d held upstream at a kill), %d entries verified",
		rounds, calls, len(received), succeeded, len(recs), interrupted, heldAtKill, rep.Entries)
}

// indexCrashRecords maps each record to its marker and checks that no
// marker has two records, and that every record is either interrupted or a
// complete allow (status 200) of a request the upstream received.
func indexCrashRecords(t *testing.T, recs []crashRecord, received map[int]int) map[int]crashRecord {
	t.Helper()
	byMarker := map[int]crashRecord{}
	for _, r := range recs {
		n, err := strconv.Atoi(strings.TrimPrefix(r.Path, "/issues/"))
		if err != nil {
			t.Fatalf("record %d has path %q, not a marker", r.Seq, r.Path)
		}
		if prev, dup := byMarker[n]; dup {
			t.Fatalf("marker %d has two records: %d and %d", n, prev.Seq, r.Seq)
		}
		byMarker[n] = r
		switch r.Decision {
		case "allow":
			if r.Status != http.StatusOK {
				t.Errorf("record %d (marker %d) is allow with status %d, want 200", r.Seq, n, r.Status)
			}
			if received[n] == 0 {
				t.Errorf("record %d (marker %d) is allow but the upstream never received it", r.Seq, n)
			}
		case "interrupted":
		default:
			t.Errorf("record %d (marker %d) has decision %q, want allow or interrupted", r.Seq, n, r.Decision)
		}
	}
	return byMarker
}

// checkRounds checks that every result a client received has a complete
// allow record and that every call the upstream held when the broker died
// reads as interrupted. It returns how many of each it checked.
func checkRounds(t *testing.T, rounds []crashRound, byMarker map[int]crashRecord) (succeeded, heldAtKill int) {
	t.Helper()
	for i, rd := range rounds {
		for n := range rd.succeeded {
			succeeded++
			if r, ok := byMarker[n]; !ok || r.Decision != "allow" || r.Status != http.StatusOK {
				t.Errorf("round %d: a client received the result of marker %d, but its record is %+v (found %v), want allow with status 200", i, n, r, ok)
			}
		}
		for n := range rd.unanswered {
			heldAtKill++
			if r := byMarker[n]; r.Decision != "interrupted" {
				t.Errorf("round %d: marker %d was held by the upstream when the broker died, but its record is %+v, want interrupted", i, n, r)
			}
		}
	}
	return succeeded, heldAtKill
}

// crashOnce starts the broker, drives clients through it and kills it with
// SIGKILL after a random 50–300 ms of calls.
func crashOnce(t *testing.T, h *home, up *markerUpstream, round, clients int, next *atomic.Int64) crashRound {
	t.Helper()
	serve, url := startServe(t, h)
	var sess struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	out := h.ok("", "session", "new", "--scope", "triage", "--json").stdout
	if err := json.Unmarshal([]byte(out), &sess); err != nil || sess.Token == "" {
		t.Fatalf("session new --json = %q (%v), want a token", out, err)
	}

	rd := crashRound{succeeded: map[int]bool{}}
	var mu sync.Mutex
	var calls atomic.Int64
	var ready, done sync.WaitGroup
	ready.Add(clients)
	for i := range clients {
		done.Add(1)
		go func() {
			defer done.Done()
			c, err := servertest.ConnectHTTP(url, sess.Token, "crash-agent-"+strconv.Itoa(i))
			ready.Done()
			if err != nil {
				t.Errorf("round %d client %d: %v", round, i, err)
				return
			}
			defer c.Close()
			for {
				n := int(next.Add(1))
				calls.Add(1)
				res, err := call(c, fmt.Sprintf("/issues/%d", n))
				if err != nil {
					return // the broker is gone
				}
				if res.IsError {
					t.Errorf("round %d: call for marker %d failed while the broker was up: %s", round, n, servertest.ResultText(res))
					return
				}
				if !strings.Contains(servertest.ResultText(res), fmt.Sprintf(`"number":%d`, n)) {
					t.Errorf("round %d: the result for marker %d is %q", round, n, servertest.ResultText(res))
				}
				mu.Lock()
				rd.succeeded[n] = true
				mu.Unlock()
			}
		}()
	}
	ready.Wait()
	// The kill lands at a random moment of the load, but never before a
	// client of the round has its result and while at least one call is
	// held at the upstream, however slow the machine: both are waited
	// for, not timed.
	time.Sleep(time.Duration(50+rand.IntN(251)) * time.Millisecond)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(rd.succeeded)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: no client received a result in a minute", round)
		}
	}
	held, release := up.holdNew(t)
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatalf("round %d: no call reached the upstream in a minute", round)
	}
	if err := serve.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	serve.Wait()
	// The broker is dead: a marker the upstream has not answered yet can
	// never have reached the broker's outcome.
	_, rd.unanswered = up.snapshot()
	release()
	done.Wait()
	rd.calls = calls.Load()
	return rd
}

// startServe starts `keyhole serve --http 127.0.0.1:0 [extra…]` in h and
// returns it with its MCP URL. The process is killed at cleanup if the test
// has not ended it.
func startServe(t *testing.T, h *home, extra ...string) (*exec.Cmd, string) {
	t.Helper()
	serve := exec.Command(binary, append([]string{"serve", "--http", "127.0.0.1:0"}, extra...)...)
	serve.Dir, serve.Env = h.dir, h.env
	stderr, err := serve.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if serve.ProcessState == nil {
			serve.Process.Kill()
			serve.Wait()
		}
	})
	return serve, waitForURL(t, stderr)
}

// crashRecords reads the audit records of calls through the binary, and
// counts those of the operator's changes (keyhole.session.new, …).
func (h *home) crashRecords(t *testing.T) (calls []crashRecord, changes int) {
	t.Helper()
	r := h.ok("", "audit", "tail", "-n", "100000", "--json")
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for {
		var rec crashRecord
		if err := dec.Decode(&rec); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("audit tail --json: %v\n%s", err, r.stdout)
		}
		if strings.HasPrefix(rec.Tool, "keyhole.") {
			changes++ // an operator's change, not a call
			continue
		}
		calls = append(calls, rec)
	}
	sort.Slice(calls, func(i, j int) bool { return calls[i].Seq < calls[j].Seq })
	return calls, changes
}

func sumCalls(rounds []crashRound) int64 {
	var n int64
	for _, r := range rounds {
		n += r.calls
	}
	return n
}
