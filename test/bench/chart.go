package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// metricBar is one bar kind of the chart.
type metricBar struct {
	label  string
	col    color.RGBA
	higher bool // true: above 1 is better for edgemirror
	value  func(p pair) (float64, bool)
}

var chartMetrics = []metricBar{
	{"throughput (records/s)", color.RGBA{0x2e, 0x8b, 0x57, 0xff}, true, func(p pair) (float64, bool) {
		return p.em.RecordsPerS / p.mm.RecordsPerS, p.mm.RecordsPerS > 0
	}},
	{"WAN bytes per record", color.RGBA{0x1f, 0x6f, 0xb4, 0xff}, false, func(p pair) (float64, bool) {
		return p.em.WANBytesPerRecord / p.mm.WANBytesPerRecord, p.mm.WANBytesPerRecord > 0
	}},
	{"CPU s per million records", color.RGBA{0xe0, 0x7b, 0x12, 0xff}, false, func(p pair) (float64, bool) {
		return cpuPerM(p.em) / cpuPerM(p.mm), p.mm.CPUSeconds > 0
	}},
	{"p99 latency", color.RGBA{0x7b, 0x3f, 0xa0, 0xff}, false, func(p pair) (float64, bool) {
		if p.em.P99LatencyMS == nil || p.mm.P99LatencyMS == nil || *p.mm.P99LatencyMS == 0 {
			return 0, false
		}
		return *p.em.P99LatencyMS / *p.mm.P99LatencyMS, true
	}},
	{"drain time / ideal", color.RGBA{0xb0, 0x30, 0x30, 0xff}, false, func(p pair) (float64, bool) {
		if p.em.DrainRatio == nil || p.mm.DrainRatio == nil {
			return 0, false
		}
		return *p.em.DrainRatio / *p.mm.DrainRatio, true
	}},
}

// writeChart draws one PNG: for every workload/compression/link measured by
// both systems, a bar per metric giving edgemirror / MirrorMaker 2 on a
// logarithmic axis centred on 1 (equal).
func writeChart(path, name string, pairs []pair) error {
	var rows []pair
	for _, p := range pairs {
		if p.em != nil && p.mm != nil {
			rows = append(rows, p)
		}
	}
	const (
		width   = 1100
		left    = 190
		right   = 40
		top     = 70
		barH    = 11
		groupGp = 14
		minLog  = -6.0 // 1/64
		maxLog  = 6.0  // 64
	)
	groupH := len(chartMetrics)*barH + groupGp
	height := top + max(1, len(rows))*groupH + 90
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	black := color.RGBA{0x20, 0x20, 0x20, 0xff}
	grey := color.RGBA{0xd0, 0xd0, 0xd0, 0xff}
	text := func(x, y int, s string, c color.Color) {
		d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	textW := func(s string) int { return len(s) * 7 }
	plotW := width - left - right
	xOf := func(v float64) int {
		l := math.Log2(v)
		l = math.Max(minLog, math.Min(maxLog, l))
		return left + int((l-minLog)/(maxLog-minLog)*float64(plotW))
	}
	text(left, 20, fmt.Sprintf("edgemirror / MirrorMaker 2 (%s matrix), log scale: 1 = equal", name), black)
	text(left, 36, "throughput: right of 1 is better for edgemirror; every other bar: left of 1 is", black)
	// grid
	for e := minLog; e <= maxLog; e++ {
		x := xOf(math.Pow(2, e))
		c := grey
		if e == 0 {
			c = black
		}
		for y := top - 8; y < top+len(rows)*groupH; y++ {
			img.Set(x, y, c)
		}
		var lab string
		if e >= 0 {
			lab = fmt.Sprintf("%g", math.Pow(2, e))
		} else {
			lab = fmt.Sprintf("1/%g", math.Pow(2, -e))
		}
		text(x-textW(lab)/2, top-12, lab, black)
	}
	one := xOf(1)
	for i, p := range rows {
		y0 := top + i*groupH
		text(8, y0+len(chartMetrics)*barH/2+4, p.key, black)
		for j, m := range chartMetrics {
			v, ok := m.value(p)
			if !ok || v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
				continue
			}
			y := y0 + j*barH
			x := xOf(v)
			x1, x2 := min(one, x), max(one, x)
			if x2-x1 < 2 {
				x2 = x1 + 2
			}
			draw.Draw(img, image.Rect(x1, y+1, x2, y+barH-1), image.NewUniform(m.col), image.Point{}, draw.Src)
			lab := fmt.Sprintf("%.2f", v)
			if x >= one {
				text(x2+3, y+barH-1, lab, black)
			} else {
				text(x1-3-textW(lab), y+barH-1, lab, black)
			}
		}
	}
	// legend
	ly := top + len(rows)*groupH + 20
	lx := left
	for _, m := range chartMetrics {
		draw.Draw(img, image.Rect(lx, ly-9, lx+14, ly+1), image.NewUniform(m.col), image.Point{}, draw.Src)
		text(lx+18, ly, m.label, black)
		lx += 18 + textW(m.label) + 24
		if lx > width-200 {
			lx, ly = left, ly+18
		}
	}
	if len(rows) == 0 {
		text(left, top+20, "no workload measured by both systems yet", black)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
