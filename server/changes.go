package server

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/keyhole-dev/keyhole/server/audit"
)

// The audit records of changes to who may do what. They are written beside
// the records of calls, in the same chain, by whoever makes the change: the
// broker for admin commands that go through its socket, the command itself
// when it opened the data dir.
const (
	ToolSecretSet     = "keyhole.secret.set"
	ToolSecretRotate  = "keyhole.secret.rotate"
	ToolSecretRm      = "keyhole.secret.rm"
	ToolSecretLogin   = "keyhole.secret.login"
	ToolSessionNew    = "keyhole.session.new"
	ToolSessionRevoke = "keyhole.session.revoke"
	ToolReload        = "keyhole.reload"
	ToolInit          = "keyhole.init"
	ToolAuthFailed    = "keyhole.auth.failed"
)

// Operator names the OS user this process runs as: the operator of an
// admin command run here, and of one that reached the broker over its
// socket, which accepts only its own uid.
var Operator = sync.OnceValue(func() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(os.Getuid())
})

// changeRecord is the audit record of an operator's change. It names the
// secret or session changed, never a value.
func changeRecord(now time.Time, tool, reason string) audit.Record {
	return audit.Record{
		Time: now.UTC(), Session: "-", Scope: "-", Tool: tool,
		Decision: audit.Allow, Reason: reason, Operator: Operator(),
	}
}

// recorder writes change records to an audit log opened on first use.
type recorder struct {
	log func() (AuditLog, error)
	now func() time.Time
}

// write records one change. A change that cannot be recorded is reported
// as an error: it happened, but the audit does not show it.
func (r recorder) write(rec audit.Record) error {
	l, err := r.log()
	if err == nil {
		_, err = l.Write(context.Background(), rec)
	}
	if err != nil {
		return fmt.Errorf("keyhole: %s was done but could not be recorded in the audit log: %w", rec.Tool, err)
	}
	return nil
}

func (r recorder) clock() time.Time {
	if r.now == nil {
		return time.Now()
	}
	return r.now()
}
