package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shimmy-dev/shimmy/mirror"
)

// Names of the mirror's per-link metrics (label peer; shimmy_link_state
// also has state). shimmy stat --links reads them back.
const (
	MetricLinkUp         = "shimmy_link_up"
	MetricLinkState      = "shimmy_link_state"
	MetricLinkBytes      = "shimmy_link_bytes_total"
	MetricLinkMessages   = "shimmy_link_messages_total"
	MetricLinkLag        = "shimmy_link_lag"
	MetricLinkWindow     = "shimmy_link_window_bytes"
	MetricLinkReconnects = "shimmy_link_reconnects_total"
	MetricLinkLosses     = "shimmy_link_losses_total"
)

// linkCollector exports each mirror link's statistics at scrape time.
type linkCollector struct {
	stats                                                       func() []mirror.LinkStats
	up, state, bytes, messages, lag, window, reconnects, losses *prometheus.Desc
}

// NewLinkCollector exports the links that stats returns at each scrape as
// the shimmy_link_* metrics (the agent's /metrics has one over its mirror).
func NewLinkCollector(stats func() []mirror.LinkStats) prometheus.Collector {
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{"peer"}, extra...), nil)
	}
	return &linkCollector{
		stats:      stats,
		up:         d(MetricLinkUp, "1 while the mirror link to the peer is up."),
		state:      d(MetricLinkState, "1 for the link's current state (connecting, up, backoff).", "state"),
		bytes:      d(MetricLinkBytes, "Payload bytes carried both ways on the link since the agent started."),
		messages:   d(MetricLinkMessages, "Messages carried both ways on the link since the agent started."),
		lag:        d(MetricLinkLag, "Messages sent that the peer has not acknowledged yet, and stream records waiting in the outbox."),
		window:     d(MetricLinkWindow, "Bytes of the peer's inbox this host may still fill."),
		reconnects: d(MetricLinkReconnects, "Links to the peer established after the first."),
		losses:     d(MetricLinkLosses, "Messages of overwrite channels lost across the link."),
	}
}

func (c *linkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.state, c.bytes, c.messages, c.lag, c.window, c.reconnects, c.losses} {
		ch <- d
	}
}

func (c *linkCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		m := func(d *prometheus.Desc, t prometheus.ValueType, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, t, v, append([]string{s.Peer}, extra...)...)
		}
		m(c.up, prometheus.GaugeValue, b2f(s.State == mirror.StateUp))
		m(c.state, prometheus.GaugeValue, 1, string(s.State))
		m(c.bytes, prometheus.CounterValue, float64(s.Bytes))
		m(c.messages, prometheus.CounterValue, float64(s.Messages))
		m(c.lag, prometheus.GaugeValue, float64(s.Lag))
		m(c.window, prometheus.GaugeValue, float64(s.Window))
		m(c.reconnects, prometheus.CounterValue, float64(s.Reconnects))
		m(c.losses, prometheus.CounterValue, float64(s.Losses))
	}
}
