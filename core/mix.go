package core

import (
	"context"
	"encoding/json"

	"github.com/quanyu/quanyu/core/internal/inventory"
	"github.com/quanyu/quanyu/core/internal/mixclient"
	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/mixpb"
	"github.com/quanyu/quanyu/sdk"
)

// mixClient builds the agent's client of mix.
func (a *Agent) mixClient() *mixclient.Client {
	m := a.cfg.Mix
	return &mixclient.Client{
		Dial:           mix.DialOptions{Address: m.Address, Token: m.Token, CA: m.CA, Cert: m.Cert, Key: m.Key, ServerName: m.ServerName},
		Agent:          mixAgent{a},
		Log:            a.opts.Log.With("component", "mixclient"),
		StatusInterval: m.StatusInterval,
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

func (m mixAgent) Apply(ctx context.Context, subs []sdk.Subscription) error {
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
