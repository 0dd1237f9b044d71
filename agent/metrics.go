package agent

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shimmy-dev/shimmy/internal/metricsserver"
)

// channelCollector exports every channel's counters at scrape time, so the
// values are as fresh as the stats file and nothing runs between scrapes.
// It never waits for a channel: one whose lock is held shows its last
// snapshot (registry.Channel.StatsNoWait).
type channelCollector struct {
	a                                                          *Agent
	messages, bytes, pubs, subs, lag, lost, reaped, broken, up *prometheus.Desc
}

func newChannelCollector(a *Agent) *channelCollector {
	l := []string{"namespace", "channel"}
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("shimmy_channel_"+name, help, l, nil)
	}
	return &channelCollector{
		a:        a,
		messages: d("messages_total", "Messages published since the ring was formatted (all queues)."),
		bytes:    d("bytes_total", "Ring bytes taken by published frames, headers and padding included."),
		pubs:     d("publishers", "Live publishers (mmap clients and open pub files)."),
		subs:     d("subscribers", "Live subscribers and stream readers."),
		lag:      d("lag_max", "Messages the slowest subscriber is behind (stream: messages waiting)."),
		lost:     d("lost_total", "Messages lost to overwrite by subscribers."),
		reaped:   d("reaped_total", "Dead members evicted and dead claims unblocked."),
		broken:   d("broken", "1 if the ring failed validation and its files return EIO."),
		up:       prometheus.NewDesc("shimmy_mounted", "1 while the agent's filesystem is mounted.", nil, nil),
	}
}

func (c *channelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.messages, c.bytes, c.pubs, c.subs, c.lag, c.lost, c.reaped, c.broken, c.up} {
		ch <- d
	}
}

func (c *channelCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, b2f(c.a.mounted.Load()))
	if c.a.reg == nil {
		return
	}
	for _, chn := range c.a.reg.Channels() {
		s := chn.StatsNoWait()
		lv := []string{s.NS, s.Name}
		ch <- prometheus.MustNewConstMetric(c.messages, prometheus.CounterValue, float64(s.Messages), lv...)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.Bytes), lv...)
		ch <- prometheus.MustNewConstMetric(c.pubs, prometheus.GaugeValue, float64(s.Publishers), lv...)
		ch <- prometheus.MustNewConstMetric(c.subs, prometheus.GaugeValue, float64(s.Subscribers), lv...)
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(s.LagMax), lv...)
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(s.Lost), lv...)
		ch <- prometheus.MustNewConstMetric(c.reaped, prometheus.CounterValue, float64(s.Reaped), lv...)
		ch <- prometheus.MustNewConstMetric(c.broken, prometheus.GaugeValue, b2f(s.Broken), lv...)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// handler serves /metrics from a private registry and /healthz ("ok"
// once the filesystem is mounted).
func (a *Agent) handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newChannelCollector(a))
	reg.MustRegister(NewLinkCollector(a.LinkStats))
	return metricsserver.Handler(reg, map[string]metricsserver.Probe{
		"/healthz": func(*http.Request) error {
			if !a.mounted.Load() {
				return errNotMounted
			}
			return nil
		},
	})
}

var errNotMounted = errors.New("not mounted")
