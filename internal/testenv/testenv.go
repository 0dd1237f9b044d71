// Package testenv holds what the tests of several packages set up alike:
// a fresh tmpfs directory for rings and a logger that stays quiet.
package testenv

import (
	"os"
	"testing"

	"github.com/sirupsen/logrus"
)

// ShmDir makes a fresh directory under /dev/shm (tmpfs, where rings live),
// removed at cleanup. A machine without /dev/shm skips the test.
func ShmDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", prefix)
	if err != nil {
		t.Skipf("no /dev/shm here: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// QuietLog is a logger that shows warnings and errors only.
func QuietLog() *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	return l
}
