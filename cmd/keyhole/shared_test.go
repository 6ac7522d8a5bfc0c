package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/keyhole-dev/keyhole/server/servertest"
)

// sharedConfig has a scope without a call limit and one with max_calls.
const sharedConfig = `version: 1
tools:
  tracker:
    kind: http
    base_url: %s
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  triage:
    ttl: 1h
    max_denials: 1000
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues, /issues/*]}
  limited:
    ttl: 1h
    max_calls: %d
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues/*]}
`

// sharedHome is a home whose commands use one PostgreSQL store: a master
// key in the environment, KEYHOLE_STORE, a migrated store with the secret.
func sharedHome(t *testing.T, upstream string, maxCalls int) *home {
	t.Helper()
	url := servertest.PostgresURL(t)
	h := newHome(t)
	key := make([]byte, 32)
	rand.Read(key)
	h.env = append(h.env, "KEYHOLE_MASTER_KEY="+base64.StdEncoding.EncodeToString(key), "KEYHOLE_STORE="+url)
	h.writeConfig(sharedConfig, upstream, maxCalls)
	r := h.ok("", "store", "migrate")
	if !strings.Contains(r.stdout, "created the store's vault") {
		t.Fatalf("store migrate: %s", r.stdout)
	}
	h.ok(cliSecret, "secret", "set", "github_token")
	return h
}

// broker is one `keyhole serve` of a shared store.
type broker struct {
	name, dir, url string
	cmd            *exec.Cmd
}

// startBroker starts a broker with its own data dir and replica name.
func startBroker(t *testing.T, h *home, name string) *broker {
	t.Helper()
	dir := filepath.Join(h.dir, "brokers", name)
	cmd, url := startServe(t, h, "--data-dir", dir, "--replica", name, "--lease-ttl", "3s")
	return &broker{name: name, dir: dir, url: url, cmd: cmd}
}

// sessionNew starts a session through the store (no broker owns the
// default data dir) and returns its id and token.
func sessionNew(t *testing.T, h *home, scope string) (id, token string) {
	t.Helper()
	var s struct{ ID, Token string }
	out := h.ok("", "session", "new", "--scope", scope, "--json").stdout
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Token == "" {
		t.Fatalf("session new --json = %q (%v)", out, err)
	}
	return s.ID, s.Token
}

// sharedRecord is what the test reads of an audit record.
type sharedRecord struct {
	Replica  string `json:"replica"`
	Seq      uint64 `json:"seq"`
	Session  string `json:"session"`
	Tool     string `json:"tool"`
	Path     string `json:"path"`
	Decision string `json:"decision"`
	Code     string `json:"code"`
	Status   int    `json:"status"`
}

func sharedRecords(t *testing.T, h *home, args ...string) []sharedRecord {
	t.Helper()
	r := h.ok("", append([]string{"audit", "tail", "-n", "0", "--json"}, args...)...)
	var out []sharedRecord
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for {
		var rec sharedRecord
		if err := dec.Decode(&rec); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("audit tail --json: %v\n%s", err, r.stdout)
		}
		out = append(out, rec)
	}
}

