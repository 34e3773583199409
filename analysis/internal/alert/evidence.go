package alert

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/sdk"
)

// Evidence: when an alert fires, mix is asked for a subscription as narrow as the series allows
// (the server addresses and ports seen on it in the last minute, frames on, expiring by itself
// after EvidenceFor), pushed to the agents whose hosts reported that traffic in the last minutes
// (to every agent when none did yet: only those that see the traffic match it).
// The first flow event that names the subscription gives a conversation; its flow trace is read
// a few seconds later, once its records are in the store, and attached to the alert.

const (
	maxEvidenceSockets = 8
	// traceDelay lets the conversation's records reach the store before its trace is read.
	traceDelay = 5 * time.Second
)

// requestEvidence asks mix for an evidence subscription for a firing alert. Called with mu held;
// mix is asked on another goroutine.
func (ev *Evaluator) requestEvidence(ss *seriesState, a *Alert, bucket time.Time) {
	if ev.o.Evidence == nil {
		return
	}
	var servers []netip.Addr
	var ports []uint16
	var transports []sdk.Transport
	add := func(addr netip.Addr, t sdk.Transport, port uint16) {
		if !slices.Contains(servers, addr) && len(servers) < maxEvidenceSockets {
			servers = append(servers, addr)
		}
		if port != 0 && !slices.Contains(ports, port) && len(ports) < maxEvidenceSockets {
			ports = append(ports, port)
		}
		if t != 0 && !slices.Contains(transports, t) {
			transports = append(transports, t)
		}
	}
	k := ss.key
	switch {
	case a.Series.Address != "":
		if addr, err := netip.ParseAddr(a.Series.Address); err == nil {
			add(addr, 0, 0)
		}
	case k.target != "":
		source := k.source
		if source == "" {
			source = ss.topClient
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		socks, err := ev.o.Source.EdgeSockets(ctx, bucket.Add(-time.Minute), bucket.Add(step), source, k.target, 64)
		cancel()
		if err != nil {
			ev.log.Warn("finding the sockets of an alert's edge failed", "alert", a.ID, "err", err)
		}
		for _, s := range socks {
			add(s.Server, s.Transport, s.Port)
		}
	}
	if k.port != 0 {
		add(netip.Addr{}, k.transport, k.port)
		servers = slices.DeleteFunc(servers, func(a netip.Addr) bool { return !a.IsValid() })
	}
	if len(servers) == 0 && len(ports) == 0 {
		a.Evidence = &Evidence{State: EvidenceFailed, Error: "no address or port of the series is known to narrow a subscription to"}
		ev.c.evidenceFailed.Add(1)
		return
	}
	// Only the agents that reported the series' traffic get the subscription; when none is known
	// yet (flows are reported when they end), every agent does, and only those that see the
	// traffic match it.
	var hosts []string
	for _, srv := range servers {
		port := uint16(0)
		if len(ports) == 1 {
			port = ports[0]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		hs, err := ev.o.Source.EdgeHosts(ctx, srv, port, bucket.Add(-10*time.Minute))
		cancel()
		if err != nil {
			ev.log.Warn("finding the agents that see an alert's edge failed", "alert", a.ID, "err", err)
			hosts = nil
			break
		}
		for _, h := range hs {
			if !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	if len(servers) == 0 {
		hosts = nil
	}
	fired := *a.FiredAt
	id := "evidence-" + a.Fingerprint[:8] + "-" + fired.UTC().Format("20060102t150405")
	expires := ev.o.Now().Add(ev.o.EvidenceFor).Truncate(time.Second)
	sub := sdk.Subscription{ID: id, Name: "evidence for alert " + a.Rule + " on " + a.Series.Name, Owner: "analysis",
		Expires: expires, Options: sdk.Options{Frames: true}, Selector: sdk.Selector{Hosts: hosts},
		Spec: sdk.Spec{L3: servers, L4: ports, L4Class: transports}}
	a.Evidence = &Evidence{Subscription: id, Expires: expires, State: EvidenceRequested}
	ev.c.evidenceRequested.Add(1)
	ev.evMu.Lock()
	ev.watches[id] = &watch{fingerprint: a.Fingerprint, alertID: a.ID, firedAt: fired, expires: expires}
	ev.pending.Add(1)
	ev.evMu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := ev.o.Evidence.Subscribe(ctx, sub)
		if err == nil {
			return
		}
		ev.log.Warn("asking mix for an evidence subscription failed", "alert", a.ID, "err", err)
		ev.c.evidenceFailed.Add(1)
		ev.evMu.Lock()
		if w := ev.watches[id]; w != nil {
			delete(ev.watches, id)
			if w.cid == "" {
				ev.pending.Add(-1)
			}
		}
		ev.evMu.Unlock()
		ev.mu.Lock()
		defer ev.mu.Unlock()
		if a.Evidence != nil && a.Evidence.Subscription == id {
			a.Evidence.State, a.Evidence.Error = EvidenceFailed, err.Error()
		}
	}()
}

// onEvent is the engine's event hook: an event with frames naming an evidence subscription,
// after its alert fired, gives the conversation to trace.
func (ev *Evaluator) onEvent(agent string, e *sdk.Event) {
	// Only an event with frames is evidence: the end of a conversation that began before the
	// subscription names it too, but the kernel gives frames with a conversation's first packet.
	if ev.pending.Load() == 0 || e.CommunityID == "" || len(e.L3Frame) == 0 {
		return
	}
	ev.evMu.Lock()
	defer ev.evMu.Unlock()
	for _, id := range e.Subscriptions {
		if !strings.HasPrefix(id, "evidence-") {
			continue
		}
		w := ev.watches[id]
		if w == nil || w.cid != "" || e.Time.Before(w.firedAt) {
			continue
		}
		w.cid, w.agent, w.seenAt = e.CommunityID, agent, ev.o.Now()
		ev.pending.Add(-1)
	}
}

// progressEvidence attaches the traces that are ready, and gives up on subscriptions that
// expired with nothing seen. Called with mu held.
func (ev *Evaluator) progressEvidence(bucket time.Time) []store.AlertRecord {
	now := ev.o.Now()
	type ready struct {
		id string
		w  watch
	}
	var due []ready
	ev.evMu.Lock()
	for id, w := range ev.watches {
		switch {
		case w.cid != "" && now.Sub(w.seenAt) >= traceDelay:
			due = append(due, ready{id, *w})
			delete(ev.watches, id)
		case w.cid == "" && now.After(w.expires.Add(traceDelay)):
			due = append(due, ready{id, *w})
			delete(ev.watches, id)
			ev.pending.Add(-1)
		}
	}
	ev.evMu.Unlock()
	var hist []store.AlertRecord
	for _, r := range due {
		a := ev.findAlert(r.w.fingerprint, r.w.alertID)
		if a == nil || a.Evidence == nil {
			continue
		}
		if r.w.cid == "" {
			a.Evidence.State = EvidenceNone
			ev.c.evidenceNone.Add(1)
		} else {
			a.Evidence.CommunityID, a.Evidence.Agent = r.w.cid, r.w.agent
			conv, err := ev.o.Source.Conversation(r.w.cid)
			if err != nil {
				a.Evidence.State, a.Evidence.Error = EvidenceFailed, "reading the flow trace: "+err.Error()
				ev.c.evidenceFailed.Add(1)
			} else {
				at := now
				a.Evidence.State, a.Evidence.Trace, a.Evidence.CapturedAt = EvidenceCaptured, &conv, &at
				ev.c.evidenceCaptured.Add(1)
			}
		}
		hist = append(hist, record(a))
	}
	return hist
}

// findAlert finds an alert that is active, or was resolved since, by fingerprint and id.
// Called with mu held.
func (ev *Evaluator) findAlert(fp, id string) *Alert {
	for _, rs := range ev.rules {
		for _, ss := range rs.series {
			if ss.alert != nil && ss.alert.Fingerprint == fp && ss.alert.ID == id {
				return ss.alert
			}
		}
	}
	// Resolved already: take it from the history, so the evidence still reaches it.
	recs, err := ev.o.Store.ReadAlerts(context.Background(), store.AlertQuery{Fingerprint: fp, Limit: 10})
	if err != nil {
		return nil
	}
	for _, r := range recs {
		if r.ID == id {
			return decodeAlert(r.Body)
		}
	}
	return nil
}
