// Command pulse-bench is the go-pulse side of pulse-trio's benchmark runner.
//
// It drives the real goa.design/pulse library (v1.6.5): every pool node, stream, sink,
// reader and map it measures is the library's own. Each invocation runs one measurement
// and prints one JSON line on stdout:
//
//	{"values": {"<metric>": number, ...}, "samples_ms": [...], "stalls": n, "cleanup": [...]}
//
// "samples_ms" holds latency samples when the measurement has some. Diagnostics go to
// stderr. The Python runner (benchmarks/_gopulse.py) builds and calls it.
//
// Subcommands (all take --redis host:port and --name <unique key name>):
//
//	jobs      --jobs N --warmup W --workers K --producers P [--rate R] [--processes 2 --addr A]
//	pool-worker --workers K   (the second process of "jobs --processes 2")
//	add       --events N --warmup W
//	sink      --events N --instances K
//	latency   --events N --warmup W --rate R
//	rmap-get  --keys K --calls N
//	rmap-propagation --samples N --warmup W
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"goa.design/pulse/pool"
	"goa.design/pulse/rmap"
	"goa.design/pulse/streaming"
	"goa.design/pulse/streaming/options"
)

// stallThreshold is the DispatchJob duration counted as a stall; dispatchTimeout bounds one.
const (
	stallThreshold  = time.Second
	dispatchTimeout = 5 * time.Second
)

var payload = make([]byte, 64)

