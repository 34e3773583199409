// Package mixwatch is the watching side of the Watch protocol with mix, for the agent and for
// analysis: it says who the peer is and which version it runs, applies each push and answers ACK
// or NACK (the peer keeps what it had on NACK), sends the peer's counters now and then, and when
// mix is unreachable lets the peer go on with what it last applied while it reconnects with
// jittered exponential backoff.
package mixwatch

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// Peer is what the client needs from the agent or analysis instance it runs for.
type Peer interface {
	// Hello describes the peer (the client fills in the applied version).
	Hello() *mixpb.Hello
	// Apply puts a push in force (an agent its subscription set, analysis its catalog and
	// rules), or refuses it and keeps what it had.
	Apply(ctx context.Context, push *mixpb.WatchResponse) error
	// Status gives the peer's counters; nil sends none.
	Status() *mixpb.Status
}

// Backoff is the wait between reconnections: First, multiplied by Factor after every failure up
// to Max, each wait spread by ±Jitter (a fraction) so that many agents cut off together do not
// come back together.
type Backoff struct {
	First  time.Duration
	Factor float64
	Max    time.Duration
	Jitter float64
}

// DefaultBackoff: about 1 s, ×1.6, up to 60 s, ±20%.
var DefaultBackoff = Backoff{First: time.Second, Factor: 1.6, Max: time.Minute, Jitter: 0.2}

func (b Backoff) spread(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 - b.Jitter + 2*b.Jitter*rand.Float64()))
}

// Client keeps a peer watching mix.
type Client struct {
	Dial           mix.DialOptions
	Peer           Peer
	Log            *slog.Logger
	StatusInterval time.Duration
	Backoff        Backoff
	// Offline says, for the log, what the peer goes on doing while mix is unreachable
	// ("capturing with the last subscription set").
	Offline string

	mu      sync.Mutex
	applied string

	connected atomic.Bool
	pushes    atomic.Uint64
	nacks     atomic.Uint64
	sessions  atomic.Uint64
}

// Applied is the version of the set in force ("" before the first push).
func (c *Client) Applied() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied
}

// Counters are the client's own counters.
func (c *Client) Counters() map[string]uint64 {
	connected := uint64(0)
	if c.connected.Load() {
		connected = 1
	}
	return map[string]uint64{"mix.connected": connected, "mix.pushes": c.pushes.Load(),
		"mix.nacks": c.nacks.Load(), "mix.sessions": c.sessions.Load()}
}

// stableSession is how long a session must have lasted for the next failure to start the backoff
// afresh.
const stableSession = 30 * time.Second

// Run watches until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	if c.Backoff.First == 0 {
		c.Backoff = DefaultBackoff
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = 30 * time.Second
	}
	conn, err := mix.Dial(c.Dial)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := mixpb.NewMixClient(conn)
	delay := c.Backoff.First
	for {
		started := time.Now()
		err := c.session(ctx, client)
		c.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > stableSession {
			delay = c.Backoff.First
		}
		wait := c.Backoff.spread(delay)
		offline := c.Offline
		if offline == "" {
			offline = "going on with what was last applied"
		}
		c.Log.Warn("mix unreachable; "+offline, "mix", c.Dial.Address,
			"err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		delay = min(time.Duration(float64(delay)*c.Backoff.Factor), c.Backoff.Max)
	}
}

// session runs one Watch stream until it breaks.
func (c *Client) session(ctx context.Context, client mixpb.MixClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Watch(ctx)
	if err != nil {
		return fmt.Errorf("opening the watch stream: %w", err)
	}
	// gRPC allows one sender at a time on a stream: answers and status share this lock.
	var sendMu sync.Mutex
	send := func(req *mixpb.WatchRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(req)
	}
	hello := c.Peer.Hello()
	hello.AppliedVersion = c.Applied()
	if err := send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Hello{Hello: hello}}); err != nil {
		return fmt.Errorf("saying hello: %w", err)
	}
	// mix answers a hello with headers: from then on the agent is connected.
	if _, err := stream.Header(); err != nil {
		return fmt.Errorf("waiting for mix to answer: %w", err)
	}
	c.connected.Store(true)
	c.sessions.Add(1)
	c.Log.Info("connected to mix", "mix", c.Dial.Address)
	go func() {
		t := time.NewTicker(c.StatusInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				st := c.Peer.Status()
				if st == nil {
					continue
				}
				if err := send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Status{Status: st}}); err != nil {
					return
				}
			}
		}
	}()
	for {
		push, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("watching: %w", err)
		}
		c.pushes.Add(1)
		if err := c.Peer.Apply(ctx, push); err != nil {
			c.nacks.Add(1)
			c.Log.Warn("push refused; what was in force stays", "version", push.Version, "err", err)
			nack := &mixpb.Nack{Version: c.Applied(), Nonce: push.Nonce, Error: err.Error()}
			if err := send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Nack{Nack: nack}}); err != nil {
				return err
			}
			continue
		}
		c.mu.Lock()
		c.applied = push.Version
		c.mu.Unlock()
		c.Log.Info("push applied", "version", push.Version)
		if err := send(&mixpb.WatchRequest{Msg: &mixpb.WatchRequest_Ack{Ack: &mixpb.Ack{Version: push.Version, Nonce: push.Nonce}}}); err != nil {
			return err
		}
	}
}
