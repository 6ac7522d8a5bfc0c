package server

import (
	"context"
	"fmt"

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
	if a.access == nil {
		return nil, errNoAccess
	}
	return a.access.List(all), nil
}

func (a *adminOps) AccessShow(id string) (admin.AccessRequest, error) {
	if a.access == nil {
		return admin.AccessRequest{}, errNoAccess
	}
	return a.access.Show(id)
}

func (a *adminOps) AccessApprove(id string, forSession bool, note string) (admin.AccessRequest, error) {
	ss, err := a.accessSessions()
	if err != nil {
		return admin.AccessRequest{}, err
	}
	return a.access.Approve(id, decider(), note, forSession, ss)
}

func (a *adminOps) AccessDeny(id, note string) (admin.AccessRequest, error) {
	ss, err := a.accessSessions()
	if err != nil {
		return admin.AccessRequest{}, err
	}
	return a.access.Deny(id, decider(), note, ss)
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
