//go:build !linux

package audit

import (
	"os"
	"testing"
)

func smallFS(t *testing.T, size int) string {
	t.Skip("a small file system is mounted on Linux only")
	return ""
}

func growFS(t *testing.T, dir string, size int) {}

func readOnlyDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions; a read-only mount is made on Linux only")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	return dir
}
