package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/quanyu/quanyu/core/internal/inventory"
	"github.com/quanyu/quanyu/internal/mixwatch"
	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/mixpb"
	"github.com/quanyu/quanyu/sdk"
)

// mixClient builds the agent's client of mix.
func (a *Agent) mixClient() *mixwatch.Client {
	m := a.cfg.Mix
	return &mixwatch.Client{
		Dial:           mix.DialOptions{Address: m.Address, Token: m.Token, CA: m.CA, Cert: m.Cert, Key: m.Key, ServerName: m.ServerName},
		Peer:           mixAgent{a},
		Log:            a.opts.Log.With("component", "mixclient"),
		StatusInterval: m.StatusInterval,
		Offline:        "capturing with the last subscription set",
	}
}

// mixAgent is the agent as the mix client sees it.
type mixAgent struct{ a *Agent }

// ID is the name mix knows the agent by.
func (a *Agent) ID() string {
	if a.cfg.Identity.ID != "" {
		return a.cfg.Identity.ID
	}
	return a.cfg.Host
}

func (m mixAgent) Hello() *mixpb.Hello {
	a := m.a
	st := a.Status()
	h := &mixpb.Hello{Role: "agent", Id: a.ID(), Host: a.cfg.Host, Labels: a.cfg.Identity.Labels,
		Backend: st.Backend, FallbackReason: st.FallbackReason}
	if inv, err := inventory.Collect(a.cfg.Host, inventory.Options{}); err == nil {
		h.InventoryJson, _ = json.Marshal(inv)
	}
	for _, p := range a.host.Plugins() {
		info := p.Info()
		h.Plugins = append(h.Plugins, &mixpb.Plugin{Name: p.Name, Kind: string(info.Kind), Version: info.Version})
	}
	return h
}

func (m mixAgent) Apply(ctx context.Context, push *mixpb.WatchResponse) error {
	if len(push.SubscriptionsJson) == 0 {
		return errors.New("a push without a subscription set")
	}
	subs, err := sdk.ParseSubscriptions(push.SubscriptionsJson)
	if err != nil {
		return fmt.Errorf("parsing the pushed set: %w", err)
	}
	return m.a.SetSubscriptions(ctx, subs)
}

func (m mixAgent) Status() *mixpb.Status {
	a := m.a
	st := a.Status()
	counters := a.Counters()
	if h, err := a.CaptureHealth(context.Background()); err == nil {
		for k, v := range h.Counters {
			counters["capture."+k] = v
		}
	}
	return &mixpb.Status{Counters: counters, Backend: st.Backend, FallbackReason: st.FallbackReason}
}
