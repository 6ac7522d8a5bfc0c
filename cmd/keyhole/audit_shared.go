package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyhole-dev/keyhole/server"
	"github.com/keyhole-dev/keyhole/server/audit"
)

// withSharedAudit opens the audit chains of --store read-only (only that
// of --replica when it is given).
func (a *App) withSharedAudit(fn func(s *server.SharedAudit) error) error {
	s, err := server.OpenSharedAudit(context.Background(), a.store(), a.keySource(), a.replicaFlag)
	if errors.Is(err, server.ErrNoAuditLog) {
		return errNoRecords
	}
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}

// tailShared prints the last n records of every chain, merged by time.
func tailShared(a *App, s *server.SharedAudit, flt audit.Filter, n int, pr *recordPrinter) error {
	if n > 0 {
		flt.Limit = n + 1
	}
	recs, err := s.Query(flt)
	if err != nil {
		return err
	}
	if n > 0 && len(recs) > n {
		recs = recs[len(recs)-n:]
		fmt.Fprintf(a.stderr, "showing the last %d matching records; older ones exist (-n 0 shows all, or narrow with --since, --session, --tool)\n", n)
	}
	return pr.print(recs)
}

// verifyShared checks every chain of the store; exit 1 if any fails.
func (a *App) verifyShared(cmd *cobra.Command, opts audit.VerifyOptions, asJSON bool) error {
	var reps []server.ChainReport
	err := a.withSharedAudit(func(s *server.SharedAudit) (err error) {
		reps, err = s.Verify(cmd.Context(), opts)
		return err
	})
	if errors.Is(err, errNoRecords) {
		err = nil
	}
	if err != nil {
		return err
	}
	ok := true
	for _, r := range reps {
		ok = ok && r.OK
	}
	if asJSON {
		if err := json.NewEncoder(a.stdout).Encode(struct {
			OK     bool                 `json:"ok"`
			Chains []server.ChainReport `json:"chains"`
		}{ok, reps}); err != nil {
			return err
		}
	} else {
		for _, r := range reps {
			if r.OK {
				fmt.Fprintf(a.stdout, "replica %s: audit log ok: %d entries, head %d, chain intact\n", r.Replica, r.Entries, r.Head)
				continue
			}
			fmt.Fprintf(a.stdout, "replica %s: audit log TAMPERED: %d problem(s)\n", r.Replica, len(r.Problems))
			for _, p := range r.Problems {
				fmt.Fprintf(a.stdout, "  seq %d: %s: %s\n", p.Seq, p.Kind, p.Detail)
			}
		}
		if ok {
			fmt.Fprintf(a.stdout, "%d chain(s) verified\n", len(reps))
		}
	}
	if !ok {
		return &silentError{code: 1}
	}
	return nil
}
