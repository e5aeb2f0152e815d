package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
)

// ChartPoint is one point of a chart.
type ChartPoint struct {
	// X is the throughput in operations per second (latency charts) or the time in seconds
	// (soak charts).
	X float64
	// Y is the latency in milliseconds, or the measured quantity of a soak chart.
	Y float64
	// Label is written next to the point (e.g. the client count).
	Label string
}

// ChartSeries is one line of a chart.
type ChartSeries struct {
	Name   string
	Points []ChartPoint
	// Color is the line's colour (empty: the next one of the palette).
	Color string
	// Dashed draws the line dashed.
	Dashed bool
}

// niceScale returns a step and a top for an axis from 0 that covers max with about five steps
// of 1, 2 or 5 times a power of ten.
func niceScale(max float64) (step, top float64) {
	if !(max > 0) || math.IsInf(max, 0) {
		return 1, 5
	}
	raw := max / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch r := raw / mag; {
	case r <= 1:
		step = mag
	case r <= 2:
		step = 2 * mag
	case r <= 5:
		step = 5 * mag
	default:
		step = 10 * mag
	}
	top = math.Ceil(max/step) * step
	if top < max*1.02 { // leave room above the highest point
		top += step
	}
	return step, top
}

// tickLabel prints an axis value without trailing zeros.
func tickLabel(v float64) string {
	if v >= 10000 && math.Mod(v, 1000) == 0 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

var chartColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

// Every chart panel has this size and these margins.
const (
	chartWidth, chartHeight = 760, 480
	chartLeft, chartRight   = 80, 150
	chartTop, chartBottom   = 50, 60
)

// chartPanel is one chart: axes from 0, a line per series, a legend on the right.
type chartPanel struct {
	title, xLabel, yLabel string
	series                []ChartSeries
	// markers draws a circle at every point (and its label, if any).
	markers bool
}

// WriteSVG writes a line chart of latency (y, milliseconds) against throughput (x, ops/s), one
// line per series with every point labelled, as a self-contained SVG document.
func WriteSVG(w io.Writer, title, yLabel string, series []ChartSeries) error {
	return writeChartSVG(w, []chartPanel{{title: title, xLabel: "throughput (operations/s)", yLabel: yLabel, series: series, markers: true}})
}

// writeChartSVG writes panels one above the other as one self-contained SVG document.
func writeChartSVG(w io.Writer, panels []chartPanel) error {
	var b bytes.Buffer
	height := chartHeight * len(panels)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartWidth, height, chartWidth, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartWidth, height)
	for i, p := range panels {
		if len(panels) > 1 {
			fmt.Fprintf(&b, `<g transform="translate(0 %d)">`+"\n", i*chartHeight)
		}
		p.draw(&b)
		if len(panels) > 1 {
			b.WriteString("</g>\n")
		}
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// draw writes the panel's elements, in a box of chartWidth × chartHeight from the origin.
func (c chartPanel) draw(b *bytes.Buffer) {
	const (
		left, top = chartLeft, chartTop
		plotW     = chartWidth - chartLeft - chartRight
		plotH     = chartHeight - chartTop - chartBottom
	)
	var maxX, maxY float64
	for _, s := range c.series {
		for _, p := range s.Points {
			maxX, maxY = math.Max(maxX, p.X), math.Max(maxY, p.Y)
		}
	}
	xStep, xTop := niceScale(maxX)
	yStep, yTop := niceScale(maxY)
	px := func(x float64) float64 { return left + x/xTop*plotW }
	py := func(y float64) float64 { return top + plotH - y/yTop*plotH }
	esc := func(s string) string {
		var e bytes.Buffer
		xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	fmt.Fprintf(b, `<text x="%d" y="28" font-size="16" font-weight="bold">%s</text>`+"\n", left, esc(c.title))
	// Grid and ticks.
	for x := 0.0; x <= xTop+xStep/2; x += xStep {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>`+"\n", px(x), top, px(x), top+plotH)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(x), top+plotH+18, tickLabel(x))
	}
	for y := 0.0; y <= yTop+yStep/2; y += yStep {
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, py(y), left+plotW, py(y))
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-8, py(y), tickLabel(y))
	}
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", left, top, plotW, plotH)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", left+plotW/2, chartHeight-16, esc(c.xLabel))
	fmt.Fprintf(b, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">%s</text>`+"\n", top+plotH/2, top+plotH/2, esc(c.yLabel))
	// Lines, points, labels and the legend.
	for i, s := range c.series {
		color := s.Color
		if color == "" {
			color = chartColors[i%len(chartColors)]
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		if len(s.Points) > 1 {
			b.WriteString(`<polyline fill="none" stroke-width="2" stroke="` + color + `"` + dash + ` points="`)
			for j, p := range s.Points {
				if j > 0 {
					b.WriteByte(' ')
				}
				fmt.Fprintf(b, "%.1f,%.1f", px(p.X), py(p.Y))
			}
			b.WriteString("\"/>\n")
		}
		for _, p := range s.Points {
			if !c.markers {
				break
			}
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", px(p.X), py(p.Y), color)
			if p.Label != "" {
				fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", px(p.X)+6, py(p.Y)-6, color, esc(p.Label))
			}
		}
		ly := top + 10 + 20*i
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", left+plotW+15, ly, left+plotW+40, ly, color, dash)
		fmt.Fprintf(b, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", left+plotW+46, ly, esc(s.Name))
	}
}
