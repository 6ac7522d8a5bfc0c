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
				snippet, _ := json.MarshalIndent(map[string]any{spec.key: entry}, "", "  ")
				fmt.Fprintf(a.stdout, "# merge into %s (or run with --write)\n%s\n", path, snippet)
				return nil
			}
			backup, err := mergeClientConfig(path, spec.key, o.name, o.serverEntry())
			if err != nil {
				return err
			}
			if backup != "" {
				fmt.Fprintf(a.stdout, "backed up %s to %s\n", path, backup)
			}
			fmt.Fprintf(a.stdout, "added server %q to %s; restart the client to pick it up\n", o.name, path)
			return nil
		},
	}
	c.Flags().StringVar(&o.scope, "scope", "", "scope for a local stdio session")
	c.Flags().StringVar(&o.httpURL, "http", "", "URL of a keyhole broker's /mcp endpoint (remote)")
	c.Flags().StringVar(&o.tokenEnv, "token-env", "", "environment variable holding the session token (with --http)")
	c.Flags().StringVar(&o.name, "name", "keyhole", "server name in the client's config")
	c.Flags().BoolVar(&write, "write", false, "merge into the client's config file, after a backup")
	return c
}

// mergeClientConfig adds one server to a client's JSON config file, keeping
// everything else. It refuses a file it cannot parse, and backs up the old
// file first.
func mergeClientConfig(path, key, name string, entry any) (backup string, err error) {
	doc := map[string]any{}
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("read %s: %w", path, err)
	case len(bytes.TrimSpace(old)) > 0:
		if err := json.Unmarshal(old, &doc); err != nil {
			return "", fmt.Errorf("%s is not valid JSON (%v); fix it or add the snippet by hand — it was not changed", path, err)
		}
	}
	servers, _ := doc[key].(map[string]any)
	if doc[key] != nil && servers == nil {
		return "", fmt.Errorf("%s: %q is not an object; it was not changed", path, key)
	}
	if servers == nil {
		servers = map[string]any{}
	}
	servers[name] = entry
	doc[key] = servers
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if old != nil {
		backup = path + ".bak-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.WriteFile(backup, old, 0o600); err != nil {
			return "", fmt.Errorf("back up %s: %w", path, err)
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), 0o600); err != nil {
		return "", err
	}
	return backup, os.Rename(tmp, path)
}
