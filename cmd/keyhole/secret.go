package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/admin"
	"github.com/keyhole-dev/keyhole/server/config"
	"github.com/keyhole-dev/keyhole/server/terminal"
)

// maxSecretBytes caps a secret value read from stdin, env or a file.
const maxSecretBytes = 64 << 10

// keySource says where the master key comes from: KEYHOLE_MASTER_KEY, the
// key file, then a passphrase (KEYHOLE_PASSPHRASE or a prompt).
func (a *App) keySource() server.KeySource {
	ks := server.KeySource{EnvKey: a.getenv("KEYHOLE_MASTER_KEY")}
	if _, err := os.Lstat(a.keyFile()); err == nil {
		ks.KeyFile = a.keyFile()
	}
	ks.Passphrase = func() ([]byte, error) { return a.passphrase("Vault passphrase: ") }
	return ks
}

// keySourceNoPrompt is keySource for commands that read the vault on the
// side (config check, shell completion): the passphrase comes only from
// KEYHOLE_PASSPHRASE, never from a prompt.
func (a *App) keySourceNoPrompt() server.KeySource {
	ks := a.keySource()
	ks.Passphrase = func() ([]byte, error) {
		if p := a.getenv("KEYHOLE_PASSPHRASE"); p != "" {
			return []byte(p), nil
		}
		return nil, fmt.Errorf("%w: set KEYHOLE_PASSPHRASE", server.ErrNoKey)
	}
	return ks
}

// passphrase reads KEYHOLE_PASSPHRASE, or prompts on a terminal.
func (a *App) passphrase(prompt string) ([]byte, error) {
	if p := a.getenv("KEYHOLE_PASSPHRASE"); p != "" {
		return []byte(p), nil
	}
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, fmt.Errorf("%w: set KEYHOLE_MASTER_KEY or KEYHOLE_PASSPHRASE, or create a key file with `keyhole init`", server.ErrNoKey)
	}
	fmt.Fprint(a.stderr, prompt)
	p, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(a.stderr)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	return p, nil
}

// runtimeOptions are the paths and keys every command shares.
func (a *App) runtimeOptions() server.RuntimeOptions {
	return server.RuntimeOptions{DataDir: a.dataDir(), ConfigPath: a.configPath(), Keys: a.keySource(), Logger: a.log, Store: a.store(), Replica: a.replica()}
}

// withAdmin runs fn against the data dir: through the running broker's
// socket when one owns it, else in-process.
func (a *App) withAdmin(fn func(ad admin.Admin) error) error {
	ad, err := server.OpenAdmin(a.runtimeOptions())
	if err != nil {
		return err
	}
	defer ad.Close()
	return fn(ad)
}

func (a *App) secretCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "secret",
		Short: "Manage the credentials in keyhole's encrypted vault",
		Long: `Secrets are the real API keys keyhole injects into upstream calls. A value is
read from stdin (or --from-env / --from-file), never from the command line, and
is never printed again.`,
	}
	c.AddCommand(a.secretSetCmd(), a.secretRotateCmd(), a.secretListCmd(), a.secretRmCmd(), a.secretRekeyCmd(), a.secretLoginCmd())
	return c
}

type valueFlags struct {
	fromEnv  string
	fromFile string
}

func (f *valueFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.fromEnv, "from-env", "", "read the value from this environment variable")
	c.Flags().StringVar(&f.fromFile, "from-file", "", "read the value from this file")
	c.MarkFlagsMutuallyExclusive("from-env", "from-file")
}

// read returns the secret value from the chosen source, without one
// trailing newline. An empty value is refused.
func (f *valueFlags) read(a *App, name string) ([]byte, error) {
	var v []byte
	switch {
	case f.fromEnv != "":
		v = []byte(a.getenv(f.fromEnv))
		if len(v) == 0 {
			return nil, fmt.Errorf("environment variable %s is empty or unset", f.fromEnv)
		}
	case f.fromFile != "":
		b, err := readCapped(f.fromFile)
		if err != nil {
			return nil, err
		}
		v = b
	default:
		if file, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(file.Fd())) {
			fmt.Fprintf(a.stderr, "Value for %s (input hidden): ", name)
			b, err := term.ReadPassword(int(file.Fd()))
			fmt.Fprintln(a.stderr)
			if err != nil {
				return nil, fmt.Errorf("read value: %w", err)
			}
			v = b
		} else {
			b, err := io.ReadAll(io.LimitReader(a.stdin, maxSecretBytes+1))
			if err != nil {
				return nil, fmt.Errorf("read value from stdin: %w", err)
			}
			v = b
		}
	}
	if len(v) > maxSecretBytes {
		return nil, fmt.Errorf("secret value is larger than %d bytes", maxSecretBytes)
	}
	v = bytes.TrimSuffix(v, []byte("\n"))
	v = bytes.TrimSuffix(v, []byte("\r"))
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: pipe the value on stdin, e.g. `printf %%s \"$TOKEN\" | keyhole secret set %s`", server.ErrEmptyValue, name)
	}
	return v, nil
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read value: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read value from %s: %w", filepath.Base(path), err)
	}
	return b, nil
}

