package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/tailscale/hujson"

	"github.com/keyhole-dev/keyhole/server/config"
)

// clientSpec says where an MCP client keeps its servers and under which key.
type clientSpec struct {
	file func(a *App) string // config file to merge into
	key  string              // top-level key holding the servers
}

var mcpClients = map[string]clientSpec{
	"claude-desktop": {file: claudeDesktopFile, key: "mcpServers"},
	"cursor":         {file: func(a *App) string { return filepath.Join(a.home(), ".cursor", "mcp.json") }, key: "mcpServers"},
	"vscode":         {file: func(a *App) string { return filepath.Join(".vscode", "mcp.json") }, key: "servers"},
	"claude-code":    {},
}

func claudeDesktopFile(a *App) string {
	if runtime.GOOS == "darwin" {
		return filepath.Join(a.home(), "Library", "Application Support", "Claude", "claude_desktop_config.json")
	}
	return filepath.Join(a.configHome(), "Claude", "claude_desktop_config.json")
}

type mcpConfigOpts struct {
	client   string
	scope    string
	httpURL  string
	tokenEnv string
	binary   string
	config   string // absolute config path for KEYHOLE_CONFIG
	name     string
}

// serverEntry is the JSON a client needs to launch or reach keyhole.
func (o mcpConfigOpts) serverEntry() map[string]any {
	if o.httpURL != "" {
		auth := "Bearer ${env:" + o.tokenEnv + "}"
		e := map[string]any{"url": o.httpURL, "headers": map[string]string{"Authorization": auth}}
		if o.client == "vscode" {
			e["type"] = "http"
		}
		return e
	}
	e := map[string]any{
		"command": o.binary,
		"args":    []string{"stdio", "--scope", o.scope},
		"env":     map[string]string{"KEYHOLE_CONFIG": o.config},
	}
	if o.client == "vscode" {
		e["type"] = "stdio"
	}
	return e
}

// claudeCodeLine is the `claude mcp add` command line.
func (o mcpConfigOpts) claudeCodeLine() string {
	if o.httpURL != "" {
		return fmt.Sprintf(`claude mcp add --transport http %s %s --header "Authorization: Bearer $%s"`, o.name, shellQuote(o.httpURL), o.tokenEnv)
	}
	return fmt.Sprintf("claude mcp add %s -e KEYHOLE_CONFIG=%s -- %s stdio --scope %s", o.name, shellQuote(o.config), shellQuote(o.binary), shellQuote(o.scope))
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *App) mcpConfigCmd() *cobra.Command {
	var o mcpConfigOpts
	var write bool
	c := &cobra.Command{
		Use:   "mcp-config claude-desktop|claude-code|cursor|vscode",
		Short: "Print (or --write) the snippet that registers keyhole in an MCP client",
		Example: `  keyhole mcp-config claude-code --scope triage
  keyhole mcp-config cursor --scope triage --write
  keyhole mcp-config vscode --http https://keyhole.internal:7777/mcp --token-env KEYHOLE_TOKEN`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"claude-desktop", "claude-code", "cursor", "vscode"},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.client = args[0]
			spec, ok := mcpClients[o.client]
			if !ok {
				return &usageError{fmt.Errorf("unknown client %q: want claude-desktop, claude-code, cursor or vscode", o.client)}
			}
			if (o.httpURL == "") == (o.scope == "") {
				return &usageError{errors.New("give --scope S (local stdio) or --http URL (remote broker), not both")}
			}
			if o.httpURL != "" && o.tokenEnv == "" {
				return &usageError{errors.New("--http needs --token-env VAR: the environment variable holding the session token")}
			}
			if o.httpURL != "" && o.client == "claude-desktop" {
				//lint:ignore ST1005 the error begins with the product's name
				return errors.New("Claude Desktop adds remote MCP servers in Settings → Connectors, not in its config file; use --scope for a local stdio server")
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the keyhole binary: %w", err)
			}
			o.binary, _ = filepath.EvalSymlinks(exe)
			if o.config, err = filepath.Abs(a.configPath()); err != nil {
				return err
			}
			if o.scope != "" {
				if err := checkScope(o.config, o.scope); err != nil {
					return err
				}
			}
			if o.client == "claude-code" {
				if write {
					return errors.New("for Claude Code, run the printed command: `claude mcp add` writes its own config")
				}
				fmt.Fprintln(a.stdout, o.claudeCodeLine())
				return nil
			}
			entry := map[string]any{o.name: o.serverEntry()}
			path := spec.file(a)
			if !write {
				// Only the snippet goes to stdout, so `> file` is valid JSON.
				snippet, _ := json.MarshalIndent(map[string]any{spec.key: entry}, "", "  ")
				fmt.Fprintf(a.stderr, "merge this into %s (or run with --write):\n", path)
				fmt.Fprintf(a.stdout, "%s\n", snippet)
				return nil
			}
			res, err := mergeClientConfig(path, spec.key, o.name, o.serverEntry())
			if err != nil {
				return err
			}
			if res.backup != "" {
				fmt.Fprintf(a.stdout, "backed up %s to %s\n", path, res.backup)
			}
			verb := "added server %q to %s"
			if res.replaced {
				verb = "replaced server %q in %s"
			}
			fmt.Fprintf(a.stdout, verb+"; restart the client to pick it up\n", o.name, path)
			return nil
		},
	}
	c.Flags().StringVar(&o.scope, "scope", "", "scope for a local stdio session")
	c.Flags().StringVar(&o.httpURL, "http", "", "URL of a keyhole broker's /mcp endpoint (remote)")
	c.Flags().StringVar(&o.tokenEnv, "token-env", "", "environment variable holding the session token (with --http)")
	c.Flags().StringVar(&o.name, "name", "keyhole", "server name in the client's config")
	c.Flags().BoolVar(&write, "write", false, "merge into the client's config file, after a backup")
	c.RegisterFlagCompletionFunc("scope", a.completeScopes)
	return c
}

