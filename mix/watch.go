package mix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/quanyu/quanyu/mix/internal/store"
	"github.com/quanyu/quanyu/mix/mixpb"
	"github.com/quanyu/quanyu/sdk"
)

// Agent states, as `quanyu agents` shows them.
const (
	StatusSynced       = "SYNCED"       // applied the latest push
	StatusPending      = "PENDING"      // a push is on its way or not yet answered
	StatusNacked       = "NACKED"       // refused the latest push; runs its previous set
	StatusDisconnected = "DISCONNECTED" // no Watch stream open
)

// hub keeps every Watch stream fed: it knows each client's state, renders what each should have,
// and wakes the streams concerned when something changes. The protocol is xDS's: a push carries a
// version (a hash of the content: an edit that changes nothing pushes nothing) and a nonce; the
// client answers with an ACK (the version is in force) or a NACK (the previous one stays); mix does
// not push a version again once it was sent, so a NACKed set is not retried until it changes.
type hub struct {
	log   *slog.Logger
	store store.Store
	push  PushConfig
	now   func() time.Time

	mu       sync.Mutex
	clients  map[string]*client // every agent and analysis instance seen, by id
	subs     []sdk.Subscription // the stored subscriptions; nil: to be read again
	nonce    uint64
	expiries chan struct{} // wakes the expiry loop when subscriptions change
}

// client is what mix knows of one agent or analysis instance.
type client struct {
	rec            store.AgentRecord
	role           string
	fallbackReason string
	counters       map[string]uint64
	plugins        []*mixpb.Plugin
	session        *session // nil when disconnected
}

// session is one open Watch stream.
type session struct {
	id, role string
	host     string
	labels   map[string]string
	dirty    chan struct{} // something it should have may have changed
	replaced chan struct{} // a newer stream of the same client took over

	// Guarded by hub.mu.
	sentVersion string // the version last pushed (whatever the answer)
	sentNonce   string
	applied     string // the version the client says is in force
}

func newHub(ctx context.Context, st store.Store, push PushConfig, log *slog.Logger) (*hub, error) {
	h := &hub{log: log, store: st, push: push, now: time.Now, clients: map[string]*client{},
		expiries: make(chan struct{}, 1)}
	recs, err := st.ListAgents(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the agents mix knew: %w", err)
	}
	for _, r := range recs {
		r.Status = StatusDisconnected
		h.clients[r.ID] = &client{rec: r, role: "agent"}
	}
	return h, nil
}

