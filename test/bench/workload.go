package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// A workload makes the records of one kind, deterministically: record i of
// a workload is the same in every run and for both systems. Every record
// carries its id in the value (sensor: "seq":ID, logs: req=ID) so that the
// hub can be checked record by record, duplicates included, whatever the
// system does to keys, headers and offsets.
type workload struct {
	name string
	// make appends record id's key and value to the buffers and returns them.
	make func(id int64, r *rand.Rand, key, val []byte) ([]byte, []byte)
	// parseID finds the id in a value; ok is false when there is none.
	parseID func(val []byte) (int64, bool)
	// approxSize is a typical value size, for planning rates and timeouts.
	approxSize int
}

func workloadByName(name string) (workload, error) {
	switch name {
	case "sensor":
		return workload{name: name, make: sensorRecord, parseID: idAfter(`"seq":`), approxSize: 150}, nil
	case "logs":
		return workload{name: name, make: logRecord, parseID: idAfter(" req="), approxSize: 500}, nil
	}
	return workload{}, fmt.Errorf("unknown workload %q (want sensor or logs)", name)
}

// rngFor returns the random source of record id: the same for a given id
// in every run, so that a record does not depend on which goroutine or
// which run produced it.
func rngFor(id int64) *rand.Rand { return rand.New(rand.NewPCG(uint64(id), 0x5eed)) }

var benchEpoch = time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC).UnixMilli()

// Sensor readings: 200 sensors of a few types on a plant, one JSON object
// each, 100-200 bytes. Field names, site and units repeat, values drift
// slowly: what a gateway really sees.
var sensorTypes = []struct {
	kind, unit string
	base, span float64
}{
	{"temperature", "C", 21, 6},
	{"pressure", "kPa", 101.3, 4},
	{"humidity", "%", 45, 20},
	{"vibration", "mm/s", 2.5, 3},
	{"current", "A", 12, 5},
}

func sensorRecord(id int64, r *rand.Rand, key, val []byte) ([]byte, []byte) {
	sensor := int(id % 200)
	t := sensorTypes[sensor%len(sensorTypes)]
	key = fmt.Appendf(key[:0], "plant-7/line-%d/%s-%03d", sensor%6, t.kind, sensor)
	// a slow wave per sensor plus a little noise
	phase := float64(id/200%3600) / 3600
	v := t.base + t.span*0.5*sin01(phase+float64(sensor)/200) + r.NormFloat64()*t.span*0.01
	status := "ok"
	if r.IntN(50) == 0 {
		status = "warn"
	}
	val = append(val[:0], `{"seq":`...)
	val = strconv.AppendInt(val, id, 10)
	val = append(val, `,"site":"plant-7","line":`...)
	val = strconv.AppendInt(val, int64(sensor%6), 10)
	val = append(val, `,"sensor":"`...)
	val = append(val, t.kind...)
	val = fmt.Appendf(val, `-%03d","ts":`, sensor)
	val = strconv.AppendInt(val, benchEpoch+id*5, 10)
	val = append(val, `,"value":`...)
	val = strconv.AppendFloat(val, v, 'f', 2, 64)
	val = append(val, `,"unit":"`...)
	val = append(val, t.unit...)
	val = append(val, `","status":"`...)
	val = append(val, status...)
	val = append(val, '"')
	if sensor%4 == 0 {
		val = fmt.Appendf(val, `,"battery":%d,"fw":"2.4.%d"`, 100-int(id/5000%60), sensor%3)
	}
	val = append(val, '}')
	return key, val
}

// sin01 is a cheap smooth periodic function of x (period 1), in [-1, 1].
func sin01(x float64) float64 {
	x -= float64(int64(x))
	if x < 0.5 {
		return 1 - 16*(x-0.25)*(x-0.25)
	}
	return 16*(x-0.75)*(x-0.75) - 1
}

// Log lines of about 500 bytes: an access log of an edge gateway with a
// timestamp, level, a few hosts and paths, a random trace id (16 bytes of
// entropy, as real logs have) and one of a handful of messages.
var (
	logHosts = []string{"gw-01", "gw-02", "plc-bridge", "historian", "mqtt-in"}
	logPaths = []string{"/api/v2/devices/%d/telemetry", "/api/v2/devices/%d/config", "/api/v2/lines/%d/state",
		"/metrics", "/api/v2/alarms?since=%d", "/healthz"}
	logAgents = []string{
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"edge-collector/3.2.1 (linux; arm64) go-http-client/1.1",
		"Prometheus/2.55.1",
		"python-requests/2.32.3 opcua-bridge/0.9.4",
	}
	logMessages = []string{
		"request served from cache; upstream historian not contacted",
		"telemetry batch accepted and queued for the line controller",
		"configuration unchanged since last poll, returning 304 to client",
		"slow upstream response from PLC bridge, retried once before answering",
		"alarm window evaluated, no threshold crossed for this device",
		"client certificate verified against plant CA, session resumed",
	}
	logStatus = []int{200, 200, 200, 200, 200, 204, 304, 404, 500, 503}
)

func logRecord(id int64, r *rand.Rand, key, val []byte) ([]byte, []byte) {
	ts := time.UnixMilli(benchEpoch + id*3).UTC()
	host := logHosts[r.IntN(len(logHosts))]
	status := logStatus[r.IntN(len(logStatus))]
	level := "INFO "
	if status >= 500 {
		level = "ERROR"
	} else if status == 404 {
		level = "WARN "
	}
	path := logPaths[r.IntN(len(logPaths))]
	method := "GET"
	if r.IntN(4) == 0 {
		method = "POST"
	}
	val = ts.AppendFormat(val[:0], "2006-01-02T15:04:05.000Z07:00")
	val = append(val, ' ')
	val = append(val, level...)
	val = append(val, " ["...)
	val = append(val, host...)
	val = append(val, "] http.access req="...)
	val = strconv.AppendInt(val, id, 10)
	val = fmt.Appendf(val, " method=%s path=", method)
	val = fmt.Appendf(val, path, r.IntN(5000))
	val = fmt.Appendf(val, " status=%d bytes=%d dur_ms=%.1f client=203.0.113.%d", status, 200+r.IntN(20000),
		0.3+r.ExpFloat64()*15, 1+r.IntN(40))
	val = append(val, " trace="...)
	val = fmt.Appendf(val, "%016x%016x", r.Uint64(), r.Uint64())
	val = append(val, ` ua="`...)
	val = append(val, logAgents[r.IntN(len(logAgents))]...)
	val = append(val, `" tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 upstream=historian:8443 msg="`...)
	val = append(val, logMessages[r.IntN(len(logMessages))]...)
	val = append(val, '"')
	for len(val) < 480 {
		val = fmt.Appendf(val, " tag%d=%s", len(val)%7, logHosts[r.IntN(len(logHosts))])
	}
	return key[:0], val
}

// idAfter returns a parser of the decimal number following marker.
func idAfter(marker string) func([]byte) (int64, bool) {
	m := []byte(marker)
	return func(v []byte) (int64, bool) {
		i := bytes.Index(v, m)
		if i < 0 {
			return 0, false
		}
		var n int64
		j := i + len(m)
		start := j
		for ; j < len(v) && v[j] >= '0' && v[j] <= '9'; j++ {
			n = n*10 + int64(v[j]-'0')
		}
		return n, j > start
	}
}