// checkScope makes sure scope is defined in the config at path: a client
// registered with a scope that does not exist would fail on every start.
func checkScope(path, scope string) error {
	cfg, err := config.Load(path, config.ToolEnv{})
	if err != nil {
		return fmt.Errorf("cannot check --scope %s: %w", scope, err)
	}
	if _, ok := cfg.Policy.Scope(scope); !ok {
		return &usageError{fmt.Errorf("scope %q is not defined in %s; defined scopes: %s", scope, path, strings.Join(cfg.Policy.ScopeNames(), ", "))}
	}
	return nil
}

// mergeResult says what mergeClientConfig did.
type mergeResult struct {
	backup   string // where the old file was kept, if there was one
	replaced bool   // an entry of the same name was replaced
}

// mergeClientConfig adds one server to a client's config file, keeping
// everything else, comments included: the file may be JSONC, as VS Code
// writes it (comments, trailing commas). It refuses a file it cannot
// parse, and keeps the old file in a backup of its own name, never
// overwriting an earlier backup.
func mergeClientConfig(path, key, name string, entry any) (mergeResult, error) {
	var res mergeResult
	old, err := os.ReadFile(path)
	text := old
	switch {
	case errors.Is(err, os.ErrNotExist):
		old, text = nil, []byte("{}")
	case err != nil:
		return res, fmt.Errorf("read %s: %w", path, err)
	case len(bytes.TrimSpace(old)) == 0:
		text = []byte("{}")
	}
	// hujson edits in place: parse a copy, so old is backed up as it was.
	doc, err := hujson.Parse(bytes.Clone(text))
	if err != nil {
		return res, fmt.Errorf("%s is not valid JSON or JSONC (%v); fix it or add the snippet by hand — it was not changed", path, err)
	}
	if _, ok := doc.Value.(*hujson.Object); !ok {
		return res, fmt.Errorf("%s does not hold a JSON object; it was not changed", path)
	}
	servers := "/" + pointerEscape(key)
	switch v := doc.Find(servers); {
	case v == nil:
		if err := patch(&doc, servers, map[string]any{}); err != nil {
			return res, err
		}
	case !isObject(v):
		return res, fmt.Errorf("%s: %q is not an object; it was not changed", path, key)
	}
	at := servers + "/" + pointerEscape(name)
	res.replaced = doc.Find(at) != nil
	if err := patch(&doc, at, entry); err != nil {
		return res, err
	}
	doc.Format()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return res, err
	}
	if old != nil {
		if res.backup, err = writeBackup(path, old); err != nil {
			return res, err
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, doc.Pack(), 0o600); err != nil {
		return res, err
	}
	return res, os.Rename(tmp, path)
}

func isObject(v *hujson.Value) bool {
	_, ok := v.Value.(*hujson.Object)
	return ok
}

// patch sets the member at a JSON pointer (JSON Patch "add" replaces one
// that exists).
func patch(doc *hujson.Value, ptr string, value any) error {
	ops, err := json.Marshal([]map[string]any{{"op": "add", "path": ptr, "value": value}})
	if err != nil {
		return err
	}
	return doc.Patch(ops)
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// writeBackup keeps data as path.bak-<time>, or path.bak-<time>-N when
// that exists: a backup is never overwritten.
func writeBackup(path string, data []byte) (string, error) {
	base := path + ".bak-" + time.Now().UTC().Format("20060102T150405Z")
	for i := 0; i < 1000; i++ {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("back up %s: %w", path, err)
		}
		_, werr := f.Write(data)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", fmt.Errorf("back up %s: %w", path, werr)
		}
		return name, nil
	}
	return "", fmt.Errorf("back up %s: too many backups already", path)
}