// changed tells the streams that a kind of resource changed.
func (h *hub) changed(k *kind) {
	h.mu.Lock()
	if k.forAgents {
		h.subs = nil
	}
	for _, c := range h.clients {
		if c.session != nil && (c.session.role == "agent") == k.forAgents {
			signal(c.session.dirty)
		}
	}
	h.mu.Unlock()
	if k.forAgents {
		signal(h.expiries)
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// subscriptions reads the stored subscriptions, cached until the next change. Called with h.mu
// held.
func (h *hub) subscriptions(ctx context.Context) ([]sdk.Subscription, error) {
	if h.subs != nil {
		return h.subs, nil
	}
	objs, err := h.store.List(ctx, "subscription")
	if err != nil {
		return nil, fmt.Errorf("reading subscriptions: %w", err)
	}
	subs := make([]sdk.Subscription, 0, len(objs))
	for _, o := range objs {
		s, err := sdk.ParseSubscription(o.Body)
		if err != nil {
			// Only valid subscriptions are stored; one that does not parse now was written by a
			// newer mix. Leaving it out of every set is safer than failing every push.
			h.log.Error("a stored subscription does not parse; it is left out", "id", o.ID, "err", err)
			continue
		}
		subs = append(subs, s)
	}
	h.subs = subs
	return subs, nil
}

// selects reports whether a subscription's selector takes in an agent.
func selects(sel sdk.Selector, host string, labels map[string]string) bool {
	for k, v := range sel.Labels {
		if labels[k] != v {
			return false
		}
	}
	if len(sel.Hosts) == 0 {
		return true
	}
	for _, pattern := range sel.Hosts {
		if ok, _ := path.Match(pattern, host); ok {
			return true
		}
	}
	return false
}

func version(parts ...[]byte) string {
	sum := sha256.New()
	for _, p := range parts {
		sum.Write(p)
		sum.Write([]byte{0})
	}
	return hex.EncodeToString(sum.Sum(nil))[:16]
}

// render builds what a session should have now. Called with h.mu held.
func (h *hub) render(ctx context.Context, s *session) (*mixpb.WatchResponse, error) {
	if s.role == "agent" {
		all, err := h.subscriptions(ctx)
		if err != nil {
			return nil, err
		}
		now := h.now()
		mine := make([]sdk.Subscription, 0, len(all))
		for _, sub := range all {
			if !sub.Expired(now) && selects(sub.Selector, s.host, s.labels) {
				mine = append(mine, sub)
			}
		}
		sort.Slice(mine, func(i, j int) bool { return mine[i].ID < mine[j].ID })
		raw, err := sdk.MarshalSubscriptions(mine)
		if err != nil {
			return nil, fmt.Errorf("encoding subscriptions: %w", err)
		}
		return &mixpb.WatchResponse{Version: version(raw), SubscriptionsJson: raw}, nil
	}
	resp := &mixpb.WatchResponse{}
	for _, part := range []struct {
		kind string
		dst  *[]byte
	}{{"catalog", &resp.CatalogJson}, {"rule", &resp.RulesJson}, {"receiver", &resp.ReceiversJson}, {"settings", &resp.SettingsJson}} {
		objs, err := h.store.List(ctx, store.Kind(part.kind))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", part.kind, err)
		}
		bodies := make([]json.RawMessage, len(objs))
		for i, o := range objs {
			bodies[i] = o.Body
		}
		raw, err := json.Marshal(bodies)
		if err != nil {
			return nil, err
		}
		*part.dst = raw
	}
	resp.Version = version(resp.CatalogJson, resp.RulesJson, resp.ReceiversJson, resp.SettingsJson)
	return resp, nil
}

// open registers a new stream for the client that said hello; a stream already open for the
// same client is told to end.
func (h *hub) open(hello *mixpb.Hello) (*session, error) {
	if hello.Role != "agent" && hello.Role != "analysis" {
		return nil, status.Errorf(codes.InvalidArgument, "hello.role: %q is not agent or analysis", hello.Role)
	}
	if hello.Id == "" || len(hello.Id) > 128 {
		return nil, status.Error(codes.InvalidArgument, "hello.id: want an id of 1 to 128 characters")
	}
	s := &session{id: hello.Id, role: hello.Role, host: hello.Host, labels: hello.Labels,
		dirty: make(chan struct{}, 1), replaced: make(chan struct{}), applied: hello.AppliedVersion}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.clients[hello.Id]
	if c == nil {
		c = &client{}
		h.clients[hello.Id] = c
	}
	if c.session != nil {
		close(c.session.replaced)
	}
	c.session, c.role = s, hello.Role
	c.plugins, c.fallbackReason = hello.Plugins, hello.FallbackReason
	c.rec.ID, c.rec.Host, c.rec.Labels = hello.Id, hello.Host, hello.Labels
	c.rec.AppliedVersion, c.rec.PendingVersion, c.rec.LastError = hello.AppliedVersion, "", ""
	c.rec.Backend, c.rec.LastSeen = hello.Backend, h.now()
	if len(hello.InventoryJson) > 0 {
		c.rec.Inventory = hello.InventoryJson
	}
	if raw, err := json.Marshal(hello.Plugins); err == nil {
		c.rec.Plugins = raw
	}
	c.rec.Status = StatusPending
	h.persist(c)
	return s, nil
}

// close marks the client disconnected, unless a newer stream already took over.
func (h *hub) close(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.clients[s.id]
	if c == nil || c.session != s {
		return
	}
	c.session = nil
	c.rec.Status = StatusDisconnected
	c.rec.LastSeen = h.now()
	h.persist(c)
}

// persist writes a client's record; a failure is logged (the state is also in memory, and the
// next change writes it again).
func (h *hub) persist(c *client) {
	if c.role == "analysis" {
		return // analysis instances are not agents: they are not listed or kept
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.store.PutAgent(ctx, c.rec); err != nil {
		h.log.Warn("saving an agent's state", "agent", c.rec.ID, "err", err)
	}
}

// answer applies an ACK or NACK of a session's last push. An answer to an older push (its
// nonce) changes nothing: a newer push is on its way.
func (h *hub) answer(s *session, req *mixpb.WatchRequest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.clients[s.id]
	if c == nil || c.session != s {
		return
	}
	c.rec.LastSeen = h.now()
	switch m := req.Msg.(type) {
	case *mixpb.WatchRequest_Ack:
		if m.Ack.Nonce != s.sentNonce {
			return
		}
		s.applied = m.Ack.Version
		c.rec.Status, c.rec.AppliedVersion, c.rec.PendingVersion, c.rec.LastError = StatusSynced, m.Ack.Version, "", ""
	case *mixpb.WatchRequest_Nack:
		if m.Nack.Nonce != s.sentNonce {
			return
		}
		s.applied = m.Nack.Version
		c.rec.Status, c.rec.AppliedVersion, c.rec.PendingVersion, c.rec.LastError = StatusNacked, m.Nack.Version, "", m.Nack.Error
		h.log.Warn("push refused", "client", s.id, "version", s.sentVersion, "err", m.Nack.Error)
	case *mixpb.WatchRequest_Status:
		c.counters, c.rec.Backend, c.fallbackReason = m.Status.Counters, m.Status.Backend, m.Status.FallbackReason
		if len(m.Status.InventoryJson) > 0 {
			c.rec.Inventory = m.Status.InventoryJson
		}
		return // counters change all the time: kept in memory, not written every time
	default:
		return
	}
	h.persist(c)
}

// next renders the session's set and says whether it must be pushed: a version neither in force
// nor already sent. Pushing stamps the session. Called without h.mu.
func (h *hub) next(ctx context.Context, s *session) (*mixpb.WatchResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	resp, err := h.render(ctx, s)
	if err != nil {
		return nil, err
	}
	c := h.clients[s.id]
	if resp.Version == s.applied && s.sentVersion == "" {
		// It already runs what it should (it reconnected): nothing to push.
		if c != nil && c.session == s {
			c.rec.Status, c.rec.AppliedVersion = StatusSynced, s.applied
			h.persist(c)
		}
		s.sentVersion = resp.Version
		return nil, nil
	}
	if resp.Version == s.sentVersion {
		return nil, nil
	}
	h.nonce++
	resp.Nonce = strconv.FormatUint(h.nonce, 10)
	s.sentVersion, s.sentNonce = resp.Version, resp.Nonce
	if c != nil && c.session == s {
		c.rec.Status, c.rec.PendingVersion = StatusPending, resp.Version
		h.persist(c)
	}
	return resp, nil
}

// helloTimeout bounds the wait for a new stream's Hello.
const helloTimeout = 10 * time.Second

// watch serves one Watch stream.
func (h *hub) watch(stream mixpb.Mix_WatchServer) error {
	ctx := stream.Context()
	first := make(chan *mixpb.WatchRequest, 1)
	errc := make(chan error, 1)
	go func() {
		req, err := stream.Recv()
		if err != nil {
			errc <- err
			return
		}
		first <- req
	}()
	var hello *mixpb.Hello
	select {
	case req := <-first:
		hello = req.GetHello()
		if hello == nil {
			return status.Error(codes.InvalidArgument, "a Watch stream starts with a Hello")
		}
	case err := <-errc:
		return err
	case <-time.After(helloTimeout):
		return status.Error(codes.DeadlineExceeded, "no Hello within 10s")
	}
	if principalOf(ctx).Role == RoleAgent && hello.Role != "agent" && hello.Role != "analysis" {
		return status.Error(codes.PermissionDenied, "unknown role")
	}
	s, err := h.open(hello)
	if err != nil {
		return err
	}
	defer h.close(s)
	// Headers now tell the client it is connected, even when it runs the current version
	// already and no push follows.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	h.log.Info("client connected", "client", s.id, "role", s.role, "host", s.host, "applied", hello.AppliedVersion)
	defer h.log.Info("client disconnected", "client", s.id)

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			h.answer(s, req)
		}
	}()
	for {
		resp, err := h.next(ctx, s)
		if err != nil {
			return status.Errorf(codes.Internal, "rendering the set for %s: %v", s.id, err)
		}
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if err := h.wait(ctx, s, recvErr); err != nil {
			return err
		}
	}
}

