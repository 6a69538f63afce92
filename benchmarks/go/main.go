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
//	pool-worker --workers K [--ttl S --print]   (the second process of "jobs --processes 2", "failover")
//	failover  --jobs N --ttl S --addr A
//	add       --events N --warmup W
//	sink      --events N --instances K
//	latency   --events N --warmup W --rate R
//	rmap-get  --keys K --calls N
//	rmap-propagation --samples N --warmup W
//	rmap-join --keys K
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
	"runtime"
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

// runPoolWorker is the child of "jobs --processes 2" and of "failover": a node with --workers
// no-op workers, "ready" on stdout once they are added, then it runs until killed. With
// --print it prints "start <key>" for every job it starts (failover tracks them).
func runPoolWorker(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("pool-worker", flag.ExitOnError)
	workers := fs.Int("workers", 2, "workers on the node")
	ttl := fs.Float64("ttl", 0, "worker TTL in seconds (0: the library's default)")
	printStarts := fs.Bool("print", false, "print \"start <key>\" for every job started")
	check(fs.Parse(args), "flags")
	var opts []pool.NodeOption
	if *ttl > 0 {
		opts = append(opts, pool.WithWorkerTTL(time.Duration(*ttl*float64(time.Second))))
	}
	node, err := pool.AddNode(ctx, name, rdb, opts...)
	check(err, "pool.AddNode")
	var handler pool.JobHandler = noop{}
	if *printStarts {
		handler = &printer{}
	}
	for i := 0; i < *workers; i++ {
		_, err := node.AddWorker(ctx, handler)
		check(err, "AddWorker")
	}
	fmt.Println("ready")
	select {}
}

// printer prints "start <key>" for every job it starts.
type printer struct{ mu sync.Mutex }

func (p *printer) Start(job *pool.Job) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Println("start", job.Key)
	return nil
}

func (p *printer) Stop(string) error { return nil }

// tracker is the survivor's handler in "failover": it keeps the keys of its running jobs.
type tracker struct {
	mu      sync.Mutex
	running map[string]bool
	changed chan struct{}
}

func (t *tracker) Start(job *pool.Job) error {
	t.mu.Lock()
	t.running[job.Key] = true
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
	return nil
}

func (t *tracker) Stop(key string) error {
	t.mu.Lock()
	delete(t.running, key)
	t.mu.Unlock()
	return nil
}

