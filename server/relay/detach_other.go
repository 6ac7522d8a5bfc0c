//go:build !unix

package relay

import "os/exec"

// detach leaves cmd as it is: this system runs no shared broker
// (server.SharedBrokerSupported), so EnsureBroker never starts one.
func detach(*exec.Cmd) {}
