package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// benchSecret is the upstream credential stored in the bench's throwaway
// vault; the upstream checks that it arrives.
const benchSecret = "bench_7Hc2kQ9pLx0VvRt3yNw8ZsJ4"

// benchConfig is keyhole.yaml for the bench: one generic http tool on the
// loopback upstream and one scope granting GET /issues/*, with no rate or
// call limit so the broker, not the scope, is what is measured.
const benchConfig = `version: 1
tools:
  tracker:
    kind: http
    description: The bench's loopback issue tracker.
    base_url: %s
    allow_private_network: true
    credential: {secret: bench_token, inject: bearer}
scopes:
  bench:
    ttl: 2h
    grants:
      - {tool: tracker, methods: [GET], paths: [/issues/*]}
`

// home is a throwaway keyhole user: HOME, XDG dirs and a working directory
// holding keyhole.yaml.
type home struct {
	bin string
	dir string
	env []string
}

// buildKeyhole builds ./cmd/keyhole into dir and returns the binary's path.
func buildKeyhole(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "keyhole")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/keyhole-dev/keyhole/cmd/keyhole")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build keyhole (run from the repository, or pass --keyhole): %w\n%s", err, out)
	}
	return bin, nil
}

// newHome runs keyhole init in dir, stores the bench secret and writes a
// config whose tool calls upstream.
func newHome(ctx context.Context, bin, dir, upstream string) (*home, error) {
	h := &home{bin: bin, dir: dir, env: []string{
		"HOME=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_DATA_HOME=" + filepath.Join(dir, "data"),
		"PATH=" + os.Getenv("PATH"),
	}}
	if _, err := h.run(ctx, "", "init"); err != nil {
		return nil, err
	}
	if _, err := h.run(ctx, benchSecret, "secret", "set", "bench_token"); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(benchConfig, upstream)
	if err := os.WriteFile(filepath.Join(dir, "keyhole.yaml"), []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("keyhole home: %w", err)
	}
	return h, nil
}

func (h *home) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Dir, cmd.Env = h.dir, h.env
	return cmd
}

// run runs keyhole with stdin and returns its stdout.
func (h *home) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := h.command(ctx, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("keyhole %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// serve starts `keyhole serve --http 127.0.0.1:0` and waits until it logs
// its MCP URL. Every client of the bench comes from 127.0.0.1, so the cap
// on connections from one address (64 by default, as many as the
// highest level's clients) is raised: with it, a keep-alive connection
// the client's pool opens beside 64 busy ones was refused, and the run
// failed with "connection reset by peer". The bare passthrough has no cap.
func (h *home) serve(ctx context.Context) (*child, error) {
	return h.serveArgs(ctx, "--max-connections-per-source", "1024")
}

// serveArgs is serve with more arguments.
func (h *home) serveArgs(ctx context.Context, extra ...string) (*child, error) {
	cmd := h.command(ctx, append([]string{"serve", "--http", "127.0.0.1:0", "--log-format", "json"}, extra...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("keyhole serve: %w", err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("keyhole serve: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("keyhole serve: %w", err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var last []string
		for sc.Scan() {
			var line struct {
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.URL != "" {
				found <- line.URL
				io.Copy(io.Discard, stderr)
				return
			}
			last = append(last, sc.Text())
		}
		found <- "exited: " + strings.Join(last, "\n")
	}()
	select {
	case u := <-found:
		if !strings.HasPrefix(u, "http://") {
			c.Stop()
			return nil, fmt.Errorf("keyhole serve %s", u)
		}
		c.URL = u
		return c, nil
	case <-time.After(30 * time.Second):
		c.Stop()
		return nil, errors.New("keyhole serve: no MCP URL logged within 30s")
	}
}

// tokens starts n sessions of scope bench and returns their phantom tokens
// and session ids.
func (h *home) tokens(ctx context.Context, n int) (toks, ids []string, err error) {
	toks, ids = make([]string, n), make([]string, n)
	for i := range toks {
		out, err := h.run(ctx, "", "session", "new", "--scope", "bench", "--json", "--label", fmt.Sprintf("bench-%d", i))
		if err != nil {
			return nil, nil, err
		}
		var s struct {
			ID    string `json:"id"`
			Token string `json:"token"`
		}
		if err := json.Unmarshal([]byte(out), &s); err != nil || !strings.HasPrefix(s.Token, "khs_") {
			return nil, nil, fmt.Errorf("keyhole session new --json: no token in its output (%v)", err)
		}
		toks[i], ids[i] = s.Token, s.ID
	}
	return toks, ids, nil
}

// initializeLine is an MCP initialize request as a client writes it.
const initializeLine = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"keyhole-bench","version":"1"}}}` + "\n"

// timeStdio launches `keyhole stdio --standalone --scope bench` and returns
// the time from launch to its initialize response. The process is then
// ended by closing its stdin, as a client does.
func (h *home) timeStdio(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := h.command(ctx, "stdio", "--standalone", "--scope", "bench")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, fmt.Errorf("keyhole stdio: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("keyhole stdio: %w", err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("keyhole stdio: %w", err)
	}
	_, werr := io.WriteString(stdin, initializeLine)
	line, rerr := bufio.NewReader(stdout).ReadBytes('\n')
	took := time.Since(start)
	stdin.Close()
	werr2 := cmd.Wait()
	var resp struct {
		ID     int             `json:"id"`
		Result json.RawMessage `json:"result"`
	}
	if err := errors.Join(werr, rerr); err != nil || json.Unmarshal(line, &resp) != nil || resp.ID != 1 || len(resp.Result) == 0 {
		return 0, fmt.Errorf("keyhole stdio: no initialize result (read %q: %v; exit %v): %s", line, err, werr2, strings.TrimSpace(errb.String()))
	}
	return took, nil
}