// TestThreeBrokersShareOnePostgres runs three brokers on one PostgreSQL
// store through the binary: a token made anywhere works on every broker,
// a revocation through one ends the session on the others at their next
// call, max_calls is exact under concurrent calls spread over all three,
// and a broker killed with SIGKILL mid-load loses no record: its calls
// in flight are marked interrupted by another broker once its lease
// expires, and every chain verifies.
func TestThreeBrokersShareOnePostgres(t *testing.T) {
	const maxCalls = 25
	up := newMarkerUpstream(t)
	h := sharedHome(t, up.URL, maxCalls)
	brokers := []*broker{startBroker(t, h, "b1"), startBroker(t, h, "b2"), startBroker(t, h, "b3")}

	t.Run("a token works on every broker", func(t *testing.T) {
		_, tok := sessionNew(t, h, "triage")
		for i, b := range brokers {
			c := connect(t, b.url, tok)
			res, err := call(c, fmt.Sprintf("/issues/%d", 1+i))
			if err != nil || res.IsError {
				t.Fatalf("call through %s with a token made by session new: %v %s", b.name, err, resultText(res))
			}
		}
	})

	t.Run("a revocation through one broker ends the session on the others", func(t *testing.T) {
		id, tok := sessionNew(t, h, "triage")
		clients := make([]*client.Client, len(brokers))
		for i, b := range brokers {
			clients[i] = connect(t, b.url, tok)
			if res, err := call(clients[i], fmt.Sprintf("/issues/%d", 10+i)); err != nil || res.IsError {
				t.Fatalf("call through %s before the revocation: %v %s", b.name, err, resultText(res))
			}
		}
		before := up.count()
		h.ok("", "--data-dir", brokers[0].dir, "session", "revoke", id) // through b1's socket
		for i, b := range brokers {
			res, err := call(clients[i], "/issues/20")
			if err == nil && !res.IsError {
				t.Fatalf("call through %s after the revocation through b1 succeeded: %s", b.name, resultText(res))
			}
			if err == nil && !strings.Contains(resultText(res), "revoked") {
				t.Fatalf("call through %s after the revocation: %s, want it to say revoked", b.name, resultText(res))
			}
		}
		if got := up.count(); got != before {
			t.Fatalf("the upstream received %d requests after the revocation", got-before)
		}
		// The store's own view, from a host with no broker, and b3's.
		for _, args := range [][]string{{"session", "show", id, "--json"}, {"--data-dir", brokers[2].dir, "session", "show", id, "--json"}} {
			var s struct{ State string }
			if err := json.Unmarshal([]byte(h.ok("", args...).stdout), &s); err != nil || s.State != "revoked" {
				t.Fatalf("keyhole %s = %+v (%v), want revoked", strings.Join(args, " "), s, err)
			}
		}
		if r := h.ok("", "secret", "list"); !strings.Contains(r.stdout, "github_token") {
			t.Fatalf("secret list through the store: %s", r.stdout)
		}
	})

	t.Run("max_calls is exact across brokers under concurrent load", func(t *testing.T) {
		id, tok := sessionNew(t, h, "limited")
		const perBroker, workers, callsEach = 3, 3, 5 // 45 calls for 25 allowed
		var allowed, refused atomic.Int64
		var wg sync.WaitGroup
		for _, b := range brokers {
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := servertest.ConnectHTTP(b.url, tok, "limited-"+b.name)
					if err != nil {
						t.Errorf("connect to %s: %v", b.name, err)
						return
					}
					defer c.Close()
					for k := range callsEach * perBroker / 3 {
						res, err := call(c, fmt.Sprintf("/issues/%d", 1000+w*100+k))
						switch {
						case err != nil:
							t.Errorf("call through %s: %v", b.name, err)
							return
						case res.IsError:
							if !strings.Contains(resultText(res), "has used all") {
								t.Errorf("a refused call through %s says %q, want max_calls", b.name, resultText(res))
							}
							refused.Add(1)
						default:
							allowed.Add(1)
						}
					}
				}()
			}
		}
		wg.Wait()
		if allowed.Load() != maxCalls || refused.Load() != 3*workers*callsEach-maxCalls {
			t.Fatalf("allowed %d, refused %d of %d calls; want exactly %d allowed", allowed.Load(), refused.Load(), 3*workers*callsEach, maxCalls)
		}
		var inAudit int
		for _, r := range sharedRecords(t, h, "--session", id) {
			if r.Tool == "tracker" && r.Decision == "allow" {
				inAudit++
			}
		}
		if inAudit != maxCalls {
			t.Fatalf("the audit holds %d allowed calls of the session, want %d", inAudit, maxCalls)
		}
	})

	t.Run("a broker killed mid-load loses no record", func(t *testing.T) {
		_, tok := sessionNew(t, h, "triage")
		victim := brokers[1]
		var next atomic.Int64
		next.Store(100000)
		var succeeded, through sync.Map // marker -> broker
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var started sync.WaitGroup
		for _, b := range brokers {
			for range 3 {
				wg.Add(1)
				started.Add(1)
				go func() {
					defer wg.Done()
					c, err := servertest.ConnectHTTP(b.url, tok, "load-"+b.name)
					started.Done()
					if err != nil {
						t.Errorf("connect to %s: %v", b.name, err)
						return
					}
					defer c.Close()
					for {
						select {
						case <-stop:
							return
						default:
						}
						n := int(next.Add(1))
						through.Store(n, b.name)
						res, err := call(c, fmt.Sprintf("/issues/%d", n))
						if err != nil {
							if b != victim {
								t.Errorf("call through %s (alive): %v", b.name, err)
							}
							return
						}
						if res.IsError {
							t.Errorf("call %d through %s failed: %s", n, b.name, resultText(res))
							return
						}
						succeeded.Store(n, b.name)
					}
				}()
			}
		}
		started.Wait()
		// Kill while the upstream holds a call of the victim in flight.
		inFlight := func() bool {
			_, unanswered := up.snapshot()
			for n := range unanswered {
				if b, ok := through.Load(n); ok && b == victim.name {
					return true
				}
			}
			return false
		}
		for deadline := time.Now().Add(time.Minute); !inFlight() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if err := victim.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		victim.cmd.Wait()
		time.Sleep(200 * time.Millisecond) // let the survivors go on under load a little
		close(stop)
		wg.Wait()

		// Another broker records the dead one's open calls as interrupted
		// once its lease (3s) has expired.
		var recs []sharedRecord
		for deadline := time.Now().Add(2 * time.Minute); ; {
			recs = sharedRecords(t, h)
			running := 0
			for _, r := range recs {
				if r.Replica == victim.name && r.Decision == "running" {
					running++
				}
			}
			if running == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d calls of the killed broker still read running two minutes after its death", running)
			}
			time.Sleep(200 * time.Millisecond)
		}
		received, _ := up.snapshot()
		byPath := map[string]sharedRecord{}
		for _, r := range recs {
			if r.Tool == "tracker" {
				byPath[r.Path] = r
			}
		}
		interrupted := 0
		for n := range received {
			if n < 100000 {
				continue
			}
			r, ok := byPath[fmt.Sprintf("/issues/%d", n)]
			if !ok {
				t.Fatalf("the upstream received call %d, the audit has no record of it", n)
			}
			if r.Decision == "interrupted" {
				interrupted++
				if r.Replica != victim.name {
					t.Fatalf("call %d through %s reads interrupted", n, r.Replica)
				}
			}
		}
		succeeded.Range(func(k, v any) bool {
			if r := byPath[fmt.Sprintf("/issues/%d", k.(int))]; r.Decision != "allow" || r.Status != 200 {
				t.Errorf("call %d returned its result through %s; its record reads %+v", k.(int), v, r)
			}
			return true
		})
		if interrupted == 0 {
			t.Fatal("no call of the killed broker reads interrupted: the kill landed on no call in flight")
		}
		// The dead broker starts again on its chain.
		brokers[1] = startBroker(t, h, victim.name)
	})

	r := h.run("", "audit", "verify")
	if r.code != 0 || !strings.Contains(r.stdout, "replica b1: audit log ok") || !strings.Contains(r.stdout, "replica b2: audit log ok") || !strings.Contains(r.stdout, "replica b3: audit log ok") {
		t.Fatalf("audit verify --store: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// count is how many requests the upstream received.
func (u *markerUpstream) count() int {
	received, _ := u.snapshot()
	n := 0
	for _, c := range received {
		n += c
	}
	return n
}

// Every broker of a shared store must load the same keyhole.yaml: one that
// loaded another version refuses the calls of a session started under
// the other, saying so, and leaves the session to the brokers that can
// serve it.
func TestABrokerWithAnotherConfigRefusesTheSession(t *testing.T) {
	up := newMarkerUpstream(t)
	h := sharedHome(t, up.URL, 5)
	same := startBroker(t, h, "same")
	other := newHome(t)
	other.env = h.env
	other.writeConfig(sharedConfig, up.URL, 6) // another max_calls: another hash
	cmd, url := startServe(t, other, "--replica", "other", "--data-dir", filepath.Join(other.dir, "data"))
	defer cmd.Process.Kill()

	_, tok := sessionNew(t, h, "limited")
	req, _ := http.NewRequest("POST", url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(string(body), "every broker of a shared store must load the same keyhole.yaml") {
		t.Fatalf("a request to the broker with another config: %d %s, want 421 saying why", resp.StatusCode, body)
	}
	if r := other.run("", "audit", "tail", "-n", "0", "--json", "--replica", "other"); !strings.Contains(r.stdout, "every broker of a shared store must load the same keyhole.yaml") {
		t.Fatalf("the refusal is not audited with its reason:\n%s%s", r.stdout, r.stderr)
	}
	c := connect(t, same.url, tok)
	if res, err := call(c, "/issues/1"); err != nil || res.IsError {
		t.Fatalf("the session through a broker of its config: %v %s", err, resultText(res))
	}
}

// store migrate --from moves a real embedded install into PostgreSQL: its
// secrets, its sessions (their tokens keep working) and its audit chain,
// verified; a broker of the store goes on with them.
func TestStoreMigrateMovesAnEmbeddedInstall(t *testing.T) {
	up := newMarkerUpstream(t)
	h := brokerHome(t, up.URL)
	serve, url := startServe(t, h)
	id, tok := h.newToken("triage")
	c := connect(t, url, tok)
	for i := range 5 {
		if res, err := call(c, fmt.Sprintf("/issues/%d", i)); err != nil || res.IsError {
			t.Fatalf("call before the move: %v %s", err, resultText(res))
		}
	}
	c.Close()
	h.ok("", "stop")
	serve.Wait()
	before := h.ok("", "audit", "verify").stdout

	store := servertest.PostgresURL(t)
	dataDir := filepath.Join(h.dir, "data", "keyhole")
	r := h.ok("", "store", "migrate", "--from", dataDir, "--to", store, "--replica", "moved", "--json")
	var res struct {
		Secrets, Sessions int
		Audit             int `json:"audit_entries"`
		Verified          struct{ OK bool }
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Secrets != 1 || res.Sessions != 1 || res.Audit < 10 || !res.Verified.OK {
		t.Fatalf("store migrate --from = %s (%v)", r.stdout, err)
	}
	if r := h.run("", "store", "migrate", "--from", dataDir, "--to", store, "--replica", "again"); r.code == 0 || !strings.Contains(r.stderr, "already holds a vault") {
		t.Fatalf("a second move into the same store: exit %d %s", r.code, r.stderr)
	}
	if after := h.ok("", "audit", "verify").stdout; after != before {
		t.Fatalf("the data dir's log changed: %q, then %q", before, after)
	}

	h.env = append(h.env, "KEYHOLE_STORE="+store)
	b := startBroker(t, h, "moved")
	c = connect(t, b.url, tok) // the token made before the move
	if res, err := call(c, "/issues/77"); err != nil || res.IsError {
		t.Fatalf("call after the move with the old token: %v %s", err, resultText(res))
	}
	found := false
	for _, rec := range sharedRecords(t, h, "--session", id) {
		found = found || rec.Path == "/issues/77" && rec.Replica == "moved" && rec.Decision == "allow"
	}
	if !found {
		t.Fatal("the call after the move is not in the moved chain")
	}
	if r := h.run("", "audit", "verify"); r.code != 0 || !strings.Contains(r.stdout, "replica moved: audit log ok") {
		t.Fatalf("audit verify of the moved chain: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Commands that work on files of the data dir say so with a store, and
// store migrate needs one.
func TestCommandsOfTheDataDirRefuseAStore(t *testing.T) {
	h := newHome(t)
	if r := h.run("", "store", "migrate"); r.code != 2 || !strings.Contains(r.stderr, "needs the store") {
		t.Fatalf("store migrate without a store: exit %d %s", r.code, r.stderr)
	}
	h.env = append(h.env, "KEYHOLE_STORE=postgres://keyhole@db.invalid/keyhole")
	for _, args := range [][]string{{"audit", "archive"}, {"secret", "rekey"}} {
		if r := h.run("", args...); r.code != 1 || !strings.Contains(r.stderr, "PostgreSQL") {
			t.Fatalf("keyhole %s with a store: exit %d %s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// gatedConfig adds a scope whose writes wait for a person's approval.
const gatedConfig = sharedConfig + `  gated:
    ttl: 1h
    approval: {wait: 2m, ttl: 10m}
    grants:
      - {tool: tracker, methods: [POST], paths: [/issues/*], approve: true}
`

// An access request held by one broker of a shared store is listed by
// any, and answered through any: another broker's socket, or the store
// itself from a host with no broker; the broker that holds the call
// applies the answer and the held call proceeds.
func TestAccessRequestsAreAnsweredThroughAnyBroker(t *testing.T) {
	up := newMarkerUpstream(t)
	url := servertest.PostgresURL(t)
	h := newHome(t)
	key := make([]byte, 32)
	rand.Read(key)
	h.env = append(h.env, "KEYHOLE_MASTER_KEY="+base64.StdEncoding.EncodeToString(key), "KEYHOLE_STORE="+url)
	h.writeConfig(gatedConfig, up.URL, 5)
	h.ok("", "store", "migrate")
	h.ok(cliSecret, "secret", "set", "github_token")
	b1, b2 := startBroker(t, h, "b1"), startBroker(t, h, "b2")
	_, tok := sessionNew(t, h, "gated")
	c := connect(t, b1.url, tok)

	for i, answer := range [][]string{
		{"--data-dir", b2.dir, "access", "approve"}, // through b2's socket
		{"access", "approve"},                       // through the store, no broker here
	} {
		path := fmt.Sprintf("/issues/%d", 500+i)
		result := make(chan string, 1)
		go func() {
			req := mcp.CallToolRequest{}
			req.Params.Name = "tracker"
			req.Params.Arguments = map[string]any{"method": "POST", "path": path}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := c.CallTool(ctx, req)
			if err != nil {
				result <- "error: " + err.Error()
				return
			}
			result <- resultText(res)
		}()
		var id string
		for deadline := time.Now().Add(time.Minute); id == ""; time.Sleep(50 * time.Millisecond) {
			type listed struct {
				ID, Replica, State string
				Call               struct{ Path string }
			}
			r := h.ok("", "access", "list", "--json")
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			for {
				var l listed
				if err := dec.Decode(&l); err == io.EOF {
					break
				} else if err != nil {
					t.Fatalf("access list --json through the store: %v\n%s", err, r.stdout)
				}
				if l.Call.Path == path && l.State == "open" {
					if l.Replica != "b1" {
						t.Fatalf("the request of a call held by b1 is listed under replica %q", l.Replica)
					}
					id = l.ID
				}
			}
			if id != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no open request for %s listed through the store in a minute", path)
			}
		}
		r := h.ok("", append(answer, id, "--yes")...)
		if !strings.Contains(r.stdout, "approved "+id) {
			t.Fatalf("keyhole %s: %s", strings.Join(answer, " "), r.stdout)
		}
		if got := <-result; !strings.Contains(got, fmt.Sprintf(`"number":%d`, 500+i)) {
			t.Fatalf("the held call after the approval through %v: %s", answer, got)
		}
	}
	var approvals int
	for _, r := range sharedRecords(t, h, "--replica", "b1") {
		if r.Tool == "keyhole.access.approve" {
			approvals++
		}
	}
	if approvals != 2 {
		t.Fatalf("b1's chain holds %d approvals, want 2", approvals)
	}
}
