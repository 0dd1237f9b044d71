package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shimmy-dev/shimmy/agent"
)

// link is one row of shimmy stat --links.
type link struct {
	peer, state                                      string
	bytes, messages, lag, window, reconnects, losses float64
}

// printLinks prints the agent's mirror links, read from its /metrics.
func printLinks(e *env, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return usagef("--metrics %q: %v", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is the agent running with --metrics %s?)", err, addr)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET http://%s/metrics: %s", addr, resp.Status)
	}
	links, err := parseLinks(resp.Body)
	if err != nil {
		return fmt.Errorf("metrics of %s: %w", addr, err)
	}
	if len(links) == 0 {
		fmt.Fprintln(e.stdout, "no mirror links (the agent runs no mirror, or its plan lists no peer)")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSTATE\tBYTES\tMESSAGES\tLAG\tWINDOW\tRECONNECTS\tLOSSES")
	for _, l := range links {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\n", l.peer, l.state, l.bytes, l.messages, l.lag, l.window, l.reconnects, l.losses)
	}
	return tw.Flush()
}

// parseLinks collects the shimmy_link_* metrics by peer, sorted by peer.
func parseLinks(r io.Reader) ([]link, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	byPeer := map[string]*link{}
	each := func(name string, f func(l *link, m *dto.Metric)) {
		fam := fams[name]
		if fam == nil {
			return
		}
		for _, m := range fam.GetMetric() {
			peer := label(m, "peer")
			l := byPeer[peer]
			if l == nil {
				l = &link{peer: peer, state: "?"}
				byPeer[peer] = l
			}
			f(l, m)
		}
	}
	each(agent.MetricLinkState, func(l *link, m *dto.Metric) {
		if m.GetGauge().GetValue() == 1 {
			l.state = label(m, "state")
		}
	})
	for name, field := range map[string]func(*link) *float64{
		agent.MetricLinkBytes:      func(l *link) *float64 { return &l.bytes },
		agent.MetricLinkMessages:   func(l *link) *float64 { return &l.messages },
		agent.MetricLinkLag:        func(l *link) *float64 { return &l.lag },
		agent.MetricLinkWindow:     func(l *link) *float64 { return &l.window },
		agent.MetricLinkReconnects: func(l *link) *float64 { return &l.reconnects },
		agent.MetricLinkLosses:     func(l *link) *float64 { return &l.losses },
	} {
		each(name, func(l *link, m *dto.Metric) { *field(l) = value(m) })
	}
	out := make([]link, 0, len(byPeer))
	for _, l := range byPeer {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].peer < out[j].peer })
	return out, nil
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}
