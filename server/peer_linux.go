package server

import "golang.org/x/sys/unix"

// peerUIDOf returns the uid of the process at the other end of a unix
// socket (SO_PEERCRED), or -1.
func peerUIDOf(fd uintptr) int {
	cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1
	}
	return int(cred.Uid)
}

// errNoPeerCred is nil: Linux tells who is at the other end of a socket.
var errNoPeerCred error
