package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAgentRefusesWithoutPrivilege: an agent started by a user without
// CAP_SYS_ADMIN refuses with a message that says why, and before it
// creates its mount point or state directory (issue 10 item 12).
func TestAgentRefusesWithoutPrivilege(t *testing.T) {
	requireE2E(t)
	uid, gid := testUser(t)
	// A directory the user may create in, so that only the check stops it.
	base, err := os.MkdirTemp("", "shimmy-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o777); err != nil {
		t.Fatal(err)
	}
	mount, state := filepath.Join(base, "mnt", "shimmy"), filepath.Join(base, "state", "shimmy")
	cmd := exec.Command(shimmyBin, "agent", "--mount", mount, "--state-dir", state, "--metrics", "off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("agent as uid %d: %v, want a refusal (output %q)", uid, err, out)
	}
	if !strings.Contains(string(out), "CAP_SYS_ADMIN") {
		t.Errorf("refusal says %q, want it to name CAP_SYS_ADMIN", out)
	}
	for _, dir := range []string{filepath.Join(base, "mnt"), filepath.Join(base, "state")} {
		if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused agent left %s behind (%v)", dir, err)
		}
	}
}
