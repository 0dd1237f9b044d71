package harness

import (
	"os"
	"testing"
)

// TestEndToEnd re-executes this test binary for every publisher and
// subscriber: those processes run their role here, not the tests.
func TestMain(m *testing.M) {
	if code, ok := Child(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}
