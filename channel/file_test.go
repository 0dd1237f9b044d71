package channel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestMapFile(t *testing.T) {
	_, path := newShmRing(t, Config{Capacity: 4096})
	a, err := MapFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := MapFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.NewSubscriber(SubscriberOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := a.NewPublisher(PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(context.Background(), []byte("through two mappings")); err != nil {
		t.Fatal(err)
	}
	got, err := sub.Next(context.Background(), nil)
	if err != nil || string(got) != "through two mappings" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, r := range []*Ring{a, b} {
		if err := r.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	// Not a ring, and no file at all: clear errors, nothing left mapped.
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := MapFile(junk); !errors.Is(err, ErrBadMagic) {
		t.Errorf("MapFile(zeros) = %v, want ErrBadMagic", err)
	}
	if _, err := MapFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("MapFile(missing) = %v, want ErrNotExist", err)
	}
}
