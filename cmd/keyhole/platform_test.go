package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestItBuildsWhereUsersAre_MacOSAndWindows (issue 13 item 9): the CLI
// builds for macOS and Windows, whose platform code (the data dir's lock,
// the socket's peer check, the background broker's detachment) sits
// behind build tags.
func TestItBuildsWhereUsersAre_MacOSAndWindows(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds the CLI")
	}
	for _, target := range []struct{ goos, goarch string }{{"darwin", "arm64"}, {"windows", "amd64"}} {
		t.Run(target.goos+"/"+target.goarch, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "keyhole")
			build := exec.Command("go", "build", "-o", out, ".")
			build.Env = append(os.Environ(), "GOOS="+target.goos, "GOARCH="+target.goarch, "CGO_ENABLED=0")
			if msg, err := build.CombinedOutput(); err != nil {
				t.Fatalf("GOOS=%s GOARCH=%s go build ./cmd/keyhole: %v\n%s", target.goos, target.goarch, err, msg)
			}
			if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
				t.Fatalf("the %s build wrote no binary: %v", target.goos, err)
			}
		})
	}
}
