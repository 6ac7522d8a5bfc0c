package main

import (
	"fmt"

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
It refuses to replace existing files unless --force, which keeps backups.`,
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
	c.Flags().BoolVar(&force, "force", false, "replace existing files, keeping backups")
	return c
}
