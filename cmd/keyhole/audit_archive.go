package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
)

func (a *App) auditArchiveCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "archive",
		Short: "Move the audit log aside (kept, verifiable) and start a new chain that names its head",
		Long: `archive is the way out of an audit log that no longer matches its checkpoint
(a broker refuses to start on it: "audit: log does not match its checkpoint").
It verifies the log, moves it with the checkpoint the vault held for it into
audit-archive-<time> in the data dir, and starts a new chain whose first record
(keyhole.audit.archive) names the archived head and what verifying it found.
The archived log stays verifiable with the same key:
  keyhole audit verify --archive DIR
It needs the data dir: stop the broker first (keyhole stop).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.store() != "" {
				return errors.New("audit archive moves an audit file aside; the chains of a --store (KEYHOLE_STORE) are in PostgreSQL, which it does not archive yet")
			}
			res, err := server.ArchiveAudit(a.runtimeOptions())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.stdout).Encode(res)
			}
			verdict := "it verified intact"
			if !res.Report.OK {
				verdict = fmt.Sprintf("it is TAMPERED: %d problem(s), the first at seq %d: %s: %s", len(res.Report.Problems), res.Report.Problems[0].Seq, res.Report.Problems[0].Kind, res.Report.Problems[0].Detail)
			}
			fmt.Fprintf(a.stdout, "archived the audit log (%d entries, head seq %d) to %s; %s\n", res.Report.Entries, res.Head, res.Dir, verdict)
			fmt.Fprintf(a.stdout, "a new chain starts at seq %d, naming that head; verify the old log with: keyhole audit verify --archive %s\n", res.Seq, res.Dir)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print what was archived as JSON")
	return c
}
