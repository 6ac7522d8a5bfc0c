//go:build !linux && !darwin && !freebsd

package server

import (
	"fmt"
	"runtime"
)

// peerUIDOf cannot tell who is at the other end of a socket here.
func peerUIDOf(uintptr) int { return -1 }

// errNoPeerCred says why this system gets no shared broker: its socket
// would be open to every local user.
var errNoPeerCred = fmt.Errorf("keyhole: the shared broker is not available on %s (its unix socket cannot tell which user connects); run `keyhole stdio --standalone`, which serves the client in-process", runtime.GOOS)