func (a *App) secretSetCmd() *cobra.Command {
	var vf valueFlags
	var desc string
	c := &cobra.Command{
		Use:   "set NAME",
		Short: "Store a new secret (value from stdin, --from-env or --from-file)",
		Example: `  printf %s "$GITHUB_TOKEN" | keyhole secret set github_token
  keyhole secret set github_token --from-env GITHUB_TOKEN`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return a.withAdmin(func(v admin.Admin) error {
				if _, err := v.SecretMeta(name); err == nil {
					return fmt.Errorf("secret %q already exists: use `keyhole secret rotate %s` to replace its value", name, name)
				}
				value, err := vf.read(a, name)
				if err != nil {
					return err
				}
				defer clear(value)
				if err := v.SecretSet(name, value, desc); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "stored secret %s (version 1)\n", name)
				return nil
			})
		},
	}
	vf.register(c)
	c.Flags().StringVar(&desc, "description", "", "what the secret is for")
	return c
}

func (a *App) secretRotateCmd() *cobra.Command {
	var vf valueFlags
	c := &cobra.Command{
		Use:               "rotate NAME",
		Short:             "Replace a secret's value (version+1)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeSecrets,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return a.withAdmin(func(v admin.Admin) error {
				if _, err := v.SecretMeta(name); err != nil {
					return err
				}
				value, err := vf.read(a, name)
				if err != nil {
					return err
				}
				defer clear(value)
				m, err := v.SecretRotate(name, value)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "rotated secret %s (version %d)\n", name, m.Version)
				return nil
			})
		},
	}
	vf.register(c)
	return c
}

func (a *App) secretListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List secrets (metadata only; values are never shown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.withAdmin(func(v admin.Admin) error {
				metas, err := v.SecretList()
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSONLines(a.stdout, metas)
				}
				if len(metas) == 0 {
					fmt.Fprintln(a.stdout, "no secrets; add one with `keyhole secret set NAME`")
					return nil
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tUPDATED\tLAST USED\tSTATUS\tDESCRIPTION")
				for _, m := range metas {
					status := m.Status
					if status == "" {
						status = "ok"
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", terminal.Escape(m.Name), m.Version, ago(m.Updated), ago(m.LastUsed), terminal.Escape(status), terminal.Escape(m.Description))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per secret")
	return c
}

func (a *App) secretRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a secret",
		Long: `rm deletes a secret from the vault. Every call of a tool that injects it
fails from then on: rm names those tools (from keyhole.yaml) on stderr.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeSecrets,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withAdmin(func(v admin.Admin) error {
				if err := v.SecretDelete(args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "deleted secret %s\n", args[0])
				if cfg, err := config.Load(a.configPath(), config.ToolEnv{}); err == nil {
					if tools := server.ToolsUsingSecret(cfg, args[0]); len(tools) > 0 {
						fmt.Fprintf(a.stderr, "warning: %s in %s %s secret %s: every call to it fails until you store it again (keyhole secret set %s)\n",
							plural("tool", tools), a.configPath(), map[bool]string{true: "uses", false: "use"}[len(tools) == 1], args[0], args[0])
					}
				}
				return nil
			})
		},
	}
}

func (a *App) secretRekeyCmd() *cobra.Command {
	var usePassphrase bool
	c := &cobra.Command{
		Use:   "rekey",
		Short: "Re-encrypt every secret under a new master key",
		Long: `rekey generates a new master key (or derives one from a new passphrase with
--passphrase), re-encrypts every secret under it in one transaction, and then
replaces the key file. The old key stops working.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.store() != "" {
				return errors.New("secret rekey re-encrypts a vault file; with --store (KEYHOLE_STORE) the vault is in PostgreSQL, which rekey does not change yet")
			}
			if a.getenv("KEYHOLE_MASTER_KEY") != "" {
				return errors.New("the master key comes from KEYHOLE_MASTER_KEY: unset it to rekey to a key file, or rotate the variable's value yourself")
			}
			o := server.RekeyOptions{DataDir: a.dataDir(), Keys: a.keySource(), KeyFile: a.keyFile()}
			if usePassphrase {
				o.Passphrase = func() ([]byte, error) { return a.passphrase("New vault passphrase: ") }
			}
			if err := server.Rekey(o); err != nil {
				return err
			}
			if usePassphrase {
				fmt.Fprintln(a.stdout, "re-encrypted every secret under the new passphrase")
			} else {
				fmt.Fprintf(a.stdout, "re-encrypted every secret under a new master key in %s\n", a.keyFile())
			}
			return nil
		},
	}
	c.Flags().BoolVar(&usePassphrase, "passphrase", false, "derive the new master key from a passphrase instead of a key file")
	return c
}

// writeJSONLines writes one JSON object per line.
func writeJSONLines[T any](w io.Writer, items []T) error {
	enc := json.NewEncoder(w)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	return nil
}

// ago renders a time for people: "3m ago", "never".
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return t.Local().Format("2006-01-02")
	}
}
