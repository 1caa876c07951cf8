package main

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// sensors makes realistic readings of a plant's temperature/humidity
// sensors: each sensor drifts slowly around its own set point, which is
// what makes real telemetry compress well, and nothing more.
type sensors struct {
	site       string
	partitions int32
	rng        *rand.Rand
	temp, hum  []float64
	seq        []int64
}

func newSensors(site string, n int, partitions int32) *sensors {
	s := &sensors{site: site, partitions: partitions, rng: rand.New(rand.NewPCG(7, 42)),
		temp: make([]float64, n), hum: make([]float64, n), seq: make([]int64, n)}
	for i := range n {
		s.temp[i] = 18 + 8*s.rng.Float64()
		s.hum[i] = 35 + 25*s.rng.Float64()
	}
	return s
}

// next returns the next n readings of randomly chosen sensors. The key is
// the sensor id, and a sensor always goes to the same partition.
func (s *sensors) next(topic string, n int) []*kgo.Record {
	recs := make([]*kgo.Record, 0, n)
	now := time.Now().Truncate(time.Millisecond) // Kafka keeps milliseconds
	for range n {
		i := s.rng.IntN(len(s.temp))
		s.temp[i] += (s.rng.Float64() - 0.5) * 0.1
		s.hum[i] += (s.rng.Float64() - 0.5) * 0.3
		s.seq[i]++
		id := fmt.Sprintf("th-%04d", i)
		value := fmt.Appendf(nil,
			`{"site":%q,"sensor":%q,"zone":"hall-%d","temperature_c":%.2f,"humidity_pct":%.1f,"battery_v":%.2f,"seq":%d,"ts":%q}`,
			s.site, id, i%12, s.temp[i], s.hum[i], 3.6-float64(s.seq[i])/1e5, s.seq[i], now.UTC().Format(time.RFC3339Nano))
		recs = append(recs, &kgo.Record{
			Topic:     topic,
			Partition: int32(i) % s.partitions,
			Key:       []byte(id),
			Value:     value,
			Headers:   []kgo.RecordHeader{{Key: "content-type", Value: []byte("application/json")}},
			Timestamp: now,
		})
	}
	return recs
}
