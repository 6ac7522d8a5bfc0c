//go:build unix

package relay

import (
	"os/exec"
	"syscall"
)

// detach runs cmd in a session of its own, so the broker outlives the
// stdio client that started it and its terminal's signals.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
}
