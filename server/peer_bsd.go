//go:build darwin || freebsd

package server

import "golang.org/x/sys/unix"

// peerUIDOf returns the uid of the process at the other end of a unix
// socket (LOCAL_PEERCRED), or -1.
func peerUIDOf(fd uintptr) int {
	cred, err := unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1
	}
	return int(cred.Uid)
}

// errNoPeerCred is nil: this system tells who is at the other end of a
// socket.
var errNoPeerCred error