// runFailover mirrors pulse-trio's pool.failover: a second node in a child process
// (pool-worker --print) runs part of --jobs jobs and is killed with SIGKILL; the time from
// the kill until every job it ran has started on the surviving node's worker. Both nodes use
// --ttl as their worker TTL.
func runFailover(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("failover", flag.ExitOnError)
	jobs := fs.Int("jobs", 200, "jobs dispatched")
	ttl := fs.Float64("ttl", 2, "worker TTL in seconds")
	addr := fs.String("addr", "", "the server, for the child process")
	check(fs.Parse(args), "flags")
	child := exec.Command(os.Args[0], "pool-worker", "--redis", *addr, "--name", name,
		"--workers", "1", "--ttl", strconv.FormatFloat(*ttl, 'f', -1, 64), "--print")
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	check(err, "pool-worker pipe")
	check(child.Start(), "pool-worker start")
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	lines := bufio.NewReader(stdout)
	line, err := lines.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		fail("pool-worker: %q %v", line, err)
	}
	var mu sync.Mutex
	remote := map[string]bool{}
	go func() {
		for {
			line, err := lines.ReadString('\n')
			if err != nil {
				return
			}
			if key, ok := strings.CutPrefix(strings.TrimSpace(line), "start "); ok {
				mu.Lock()
				remote[key] = true
				mu.Unlock()
			}
		}
	}()
	node, err := pool.AddNode(ctx, name, rdb,
		pool.WithWorkerTTL(time.Duration(*ttl*float64(time.Second))), pool.WithMaxQueuedJobs(*jobs+1))
	check(err, "pool.AddNode")
	survivor := &tracker{running: map[string]bool{}, changed: make(chan struct{}, 1)}
	_, err = node.AddWorker(ctx, survivor)
	check(err, "AddWorker")
	stalls := 0
	for i := 0; i < *jobs; i++ {
		started := time.Now()
		dctx, cancel := context.WithTimeout(ctx, dispatchTimeout)
		err := node.DispatchJob(dctx, "f"+strconv.Itoa(i), payload)
		cancel()
		if err != nil && dctx.Err() == nil {
			fail("DispatchJob: %v", err)
		}
		if time.Since(started) >= stallThreshold {
			stalls++
		}
	}
	counts := func() (int, int, bool) {
		mu.Lock()
		defer mu.Unlock()
		survivor.mu.Lock()
		defer survivor.mu.Unlock()
		moved := true
		for key := range remote {
			if !survivor.running[key] {
				moved = false
			}
		}
		return len(remote), len(survivor.running), moved
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, s, _ := counts()
		if r+s >= *jobs {
			break
		}
		if time.Now().After(deadline) {
			fail("failover: only %d + %d of %d jobs started", r, s, *jobs)
		}
		time.Sleep(time.Millisecond)
	}
	moved, _, _ := counts()
	if moved == 0 {
		fail("failover: the child node ran none of the %d jobs", *jobs)
	}
	check(child.Process.Kill(), "kill pool-worker")
	killed := time.Now()
	limit := time.After(time.Duration(*ttl * 10 * float64(time.Second)))
	for {
		if _, _, done := counts(); done {
			break
		}
		select {
		case <-survivor.changed:
		case <-time.After(10 * time.Millisecond):
		case <-limit:
			fail("failover: the killed node's jobs did not all restart within %.0f s", *ttl*10)
		}
	}
	r := report{Values: map[string]float64{
		"failover_ms": ms(time.Since(killed)),
		"moved_jobs":  float64(moved),
	}, Stalls: stalls}
	for _, w := range node.PoolWorkers() {
		r.Cleanup = append(r.Cleanup, w.ID)
	}
	return r
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
	for i := 0; i < *instances; i++ {
		sink, err := s.NewSink(ctx, name, options.WithSinkStartAtOldest())
		check(err, "NewSink")
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
	// No sink.Close(): it waits for the sink's blocked XREADGROUP (5 s, the library's
	// default block duration), which cost every measurement 5 s of wall time. The process
	// exits instead, and the runner deletes the sink's keys (they hold the stream's name).
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

// runRmapJoin times rmap.Join of a map whose content hash already holds --keys keys (written
// with HSET, as the Python side does), then measures the heap a second replica holds: the
// live heap after a GC, before and after a second Join (not timed).
func runRmapJoin(ctx context.Context, rdb *redis.Client, name string, args []string) report {
	fs := flag.NewFlagSet("rmap-join", flag.ExitOnError)
	keys := fs.Int("keys", 1000, "keys in the map")
	check(fs.Parse(args), "flags")
	content := "map:" + name + ":content" // the library's hash key (rmap/map.go)
	defer rdb.Del(context.Background(), content)
	for first := 0; first < *keys; first += 1000 {
		pairs := make([]any, 0, 2000)
		for i := first; i < *keys && i < first+1000; i++ {
			k := "key-" + strconv.Itoa(i)
			pairs = append(pairs, k, "value of "+k)
		}
		check(rdb.HSet(ctx, content, pairs...).Err(), "HSET")
	}
	started := time.Now()
	m, err := rmap.Join(ctx, name, rdb)
	elapsed := time.Since(started)
	check(err, "rmap.Join")
	defer m.Close()
	if n := m.Len(); n != *keys {
		fail("rmap-join: the replica holds %d keys, not %d", n, *keys)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	second, err := rmap.Join(ctx, name, rdb)
	check(err, "rmap.Join (second)")
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / 1e6
	if second.Len() != *keys {
		fail("rmap-join: the second replica holds %d keys, not %d", second.Len(), *keys)
	}
	second.Close()
	return report{Values: map[string]float64{"join_ms": ms(elapsed), "memory": held}}
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: pulse-bench <jobs|failover|add|sink|latency|rmap-get|rmap-propagation|rmap-join> --redis host:port --name NAME [flags]")
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
		"rmap-get": runRmapGet, "rmap-propagation": runRmapPropagation, "rmap-join": runRmapJoin,
		"pool-worker": runPoolWorker, "failover": runFailover,
	}
	run, ok := commands[sub]
	if !ok {
		fail("unknown subcommand %q", sub)
	}
	emit(run(ctx, rdb, name, rest))
}
