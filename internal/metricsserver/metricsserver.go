// Package metricsserver is the HTTP handler of the agent's and the
// controller's metrics address: /metrics for Prometheus and the probe
// endpoints the manifests point at. One owner, so that both programs
// answer the same way and share the meaning of "off".
package metricsserver

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Off as a metrics address disables the server (as "" does).
const Off = "off"

// Disabled reports whether addr turns the server off.
func Disabled(addr string) bool { return addr == "" || addr == Off }

// Probe answers a probe: nil is healthy, an error is served as 503 with
// its text.
type Probe func(*http.Request) error

// Handler serves /metrics from reg, to which it adds the process and Go
// collectors, and each probe at its path ("ok" when it passes).
func Handler(reg *prometheus.Registry, probes map[string]Probe) http.Handler {
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	for path, probe := range probes {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if err := probe(r); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ok"))
		})
	}
	return mux
}
