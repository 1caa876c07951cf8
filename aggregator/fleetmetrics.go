package aggregator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgemirror/edgemirror/internal/wire"
)

// Per-edge metrics of the fleet view. They are computed from the view at
// scrape time, so every aggregator of a hub exports the same values (an
// alert should aggregate with max by (edge)). The only label is the edge
// id, one series per edge.
var (
	descEdgeRPO = prometheus.NewDesc(namespace+"_aggregator_edge_rpo_seconds",
		"RPO of the edge: age of its oldest record not yet in the hub as it last reported, plus the time since it was last heard from while disconnected.",
		[]string{"edge"}, nil)
	descEdgeBacklogRecords = prometheus.NewDesc(namespace+"_aggregator_edge_backlog_records",
		"Records in the edge's buffer not yet acknowledged, as it last reported.", []string{"edge"}, nil)
	descEdgeBacklogBytes = prometheus.NewDesc(namespace+"_aggregator_edge_backlog_bytes",
		"Chunk bytes in the edge's buffer not yet acknowledged, as it last reported.", []string{"edge"}, nil)
	descEdgeLastSeen = prometheus.NewDesc(namespace+"_aggregator_edge_last_seen_timestamp_seconds",
		"When an aggregator last heard from the edge (Unix time).", []string{"edge"}, nil)
	descEdgeLost = prometheus.NewDesc(namespace+"_aggregator_edge_lost_records_total",
		"Records of the edge lost by an explicit policy, from the loss events in the hub.", []string{"edge"}, nil)
	descEdgeBufferFill = prometheus.NewDesc(namespace+"_aggregator_edge_buffer_fill_ratio",
		"Used part of the edge's buffer budget (0 to 1), as it last reported.", []string{"edge"}, nil)
	descEdgeLag = prometheus.NewDesc(namespace+"_aggregator_edge_lag_records",
		"Records in the edge cluster the agent has not read yet, as it last reported.", []string{"edge"}, nil)
	descEdgeUp = prometheus.NewDesc(namespace+"_aggregator_edge_up",
		"1 if the edge was heard from within --disconnect-after, else 0 (also for never-seen edges).", []string{"edge"}, nil)
	descFleetEdges = prometheus.NewDesc(namespace+"_aggregator_fleet_edges",
		"Edges of the fleet view by state (ok, behind, disconnected, never-seen).", []string{"state"}, nil)
)

// fleetCollector exports the fleet view.
type fleetCollector struct{ f *fleet }

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEdgeRPO, descEdgeBacklogRecords, descEdgeBacklogBytes, descEdgeLastSeen,
		descEdgeLost, descEdgeBufferFill, descEdgeLag, descEdgeUp, descFleetEdges} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	states := map[string]int{wire.EdgeOK: 0, wire.EdgeBehind: 0, wire.EdgeDisconnected: 0, wire.EdgeNeverSeen: 0}
	for _, e := range c.f.view(time.Now()) {
		states[e.State]++
		up := 0.0
		if e.State == wire.EdgeOK || e.State == wire.EdgeBehind {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descEdgeUp, prometheus.GaugeValue, up, e.Edge)
		ch <- prometheus.MustNewConstMetric(descEdgeLost, prometheus.CounterValue, float64(e.LostRecords), e.Edge)
		if e.LastSeen == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descEdgeLastSeen, prometheus.GaugeValue, float64(e.LastSeen.UnixMilli())/1000, e.Edge)
		ch <- prometheus.MustNewConstMetric(descEdgeRPO, prometheus.GaugeValue, e.RPOSeconds, e.Edge)
		ch <- prometheus.MustNewConstMetric(descEdgeBacklogRecords, prometheus.GaugeValue, float64(e.BacklogRecords), e.Edge)
		ch <- prometheus.MustNewConstMetric(descEdgeBacklogBytes, prometheus.GaugeValue, float64(e.BacklogBytes), e.Edge)
		ch <- prometheus.MustNewConstMetric(descEdgeBufferFill, prometheus.GaugeValue, e.BufferFillRatio, e.Edge)
		ch <- prometheus.MustNewConstMetric(descEdgeLag, prometheus.GaugeValue, float64(e.EdgeLagRecords), e.Edge)
	}
	for s, n := range states {
		ch <- prometheus.MustNewConstMetric(descFleetEdges, prometheus.GaugeValue, float64(n), s)
	}
}
