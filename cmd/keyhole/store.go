package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
)

func (a *App) storeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "store",
		Short: "The PostgreSQL store several brokers share (--store postgres://…)",
	}
	c.AddCommand(a.storeMigrateCmd())
	return c
}

func (a *App) storeMigrateCmd() *cobra.Command {
	var from, to string
	var asJSON bool
	c := &cobra.Command{
		Use:   "migrate --store URL [--from DATA_DIR]",
		Short: "Create or upgrade keyhole's schema and vault in PostgreSQL; --from moves a data dir into it",
		Long: `migrate applies the schema migrations this keyhole embeds to the store (each
once, in order, in its own transaction) and, the first time, creates the
store's vault: the key check and a new root key, sealed with the master key
(KEYHOLE_MASTER_KEY or the key file; every broker needs the same one).

With --from DATA_DIR it moves an embedded install into a new store instead:
the vault (its secrets, versions, metadata and root key, so derived keys stay
the same), the sessions (their tokens keep working) and the audit log, as the
chain of --replica (default: the host name), with its checkpoint. Everything
moved is read back and the chain verified before it returns. No broker may
run on the data dir meanwhile; the data dir is left as it was.`,
		Example: `  KEYHOLE_STORE=postgres://keyhole@db/keyhole keyhole store migrate
  keyhole store migrate --from ~/.local/share/keyhole --to postgres://keyhole@db/keyhole --replica broker-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store := to
			if store == "" {
				store = a.store()
			}
			if store == "" {
				return &usageError{errors.New("store migrate needs the store: --store URL (or --to URL, or KEYHOLE_STORE)")}
			}
			res, err := server.MigrateStore(cmd.Context(), server.StoreMigrateOptions{
				Store: store, Keys: a.keySource(), From: from, Replica: a.replica(),
			})
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(res)
			}
			applied := "none (up to date)"
			if len(res.Applied) > 0 {
				s := make([]string, len(res.Applied))
				for i, v := range res.Applied {
					s[i] = fmt.Sprint(v)
				}
				applied = strings.Join(s, ", ")
			}
			fmt.Fprintf(a.stdout, "store %s: schema version %d (applied: %s)\n", res.Store, res.Schema, applied)
			if res.VaultCreated {
				fmt.Fprintln(a.stdout, "created the store's vault (a new root key, sealed with the master key)")
			}
			if res.From != "" {
				fmt.Fprintf(a.stdout, "moved %s: %d secret(s), %d session(s), %d access request(s), %d audit entries as the chain of replica %s; verified: chain intact, head %d\n",
					res.From, res.Secrets, res.Sessions, res.Access, res.Audit, res.Replica, res.Verified.Head)
				fmt.Fprintf(a.stdout, "start the broker with: keyhole serve --store %s --replica %s\n", res.Store, res.Replica)
			}
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "the data dir of an embedded install to move into the store")
	c.Flags().StringVar(&to, "to", "", "the store to migrate (default --store, KEYHOLE_STORE)")
	c.Flags().BoolVar(&asJSON, "json", false, "print what was done as JSON")
	return c
}
