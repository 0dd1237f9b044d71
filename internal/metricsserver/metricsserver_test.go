package metricsserver

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandler(t *testing.T) {
	healthy := true
	h := Handler(prometheus.NewRegistry(), map[string]Probe{
		"/healthz": func(*http.Request) error {
			if !healthy {
				return errors.New("not mounted")
			}
			return nil
		},
	})
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}
	for _, tc := range []struct {
		name     string
		healthy  bool
		path     string
		code     int
		contains string
	}{
		{"healthy", true, "/healthz", 200, "ok"},
		{"unhealthy", false, "/healthz", 503, "not mounted"},
		{"metrics", true, "/metrics", 200, "go_goroutines"},
		{"unknown path", true, "/readyz", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			healthy = tc.healthy
			code, body := get(tc.path)
			if code != tc.code || !strings.Contains(body, tc.contains) {
				t.Fatalf("GET %s: %d %q, want %d with %q", tc.path, code, body, tc.code, tc.contains)
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	for addr, want := range map[string]bool{"": true, "off": true, "127.0.0.1:9477": false} {
		if got := Disabled(addr); got != want {
			t.Errorf("Disabled(%q) = %v, want %v", addr, got, want)
		}
	}
}
