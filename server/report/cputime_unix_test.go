//go:build unix

package report

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time this process has used (user and system), so a
// benchmark on a loaded machine can say how much work it did as well as
// how long it waited for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
