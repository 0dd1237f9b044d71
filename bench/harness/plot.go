package harness

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plots in the manner of the paper's figures 4-6: for each message size a
// group of bars, one per system, on a logarithmic axis.

var palette = []color.RGBA{
	{31, 119, 180, 255}, {174, 199, 232, 255}, {44, 160, 44, 255}, {255, 127, 14, 255},
	{255, 187, 120, 255}, {148, 103, 189, 255}, {214, 39, 40, 255}, {140, 86, 75, 255},
	{23, 190, 207, 255}, {127, 127, 127, 255}, // one colour a system: there are nine
}

// logBars draws bars from a floor up to each value, so that they fit a log
// axis (gonum's BarChart starts at zero). Missing values (<= 0) draw nothing.
type logBars struct {
	values []float64
	floor  float64
	width  vg.Length
	offset vg.Length
	color  color.Color
}

func (b *logBars) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for i, v := range b.values {
		if v <= 0 {
			continue
		}
		x := trX(float64(i)) + b.offset - b.width/2
		y0, y1 := trY(b.floor), trY(v)
		pts := []vg.Point{{X: x, Y: y0}, {X: x, Y: y1}, {X: x + b.width, Y: y1}, {X: x + b.width, Y: y0}}
		c.FillPolygon(b.color, c.ClipPolygonY(pts))
	}
}

func (b *logBars) DataRange() (xmin, xmax, ymin, ymax float64) {
	ymin, ymax = b.floor, b.floor
	for _, v := range b.values {
		if v > 0 {
			ymax = math.Max(ymax, v)
		}
	}
	return -0.5, float64(len(b.values)) - 0.5, ymin, ymax
}

func (b *logBars) Thumbnail(c *draw.Canvas) {
	pts := []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Min.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Max.X, Y: c.Min.Y}}
	c.FillPolygon(b.color, c.ClipPolygonY(pts))
}

type figure struct {
	file, title, ylabel string
	mode                string
	subs                int
	value               func(Result) float64
}

func (rep *Report) plot(dir string) error {
	var figs []figure
	for _, subs := range []int{1, 4} {
		sfx := fmt.Sprintf("%dsub", subs)
		figs = append(figs,
			figure{"throughput-msgs-" + sfx + ".png", fmt.Sprintf("Throughput at saturation, 1 publisher → %d subscriber(s)", subs), "messages/s per subscriber (log)", "throughput", subs,
				func(r Result) float64 { return r.MsgsPerSec }},
			figure{"throughput-mb-" + sfx + ".png", fmt.Sprintf("Throughput at saturation, 1 publisher → %d subscriber(s)", subs), "MB/s per subscriber (log)", "throughput", subs,
				func(r Result) float64 { return r.MBPerSec }},
			figure{"latency-p50-" + sfx + ".png", fmt.Sprintf("Median one-way latency at a fixed rate, %d subscriber(s)", subs), "µs (log)", "latency", subs,
				func(r Result) float64 { return float64(r.Latency.P50Ns) / 1e3 }},
			figure{"latency-p99-" + sfx + ".png", fmt.Sprintf("p99 one-way latency at a fixed rate, %d subscriber(s)", subs), "µs (log)", "latency", subs,
				func(r Result) float64 { return float64(r.Latency.P99Ns) / 1e3 }},
			figure{"cpu-" + sfx + ".png", fmt.Sprintf("CPU time per message, all processes, at saturation, %d subscriber(s)", subs), "µs of CPU per message (log)", "throughput", subs,
				func(r Result) float64 { return r.CPUPerMsgNs / 1e3 }},
		)
	}
	for _, f := range figs {
		if err := rep.plotFigure(dir, f); err != nil {
			return fmt.Errorf("%s: %w", f.file, err)
		}
	}
	return nil
}

// pick returns, per system and size, the valid result of the figure's
// mode with the most messages (the steadiest figure).
func (rep *Report) pick(f figure) (systems []string, sizes []int, val map[string]map[int]float64) {
	val = map[string]map[int]float64{}
	best := map[string]map[int]int{}
	for _, r := range rep.Results {
		if r.Mode != f.mode || r.Subs != f.subs || !r.Valid() {
			continue
		}
		if !slices.Contains(systems, r.System) {
			systems = append(systems, r.System)
			val[r.System], best[r.System] = map[int]float64{}, map[int]int{}
		}
		if !slices.Contains(sizes, r.Size) {
			sizes = append(sizes, r.Size)
		}
		if r.Sent >= best[r.System][r.Size] {
			best[r.System][r.Size] = r.Sent
			val[r.System][r.Size] = f.value(r)
		}
	}
	slices.Sort(sizes)
	return systems, sizes, val
}

func (rep *Report) plotFigure(dir string, f figure) error {
	systems, sizes, val := rep.pick(f)
	if len(systems) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = f.title
	p.Y.Label.Text = f.ylabel
	p.X.Label.Text = "message size"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range systems {
		for _, v := range val[s] {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) {
		return nil
	}
	floor := math.Pow(10, math.Floor(math.Log10(lo)))
	width := vg.Points(float64(min(14, 300/max(1, len(systems)*len(sizes)))))
	for i, s := range systems {
		vs := make([]float64, len(sizes))
		for j, size := range sizes {
			vs[j] = val[s][size]
		}
		b := &logBars{values: vs, floor: floor, width: width, color: palette[i%len(palette)],
			offset: width * vg.Length(float64(i)-float64(len(systems)-1)/2)}
		p.Add(b)
		p.Legend.Add(s, b)
	}
	p.Y.Min, p.Y.Max = floor, math.Pow(10, math.Ceil(math.Log10(hi)+0.3))
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(8)
	var names []string
	for _, s := range sizes {
		names = append(names, sizeName(s))
	}
	p.NominalX(names...)
	p.Add(plotter.NewGrid())
	return p.Save(9*vg.Inch, 5*vg.Inch, filepath.Join(dir, f.file))
}
