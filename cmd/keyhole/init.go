package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
)

func (a *App) initCmd() *cobra.Command {
	var usePassphrase, force bool
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a starter keyhole.yaml, an empty vault and a master key file",
		Long: `init writes a commented starter keyhole.yaml (at --config, or ./keyhole.yaml),
creates the data dir with an empty encrypted vault, and a master key file
($XDG_CONFIG_HOME/keyhole/master.key, mode 0600). With --passphrase the master
key is derived from a passphrase (Argon2id) instead, and no key file is written.

In a second project, where your master key and vault exist, init writes just
./keyhole.yaml and reuses them: every project shares one vault and one audit log.
It refuses to replace an existing keyhole.yaml unless --force. --force starts
over: a new config, master key and vault; the old config and key are kept as
*.bak-<time>, and the old vault moves aside together with the audit log and
sessions it keyed (into backup-<time> in the data dir, still verifiable).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfgPath := a.configFlag
			if cfgPath == "" {
				cfgPath = a.getenv("KEYHOLE_CONFIG")
			}
			if cfgPath == "" {
				cfgPath = "keyhole.yaml"
			}
			opts := server.InitOptions{ConfigPath: cfgPath, DataDir: a.dataDir(), KeyFile: a.keyFile(), Force: force}
			if usePassphrase {
				opts.Passphrase = func() ([]byte, error) { return a.passphrase("New vault passphrase: ") }
			}
			res, err := server.Init(opts)
			if err != nil {
				return err
			}
			for _, b := range res.Backups {
				fmt.Fprintf(a.stdout, "kept backup  %s\n", b)
			}
			for _, p := range res.Created {
				fmt.Fprintf(a.stdout, "created      %s\n", p)
			}
			for _, p := range res.Reused {
				fmt.Fprintf(a.stdout, "reused       %s\n", p)
			}
			if len(res.Reused) > 0 {
				fmt.Fprintln(a.stdout, "\nThis project shares the master key, vault and audit log of your earlier `keyhole init`;\nits keyhole.yaml names its own tools and scopes.")
			}
			if res.BackupDir != "" {
				key := "KEYHOLE_MASTER_KEY=… or KEYHOLE_PASSPHRASE=… "
				for _, b := range res.Backups {
					if strings.HasPrefix(b, a.keyFile()+".bak-") {
						key = "KEYHOLE_KEY_FILE=" + b + " "
					}
				}
				fmt.Fprintf(a.stdout, "\nThe old vault, its audit log and sessions are kept together in %s.\nThe old log still verifies with the old key:\n  %skeyhole audit verify --data-dir %s\n", res.BackupDir, key, res.BackupDir)
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(a.stderr, "warning: %s\n", trimPrefix(w))
			}
			fmt.Fprintf(a.stdout, `
Next:
  printf %%s "$GITHUB_TOKEN" | keyhole secret set github_token
  keyhole config check
  keyhole mcp-config claude-code --scope triage
`)
			return nil
		},
	}
	c.Flags().BoolVar(&usePassphrase, "passphrase", false, "derive the master key from a passphrase (KEYHOLE_PASSPHRASE or a prompt) instead of a key file")
	c.Flags().BoolVar(&force, "force", false, "start over: a new config, master key and vault; the old ones (and the audit log) are kept aside")
	return c
}
