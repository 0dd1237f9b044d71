package syncbuf

import (
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// Writers and a reader at once (run with -race): every write lands whole.
func TestConcurrentWriteAndRead(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	const writers, writes = 4, 200
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < writes; i++ {
				b.Write([]byte("line\n"))
			}
		}()
	}
	for i := 0; i < writes; i++ {
		_ = b.String()
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != writers*writes || len(b.String()) != writers*writes*5 {
		t.Errorf("%d whole lines in %d bytes, want %d", got, len(b.String()), writers*writes)
	}
}

// As the output of a child process, read while it runs.
func TestChildOutput(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("no sh: %v", err)
	}
	var out Buffer
	cmd := exec.Command(sh, "-c", "echo one; echo two >&2")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "one\n") || !strings.Contains(s, "two\n") {
		t.Errorf("output %q", s)
	}
}
