package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/keyhole-dev/keyhole/server/access"
	"github.com/keyhole-dev/keyhole/server/admin"
)

// The access requests a broker holds, as admin routes on its socket. A
// person answers them here, never through MCP.

var _ admin.AccessOps = (*adminOps)(nil)

// errNoAccess is the answer of a process that holds no access requests.
var errNoAccess = fmt.Errorf("keyhole: %w: access requests are held by the broker (keyhole serve, or the one keyhole stdio starts)", admin.ErrNoBroker)

func (a *adminOps) accessSessions() (accessSessions, error) {
	if a.access == nil {
		return accessSessions{}, errNoAccess
	}
	m, err := a.sessions()
	if err != nil {
		return accessSessions{}, err
	}
	return accessSessions{m}, nil
}

func (a *adminOps) AccessList(all bool) ([]admin.AccessRequest, error) {
	if a.access == nil && a.shared == nil {
		return nil, errNoAccess
	}
	var out []admin.AccessRequest
	if a.access != nil {
		out = a.access.List(all)
	}
	if a.shared == nil {
		return out, nil
	}
	// A broker of a shared store lists every broker's requests.
	others, err := access.ReadShared(context.Background(), a.shared.db, a.vault.DeriveKey(accessKeyLabel), a.shared.replica)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Replica = a.shared.replica
	}
	for _, r := range others {
		if all || r.Live() {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(x, y admin.AccessRequest) int { return x.Created.Compare(y.Created) })
	return out, nil
}

func (a *adminOps) AccessShow(id string) (admin.AccessRequest, error) {
	if a.access == nil && a.shared == nil {
		return admin.AccessRequest{}, errNoAccess
	}
	r, err := admin.AccessRequest{}, error(fmt.Errorf("%w: %s (see keyhole access list --all)", access.ErrNotFound, id))
	if a.access != nil {
		r, err = a.access.Show(id)
	}
	if errors.Is(err, access.ErrNotFound) && a.shared != nil {
		others, serr := access.ReadShared(context.Background(), a.shared.db, a.vault.DeriveKey(accessKeyLabel), a.shared.replica)
		if serr != nil {
			return r, serr
		}
		for _, o := range others {
			if o.ID == id {
				return o, nil
			}
		}
	}
	return r, err
}

func (a *adminOps) AccessApprove(id string, forSession bool, note string) (admin.AccessRequest, error) {
	if a.access == nil && a.shared != nil {
		// A command on a shared store, with no broker here: the broker
		// that holds the request answers.
		return a.answerElsewhere(id, true, forSession, note, errNoAccess)
	}
	ss, err := a.accessSessions()
	if err != nil {
		return admin.AccessRequest{}, err
	}
	r, err := a.access.Approve(id, decider(), note, forSession, ss)
	if errors.Is(err, access.ErrNotFound) {
		return a.answerElsewhere(id, true, forSession, note, err)
	}
	return r, err
}

func (a *adminOps) AccessDeny(id, note string) (admin.AccessRequest, error) {
	if a.access == nil && a.shared != nil {
		return a.answerElsewhere(id, false, false, note, errNoAccess)
	}
	ss, err := a.accessSessions()
	if err != nil {
		return admin.AccessRequest{}, err
	}
	r, err := a.access.Deny(id, decider(), note, ss)
	if errors.Is(err, access.ErrNotFound) {
		return a.answerElsewhere(id, false, false, note, err)
	}
	return r, err
}

// answerTimeout bounds the wait for another broker to apply an answer.
const answerTimeout = 15 * time.Second

// answerElsewhere passes an answer to the broker of a shared store that
// holds the request, and waits for what it made of it. notHere is the
// answer when no other broker holds it.
func (a *adminOps) answerElsewhere(id string, approve, forSession bool, note string, notHere error) (admin.AccessRequest, error) {
	if a.shared == nil {
		return admin.AccessRequest{}, notHere
	}
	ctx := context.Background()
	holder, err := access.HolderOf(ctx, a.shared.db, id)
	if err != nil {
		return admin.AccessRequest{}, err
	}
	if holder == "" || holder == a.shared.replica {
		return admin.AccessRequest{}, notHere
	}
	ans, err := access.PostAnswer(ctx, a.shared.db, access.RemoteAnswer{
		Replica: holder, Request: id, Approve: approve, ForSession: forSession, Note: note,
		By: decider() + " through broker " + a.shared.replica,
	})
	if err != nil {
		return admin.AccessRequest{}, err
	}
	r, err := access.AwaitAnswer(ctx, a.shared.db, ans, answerTimeout)
	if errors.Is(err, access.ErrNoAnswer) {
		return r, fmt.Errorf("keyhole: %s is held by broker %s, which did not take the answer within %s (is it running?): %w", id, holder, answerTimeout, err)
	}
	r.Replica = holder
	return r, err
}

// applyAnswers applies the answers other brokers of a shared store took
// for the requests this broker holds (see answerElsewhere): at once when
// notified, and every few seconds in case a notification was missed.
func applyAnswers(ctx context.Context, sh *shared, acc *access.Manager, m *LiveSessions, log *slog.Logger) {
	wake := make(chan struct{}, 1)
	go listenAnswers(ctx, sh, wake)
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for {
		answers, err := access.TakeAnswers(ctx, sh.db, sh.replica)
		if err != nil && ctx.Err() == nil {
			log.Warn("read the answers other brokers took", LogError, err)
		}
		for _, ans := range answers {
			var r access.Request
			var err error
			if ans.Approve {
				r, err = acc.Approve(ans.Request, ans.By, ans.Note, ans.ForSession, accessSessions{m})
			} else {
				r, err = acc.Deny(ans.Request, ans.By, ans.Note, accessSessions{m})
			}
			if _, ferr := access.FinishAnswer(ctx, sh.db, ans.ID, r, err); ferr != nil && ctx.Err() == nil {
				log.Warn("write an answer's result", "request", ans.Request, LogError, ferr)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// listenAnswers wakes applyAnswers when an answer for this broker is
// posted; while it cannot listen, the ticker does.
func listenAnswers(ctx context.Context, sh *shared, wake chan<- struct{}) {
	for ctx.Err() == nil {
		func() {
			conn, err := sh.db.Acquire(ctx)
			if err != nil {
				return
			}
			defer conn.Release()
			if _, err := conn.Exec(ctx, "LISTEN "+access.AnswerChannel); err != nil {
				return
			}
			defer conn.Exec(context.Background(), "UNLISTEN *")
			for {
				n, err := conn.Conn().WaitForNotification(ctx)
				if err != nil {
					if ctx.Err() == nil {
						conn.Conn().Close(context.Background())
					}
					return
				}
				if n.Payload == sh.replica {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			}
		}()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (a *adminOps) AccessWatch(ctx context.Context, fn func(admin.AccessEvent) error) error {
	if a.access == nil {
		return errNoAccess
	}
	events, stop := a.access.Watch()
	defer stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			if err := fn(ev); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// endAccess lets the requests of sessions that were revoked or ended die
// with them.
func (a *adminOps) endAccess(ids []string, why string) {
	if a.access == nil {
		return
	}
	for _, id := range ids {
		a.access.EndSession(id, why)
	}
}

// sweepAccess expires the access requests whose time or session is
// over; the broker calls it every second.
func sweepAccess(acc *access.Manager, m *LiveSessions) {
	if acc != nil {
		acc.Sweep(accessSessions{m})
	}
}
