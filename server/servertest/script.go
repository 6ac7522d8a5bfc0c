package servertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/mark3labs/mcp-go/client"
	"go.yaml.in/yaml/v3"
)

// Script is a scripted agent run, as an example keeps it in agent.json:
// the secrets to set, what the upstreams hold, and the calls each agent
// makes, when.
type Script struct {
	// Scope is the scope every agent's session runs.
	Scope string `json:"scope"`
	// Secrets are set in the vault before the run: test values, never
	// real ones.
	Secrets map[string]string `json:"secrets"`
	// HTTP is what the http tools' upstreams answer: by tool, a JSON body
	// per "METHOD /path" (the path under the tool's base_url). Any other
	// request gets 404.
	HTTP map[string]map[string]json.RawMessage `json:"http,omitempty"`
	// S3 holds the objects of the s3 tools' buckets: by bucket, key →
	// content.
	S3    map[string]map[string]string `json:"s3,omitempty"`
	Steps []ScriptStep                 `json:"steps"`
}

// ScriptStep is one call of the run.
type ScriptStep struct {
	// Agent is the name of the MCP client that makes the call, and Run
	// which of its runs: each run of an agent is one session, started at
	// its first call.
	Agent string `json:"agent"`
	Run   string `json:"run,omitempty"`
	// At is when the call is made, after the start of the run (a Go
	// duration).
	At   string         `json:"at"`
	Tool string         `json:"tool"`
	Args map[string]any `json:"args"`
	// Expect is "allow" or "deny": what the call must come to.
	Expect string `json:"expect"`
	// Incident marks the call the post-mortem is about.
	Incident bool   `json:"incident,omitempty"`
	Note     string `json:"note,omitempty"`
}

// LoadScript reads a script file.
func LoadScript(t testing.TB, path string) *Script {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s Script
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for i, st := range s.Steps {
		if _, err := time.ParseDuration(st.At); err != nil || st.Agent == "" || st.Tool == "" || st.Expect != "allow" && st.Expect != "deny" {
			t.Fatalf("%s: step %d (%+v): want an agent, a tool, at a Go duration, expect allow or deny", path, i, st)
		}
	}
	return &s
}

// Sessions returns the script's runs ("agent" or "agent#run") in the
// order they first act: each is one session.
func (s *Script) Sessions() []string {
	var out []string
	for _, st := range s.Steps {
		if !slices.Contains(out, st.session()) {
			out = append(out, st.session())
		}
	}
	return out
}

// session names the step's run: "agent", or "agent#run".
func (st ScriptStep) session() string {
	if st.Run == "" {
		return st.Agent
	}
	return st.Agent + "#" + st.Run
}

// Incident returns the step marked as the incident, and its index; -1
// when none is.
func (s *Script) Incident() (ScriptStep, int) {
	for i, st := range s.Steps {
		if st.Incident {
			return st, i
		}
	}
	return ScriptStep{}, -1
}

// LocalConfig starts the script's upstreams (an HTTP server per http tool
// answering from HTTP, an in-memory S3 store holding S3) and returns the
// config text with every tool pointed at them. They stop when the test
// ends.
func (s *Script) LocalConfig(t testing.TB, config []byte) []byte {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(config, &doc); err != nil {
		t.Fatal(err)
	}
	tools := mappingValue(mappingValue(doc.Content[0], "tools"), "")
	if tools == nil {
		t.Fatal("the config has no tools")
	}
	var s3URL string
	for i := 0; i+1 < len(tools.Content); i += 2 {
		name, tool := tools.Content[i].Value, tools.Content[i+1]
		if base := mappingValue(tool, "base_url"); base != nil {
			u, err := url.Parse(base.Value)
			if err != nil {
				t.Fatal(err)
			}
			up := NewUpstream(t, s.answer(name, u.Path))
			base.Value = up.URL + u.Path
		} else {
			if s3URL == "" {
				s3URL = s.startS3(t)
			}
			setScalar(tool, "endpoint", s3URL)
			setScalar(tool, "path_style", "true")
		}
		setScalar(tool, "allow_private_network", "true")
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// answer serves an http tool's upstream from the script.
func (s *Script) answer(tool, basePath string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		body, ok := s.HTTP[tool][r.Method+" "+strings.TrimPrefix(r.URL.Path, basePath)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}

func (s *Script) startS3(t testing.TB) string {
	backend := s3mem.New()
	for bucket, objects := range s.S3 {
		if err := backend.CreateBucket(bucket); err != nil {
			t.Fatal(err)
		}
		for k, v := range objects {
			if _, err := backend.PutObject(bucket, k, map[string]string{"Content-Type": "text/plain"}, strings.NewReader(v), int64(len(v)), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := NewUpstream(t, gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0)).Server().ServeHTTP)
	return srv.URL
}

// mappingValue returns the value of key in a YAML mapping (the document's
// mapping when key is ""), or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil {
		return nil
	}
	if key == "" {
		return n
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func setScalar(m *yaml.Node, key, value string) {
	if v := mappingValue(m, key); v != nil {
		v.Value, v.Tag, v.Style = value, "", 0
		return
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Value: value})
}

// Run makes the script's calls in order: at(d) is called first to move
// the broker's clock to d after the start (a broker on the wall clock
// ignores it), connect(agent) when a run of an agent first acts (a new
// session, its MCP client named agent). A call that does not come to what
// the step expects fails t. Run returns each step's result text.
func (s *Script) Run(t testing.TB, connect func(agent string) *client.Client, at func(time.Duration)) []string {
	t.Helper()
	clients := map[string]*client.Client{}
	var out []string
	for i, st := range s.Steps {
		d, _ := time.ParseDuration(st.At)
		at(d)
		c := clients[st.session()]
		if c == nil {
			c = connect(st.Agent)
			clients[st.session()] = c
		}
		res := CallTool(t, c, st.Tool, st.Args)
		text := ResultText(res)
		if res.IsError != (st.Expect == "deny") {
			t.Fatalf("step %d (%s calls %s %v) = error %v: %s; want %s", i, st.Agent, st.Tool, st.Args, res.IsError, text, st.Expect)
		}
		out = append(out, text)
	}
	return out
}

// String describes a step for messages.
func (st ScriptStep) String() string {
	return fmt.Sprintf("%s at %s: %s %v", st.session(), st.At, st.Tool, st.Args)
}
