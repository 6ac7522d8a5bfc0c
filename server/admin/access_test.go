package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/keyhole-dev/keyhole/server/access"
)

// fakeAccess records each call as text and answers from its fields.
type fakeAccess struct {
	calls  []string
	err    error
	events chan AccessEvent
}

func (f *fakeAccess) note(format string, args ...any) error {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	return f.err
}

func (f *fakeAccess) AccessList(all bool) ([]AccessRequest, error) {
	return []AccessRequest{{ID: "acr_1", State: access.StateOpen}}, f.note("list %v", all)
}

func (f *fakeAccess) AccessShow(id string) (AccessRequest, error) {
	return AccessRequest{ID: id}, f.note("show %s", id)
}

func (f *fakeAccess) AccessApprove(id string, forSession bool, note string) (AccessRequest, error) {
	return AccessRequest{ID: id, State: access.StateApproved}, f.note("approve %s %v %q", id, forSession, note)
}

func (f *fakeAccess) AccessDeny(id, note string) (AccessRequest, error) {
	return AccessRequest{ID: id, State: access.StateDenied}, f.note("deny %s %q", id, note)
}

func (f *fakeAccess) AccessWatch(ctx context.Context, fn func(AccessEvent) error) error {
	for {
		select {
		case ev, ok := <-f.events:
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

// serveAccess serves ops on a unix socket as the broker mounts it.
func serveAccess(t *testing.T, ops AccessOps) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "kh-access")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h := AccessHandler(ops)
	mux.Handle("/admin/access", h)
	mux.Handle("/admin/access/", h)
	mux.Handle("/admin/access-events", h)
	mux.HandleFunc("/healthz", func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAccessOperationsCrossTheSocket(t *testing.T) {
	f := &fakeAccess{events: make(chan AccessEvent, 4)}
	c := serveAccess(t, f)
	if got, err := c.AccessList(true); err != nil || len(got) != 1 || got[0].ID != "acr_1" {
		t.Fatalf("AccessList = %+v, %v", got, err)
	}
	if got, err := c.AccessShow("acr_2"); err != nil || got.ID != "acr_2" {
		t.Fatalf("AccessShow = %+v, %v", got, err)
	}
	if got, err := c.AccessApprove("acr_3", true, "ok, once"); err != nil || got.State != access.StateApproved {
		t.Fatalf("AccessApprove = %+v, %v", got, err)
	}
	if got, err := c.AccessDeny("acr_4", "no"); err != nil || got.State != access.StateDenied {
		t.Fatalf("AccessDeny = %+v, %v", got, err)
	}
	want := []string{"list true", "show acr_2", `approve acr_3 true "ok, once"`, `deny acr_4 "no"`}
	if !reflect.DeepEqual(f.calls, want) {
		t.Fatalf("the broker saw %q, want %q", f.calls, want)
	}

	f.events <- AccessEvent{Type: access.EventRequest, Request: AccessRequest{ID: "acr_5"}}
	f.events <- AccessEvent{Type: access.EventApprove, Request: AccessRequest{ID: "acr_5"}}
	close(f.events)
	var got []string
	err := c.AccessWatch(context.Background(), func(ev AccessEvent) error {
		got = append(got, ev.Type+" "+ev.Request.ID)
		return nil
	})
	if err == nil || !reflect.DeepEqual(got, []string{"request acr_5", "approve acr_5"}) {
		t.Fatalf("AccessWatch = %v, %v; want both events, then an error for the stream the broker ended", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	block := &fakeAccess{events: make(chan AccessEvent)}
	if err := serveAccess(t, block).AccessWatch(ctx, func(AccessEvent) error { return nil }); err != nil {
		t.Fatalf("AccessWatch ended by its context = %v, want nil", err)
	}
}

func TestAccessErrorsKeepTheirKind(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		want error
	}{
		"not found": {fmt.Errorf("%w: acr_x", access.ErrNotFound), access.ErrNotFound},
		"not open":  {fmt.Errorf("%w: acr_x is used", access.ErrNotOpen), access.ErrNotOpen},
	} {
		t.Run(name, func(t *testing.T) {
			c := serveAccess(t, &fakeAccess{err: tc.err})
			_, err := c.AccessApprove("acr_x", false, "")
			if !errors.Is(err, tc.want) || err.Error() != tc.err.Error() {
				t.Fatalf("AccessApprove with the broker failing %v = %v, want the broker's message wrapping %v", tc.err, err, tc.want)
			}
		})
	}
}
