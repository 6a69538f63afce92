package main

// "pool-node": a node of a goa.design/pulse worker pool (pool.AddNode), with workers whose
// handler prints every job start and stop.

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"
	"goa.design/pulse/pool"
)

// recordingHandler is a pool.JobHandler that prints the jobs it is given and keeps them.
type recordingHandler struct {
	worker func() string
}

func (h *recordingHandler) Start(job *pool.Job) error {
	emit(map[string]any{
		"type": "job-start", "key": job.Key, "worker": h.worker(), "node": job.NodeID,
		"payload": base64.StdEncoding.EncodeToString(job.Payload), "requeued": job.Requeued,
	})
	return nil
}

func (h *recordingHandler) Stop(key string) error {
	emit(map[string]any{"type": "job-stop", "key": key, "worker": h.worker()})
	return nil
}

// runPoolNode implements "pool-node <pool> [flags]".
func runPoolNode(ctx context.Context, stop context.CancelFunc, rdb *redis.Client, args []string) error {
	fs := flag.NewFlagSet("pool-node", flag.ExitOnError)
	clientOnly := fs.Bool("client-only", false, "WithClientOnly")
	workerTTL := fs.Int("worker-ttl", 2000, "WithWorkerTTL in ms")
	grace := fs.Int("grace", 1000, "WithAckGracePeriod in ms")
	block := fs.Int("block", 100, "WithJobSinkBlockDuration in ms")
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	opts := []pool.NodeOption{
		pool.WithLogger(newLineLogger()),
		pool.WithWorkerTTL(millis(*workerTTL)),
		pool.WithWorkerShutdownTTL(millis(*workerTTL)),
		pool.WithAckGracePeriod(millis(*grace)),
		pool.WithJobSinkBlockDuration(millis(*block)),
	}
	if *clientOnly {
		opts = append(opts, pool.WithClientOnly())
	}
	node, err := pool.AddNode(ctx, name, rdb, opts...)
	if err != nil {
		return err
	}
	emit(map[string]any{"type": "ready", "pool": name, "node": node.ID})
	serveStdin(ctx, func(ctx context.Context, c command) {
		switch c.str("op") {
		case "add-worker":
			var w *pool.Worker
			h := &recordingHandler{worker: func() string {
				if w == nil {
					return ""
				}
				return w.ID
			}}
			worker, err := node.AddWorker(ctx, h)
			if err != nil {
				reply(c, nil, err)
				return
			}
			w = worker
			reply(c, map[string]any{"worker": worker.ID}, nil)
		case "dispatch":
			payload, err := c.bytes("payload")
			if err != nil {
				reply(c, nil, err)
				return
			}
			reply(c, nil, node.DispatchJob(ctx, c.str("key"), payload))
		case "stop-job":
			reply(c, nil, node.StopJob(ctx, c.str("key")))
		case "job-keys":
			keys := node.JobKeys()
			sort.Strings(keys)
			reply(c, map[string]any{"keys": keys}, nil)
		case "job-payload":
			payload, ok := node.JobPayload(c.str("key"))
			reply(c, map[string]any{
				"payload": base64.StdEncoding.EncodeToString(payload), "present": ok,
			}, nil)
		case "workers":
			ids := []string{}
			for _, w := range node.Workers() {
				ids = append(ids, w.ID)
			}
			reply(c, map[string]any{"workers": ids}, nil)
		case "close":
			reply(c, nil, node.Close(ctx))
		default:
			reply(c, nil, fmt.Errorf("unknown op %q", c.str("op")))
		}
	}, stop)
	<-ctx.Done()
	if err := node.Close(context.Background()); err != nil {
		logf("pool %s: close: %v", name, err)
	}
	return nil
}