// report is the one JSON line a subcommand prints.
type report struct {
	Values    map[string]float64 `json:"values"`
	SamplesMS []float64          `json:"samples_ms,omitempty"`
	Stalls    int                `json:"stalls"`
	// Cleanup lists names the runner deletes every key of (the pool's workers: their keys
	// are named by worker ID, not by pool, and no Shutdown removed them).
	Cleanup []string `json:"cleanup,omitempty"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pulse-bench: "+format+"\n", args...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func emit(r report) {
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fail("write stdout: %v", err)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

func withLatency(r report, samples []float64) report {
	sorted := append([]float64(nil), samples...)
	sort.Float64s(sorted)
	r.Values["p50_ms"] = percentile(sorted, 0.50)
	r.Values["p99_ms"] = percentile(sorted, 0.99)
	r.SamplesMS = samples
	return r
}

// noop is a pool.JobHandler that does nothing.
type noop struct{}

func (noop) Start(*pool.Job) error { return nil }
func (noop) Stop(string) error     { return nil }

func runJobs(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("jobs", flag.ExitOnError)
	jobs := fs.Int("jobs", 2000, "timed dispatches")
	warmup := fs.Int("warmup", 200, "untimed dispatches before")
	workers := fs.Int("workers", 4, "workers on the node")
	producers := fs.Int("producers", 1, "dispatching goroutines")
	rate := fs.Float64("rate", 0, "paced sequential dispatches per second (0: as fast as possible)")
	processes := fs.Int("processes", 1, "1, or 2: half the workers in a child process (pool-worker)")
	addr := fs.String("addr", "", "the server, for the child process")
	check(fs.Parse(args), "flags")
	local := *workers
	if *processes == 2 {
		local = *workers - *workers/2
		child := exec.Command(os.Args[0], "pool-worker", "--redis", *addr, "--name", name, "--workers", strconv.Itoa(*workers/2))
		child.Stderr = os.Stderr
		stdout, err := child.StdoutPipe()
		check(err, "pool-worker pipe")
		check(child.Start(), "pool-worker start")
		defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ready") {
			fail("pool-worker: %q %v", line, err)
		}
	}
	node, err := pool.AddNode(ctx, name, rdb, pool.WithMaxQueuedJobs(*jobs+*warmup+1))
	check(err, "pool.AddNode")
	for i := 0; i < local; i++ {
		_, err := node.AddWorker(ctx, noop{})
		check(err, "AddWorker")
	}
	var stalls atomic.Int64
	var mu sync.Mutex
	var samples []float64
	var timeouts atomic.Int64
	dispatch := func(key string, record bool) {
		started := time.Now()
		// Bounded: a DispatchJob of v1.6.5 now and then never returns until its job TTL
		// (40 s); such a dispatch counts as a stall and a timeout, and the run goes on.
		dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
		err := node.DispatchJob(dctx, key, payload)
		cancel()
		took := time.Since(started)
		if err != nil {
			if dctx.Err() == nil {
				fail("DispatchJob: %v", err)
			}
			timeouts.Add(1)
		}
		if took >= stallThreshold {
			stalls.Add(1)
		}
		if record {
			mu.Lock()
			samples = append(samples, ms(took))
			mu.Unlock()
		}
	}
	for i := 0; i < *warmup; i++ {
		dispatch("w"+strconv.Itoa(i), false)
	}
	started := time.Now()
	if *rate > 0 {
		interval := time.Duration(float64(time.Second) / *rate)
		next := time.Now()
		for i := 0; i < *jobs; i++ {
			time.Sleep(time.Until(next))
			dispatch("j"+strconv.Itoa(i), true)
			next = next.Add(interval)
		}
	} else {
		var wg sync.WaitGroup
		for p := 0; p < *producers; p++ {
			wg.Add(1)
			go func(first int) {
				defer wg.Done()
				for i := first; i < *jobs; i += *producers {
					dispatch("j"+strconv.Itoa(i), true)
				}
			}(p)
		}
		wg.Wait()
	}
	elapsed := time.Since(started)
	// No node.Shutdown: it takes 15 s whatever its context says (v1.6.5). The process exits
	// once it printed its report and the runner deletes the pool's keys (they all hold the
	// pool's unique name).
	r := report{Values: map[string]float64{
		"jobs_per_s": float64(*jobs) / elapsed.Seconds(),
		"timeouts":   float64(timeouts.Load()),
	}, Stalls: int(stalls.Load())}
	for _, w := range node.PoolWorkers() {
		r.Cleanup = append(r.Cleanup, w.ID)
	}
	return withLatency(r, samples)
}

// runPoolWorker is the child of "jobs --processes 2": a node with --workers no-op workers,
// "ready" on stdout once they are added, then it runs until killed.
func runPoolWorker(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("pool-worker", flag.ExitOnError)
	workers := fs.Int("workers", 2, "workers on the node")
	check(fs.Parse(args), "flags")
	node, err := pool.AddNode(ctx, name, rdb)
	check(err, "pool.AddNode")
	for i := 0; i < *workers; i++ {
		_, err := node.AddWorker(ctx, noop{})
		check(err, "AddWorker")
	}
	fmt.Println("ready")
	select {}
}

func openStream(rdb *redis.Client, name string, maxLen int) *streaming.Stream {
	s, err := streaming.NewStream(name, rdb, options.WithStreamMaxLen(maxLen))
	check(err, "NewStream")
	return s
}

func runAdd(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("add", flag.ExitOnError)
	events := fs.Int("events", 2000, "timed adds")
	warmup := fs.Int("warmup", 200, "untimed adds before")
	check(fs.Parse(args), "flags")
	s := openStream(rdb, name, 1000) // pulse-trio's default max_len
	defer func() { _ = s.Destroy(context.Background()) }()
	for i := 0; i < *warmup; i++ {
		_, err := s.Add(ctx, "bench", payload)
		check(err, "Add")
	}
	started := time.Now()
	for i := 0; i < *events; i++ {
		_, err := s.Add(ctx, "bench", payload)
		check(err, "Add")
	}
	return report{Values: map[string]float64{"events_per_s": float64(*events) / time.Since(started).Seconds()}}
}

func runSink(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("sink", flag.ExitOnError)
	events := fs.Int("events", 10000, "events consumed")
	instances := fs.Int("instances", 2, "sink instances (one goroutine each)")
	check(fs.Parse(args), "flags")
	s := openStream(rdb, name, 0)
	defer func() { _ = s.Destroy(context.Background()) }()
	// Fill with the library's own Add from 64 goroutines (go-redis pipelines nothing here).
	var wg sync.WaitGroup
	var next atomic.Int64
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(*events) {
				_, err := s.Add(ctx, "bench", payload)
				check(err, "Add")
			}
		}()
	}
	wg.Wait()
	var acked atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	started := time.Now()
	var sinks []*streaming.Sink
	for i := 0; i < *instances; i++ {
		sink, err := s.NewSink(ctx, name, options.WithSinkStartAtOldest())
		check(err, "NewSink")
		sinks = append(sinks, sink)
		go func(sink *streaming.Sink) {
			for ev := range sink.Subscribe() {
				check(sink.Ack(ctx, ev), "Ack")
				if acked.Add(1) >= int64(*events) {
					once.Do(func() { close(done) })
				}
			}
		}(sink)
	}
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		fail("sink: only %d of %d events acked in 120 s", acked.Load(), *events)
	}
	elapsed := time.Since(started)
	for _, sink := range sinks {
		sink.Close(context.Background())
	}
	return report{Values: map[string]float64{"events_per_s": float64(*events) / elapsed.Seconds()}}
}

func runLatency(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	events := fs.Int("events", 3000, "measured events")
	warmup := fs.Int("warmup", 200, "unmeasured events before")
	rate := fs.Float64("rate", 1000, "events per second")
	check(fs.Parse(args), "flags")
	s := openStream(rdb, name, 1000)
	defer func() { _ = s.Destroy(context.Background()) }()
	// Start at a time, not at NEWEST: the library re-sends "$" until its first read returns,
	// so events added before that read would be missed. A second back, because the cursor
	// "<ms>-0" excludes an event with that very id. The stream is new: nothing older.
	reader, err := s.NewReader(ctx, options.WithReaderStartAt(time.Now().Add(-time.Second)))
	check(err, "NewReader")
	// No reader.Close(): it waits for the reader's blocked XREAD; the process exits instead.
	ch := reader.Subscribe()
	origin := time.Now()
	total := *warmup + *events
	go func() {
		interval := time.Duration(float64(time.Second) / *rate)
		next := time.Now()
		buf := make([]byte, 8)
		for i := 0; i < total; i++ {
			time.Sleep(time.Until(next))
			binary.LittleEndian.PutUint64(buf, uint64(time.Since(origin)))
			_, err := s.Add(ctx, "tick", buf)
			check(err, "Add")
			next = next.Add(interval)
		}
	}()
	samples := make([]float64, 0, *events)
	timeout := time.After(120 * time.Second)
	for received := 0; received < total; {
		select {
		case ev := <-ch:
			sent := time.Duration(binary.LittleEndian.Uint64(ev.Payload))
			received++
			if received > *warmup {
				samples = append(samples, ms(time.Since(origin)-sent))
			}
		case <-timeout:
			fail("latency: only %d of %d events received", received, total)
		}
	}
	return withLatency(report{Values: map[string]float64{}}, samples)
}

func joinLoaded(ctx context.Context, rdb *redis.Client, name string, keys int) *rmap.Map {
	m, err := rmap.Join(ctx, name, rdb)
	check(err, "rmap.Join")
	for i := 0; i < keys; i++ {
		k := "key-" + strconv.Itoa(i)
		_, err := m.SetAndWait(ctx, k, "value of "+k)
		check(err, "SetAndWait")
	}
	return m
}

func runRmapGet(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("rmap-get", flag.ExitOnError)
	keys := fs.Int("keys", 100, "keys in the map")
	calls := fs.Int("calls", 500000, "timed Get calls")
	check(fs.Parse(args), "flags")
	m := joinLoaded(ctx, rdb, name, *keys)
	defer func() { _ = m.Reset(context.Background()); m.Close() }()
	names := make([]string, *keys)
	for i := range names {
		names[i] = "key-" + strconv.Itoa(i)
	}
	found := 0
	for i := 0; i < *calls/10; i++ { // warm-up
		if _, ok := m.Get(names[i%len(names)]); ok {
			found++
		}
	}
	started := time.Now()
	for i := 0; i < *calls; i++ {
		if _, ok := m.Get(names[i%len(names)]); ok {
			found++
		}
	}
	elapsed := time.Since(started)
	if found == 0 {
		fail("rmap-get: the replica is empty")
	}
	return report{Values: map[string]float64{"ops_per_s": float64(*calls) / elapsed.Seconds()}}
}

func runRmapPropagation(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("rmap-propagation", flag.ExitOnError)
	samplesN := fs.Int("samples", 3000, "measured writes")
	warmup := fs.Int("warmup", 200, "unmeasured writes before")
	check(fs.Parse(args), "flags")
	a, err := rmap.Join(ctx, name, rdb)
	check(err, "rmap.Join A")
	b, err := rmap.Join(ctx, name, rdb)
	check(err, "rmap.Join B")
	defer func() { _ = a.Reset(context.Background()); a.Close(); b.Close() }()
	changes := b.Subscribe()
	samples := make([]float64, 0, *samplesN)
	for i := 0; i < *warmup+*samplesN; i++ {
		value := "v" + strconv.Itoa(i)
		started := time.Now()
		_, err := a.Set(ctx, "latency", value)
		check(err, "Set")
		for {
			if v, _ := b.Get("latency"); v == value {
				break
			}
			select {
			case <-changes:
			case <-time.After(10 * time.Second):
				fail("rmap-propagation: write %d never reached replica B", i)
			}
		}
		if i >= *warmup {
			samples = append(samples, ms(time.Since(started)))
		}
	}
	return withLatency(report{Values: map[string]float64{}}, samples)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: pulse-bench <jobs|add|sink|latency|rmap-get|rmap-propagation> --redis host:port --name NAME [flags]")
	}
	sub := os.Args[1]
	addr, name := "", ""
	rest := []string{}
	args := os.Args[2:]
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "--redis":
			i++
			addr = args[i]
		case "--name":
			i++
			name = args[i]
		default:
			rest = append(rest, args[i])
		}
	}
	if addr == "" || name == "" {
		fail("--redis and --name are required")
	}
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	check(rdb.Ping(ctx).Err(), "PING "+addr)
	commands := map[string]func(context.Context, *redis.Client, string, []string) report{
		"jobs": runJobs, "add": runAdd, "sink": runSink, "latency": runLatency,
		"rmap-get": runRmapGet, "rmap-propagation": runRmapPropagation,
		"pool-worker": runPoolWorker,
	}
	run, ok := commands[sub]
	if !ok {
		fail("unknown subcommand %q", sub)
	}
	emit(run(ctx, rdb, name, rest))
}