// wait blocks until something the session should have may have changed, then lets a burst of
// changes settle (debounce, at most MaxDelay) so that it becomes one push.
func (h *hub) wait(ctx context.Context, s *session, recvErr <-chan error) error {
	select {
	case <-s.dirty:
	case err := <-recvErr:
		if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
			return nil
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.replaced:
		return status.Error(codes.Aborted, "a newer stream of the same client took over")
	}
	deadline := time.NewTimer(h.push.MaxDelay)
	defer deadline.Stop()
	for {
		quiet := time.NewTimer(h.push.Debounce)
		select {
		case <-s.dirty:
			quiet.Stop()
			continue
		case <-quiet.C:
			return nil
		case <-deadline.C:
			quiet.Stop()
			return nil
		case err := <-recvErr:
			quiet.Stop()
			return err
		case <-ctx.Done():
			quiet.Stop()
			return ctx.Err()
		}
	}
}

// expire withdraws subscriptions from agents as they expire: it sleeps until the next expiry
// (or a change to the subscriptions), then wakes every agent stream.
func (h *hub) expire(ctx context.Context) {
	for {
		h.mu.Lock()
		subs, err := h.subscriptions(ctx)
		h.mu.Unlock()
		var next time.Time
		if err == nil {
			now := h.now()
			for _, s := range subs {
				if !s.Expires.IsZero() && s.Expires.After(now) && (next.IsZero() || s.Expires.Before(next)) {
					next = s.Expires
				}
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = time.Until(next) + 10*time.Millisecond
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-h.expiries:
			timer.Stop()
		case <-timer.C:
			h.log.Info("a subscription expired; withdrawing it from agents")
			h.mu.Lock()
			for _, c := range h.clients {
				if c.session != nil && c.session.role == "agent" {
					signal(c.session.dirty)
				}
			}
			h.mu.Unlock()
		}
	}
}

// agents lists what mix knows of every agent.
func (h *hub) agents() []*mixpb.Agent {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*mixpb.Agent, 0, len(h.clients))
	for _, c := range h.clients {
		if c.role == "analysis" {
			continue
		}
		r := c.rec
		a := &mixpb.Agent{Id: r.ID, Host: r.Host, Labels: r.Labels, Status: r.Status, AppliedVersion: r.AppliedVersion,
			PendingVersion: r.PendingVersion, LastSeenUnixNs: r.LastSeen.UnixNano(), LastError: r.LastError,
			Backend: r.Backend, FallbackReason: c.fallbackReason, Counters: c.counters, Role: "agent", Plugins: c.plugins}
		if a.Plugins == nil && len(r.Plugins) > 0 {
			_ = json.Unmarshal(r.Plugins, &a.Plugins)
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}
