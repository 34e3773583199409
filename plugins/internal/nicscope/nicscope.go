// Package nicscope decides which interfaces a capture watches and for which subscriptions: a
// subscription that names interfaces (NIC) watches those; one that names none watches the
// agent's own interface patterns minus its excluded ones. Both capture backends use it, so they
// watch the same interfaces and tag flows with the same subscriptions.
package nicscope

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/quanyu/quanyu/sdk"
)

// AgentWatches reports whether the agent's own interface patterns (capture.interfaces minus
// capture.exclude_interfaces) take in the interface: the scope of subscriptions that name no NIC.
func AgentWatches(cfg *sdk.CaptureConfig, name string) bool {
	for _, p := range cfg.ExcludeInterfaces {
		if ok, _ := path.Match(p, name); ok {
			return false
		}
	}
	for _, p := range cfg.Interfaces {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// NoInterface is a NIC pattern no interface name matches (names cannot contain '/').
const NoInterface = "/"

// Scope gives the subscriptions as they apply on a host with the given interfaces: one that names
// no NIC is made to name the interfaces the agent watches, so a per-flow matcher and every filter
// compiled from the result tag and pass a flow only for the subscriptions that watch its
// interface. An interface outside the agent's patterns (lo) can still be watched by a
// subscription that names it, and then only for that subscription. agentNames are the
// interfaces the agent's patterns take in, sorted.
func Scope(cfg *sdk.CaptureConfig, ifaces []string) (subs []sdk.Subscription, agentNames []string) {
	for _, name := range ifaces {
		if AgentWatches(cfg, name) {
			agentNames = append(agentNames, name)
		}
	}
	slices.Sort(agentNames)
	subs = make([]sdk.Subscription, len(cfg.Subscriptions))
	copy(subs, cfg.Subscriptions)
	for i := range subs {
		if len(subs[i].Spec.NIC) > 0 {
			continue
		}
		subs[i].Spec.NIC = append([]string{NoInterface}, agentNames...)
	}
	return subs, agentNames
}

// WatchedBy reports whether any of the scoped subscriptions watches the interface.
func WatchedBy(subs []sdk.Subscription, name string) bool {
	for _, s := range subs {
		for _, p := range s.Spec.NIC {
			if ok, _ := path.Match(p, name); ok {
				return true
			}
		}
	}
	return false
}

// HasEthernetHeader reports whether frames on the interface start with an Ethernet header, the
// only link layer the capture reads. Loopback devices fake one, so they qualify; tun devices and
// other raw-IP links (ARPHRD_NONE and friends) do not.
func HasEthernetHeader(name string) bool {
	raw, err := os.ReadFile("/sys/class/net/" + name + "/type")
	if err != nil {
		return true // unknown: try, and let the parser count what it cannot read
	}
	switch strings.TrimSpace(string(raw)) {
	case "1", "772": // ARPHRD_ETHER, ARPHRD_LOOPBACK
		return true
	}
	return false
}

// Host is this host's interfaces as a capture sees them.
type Host struct {
	Names []string
	Index map[string]uint32
	Up    map[string]bool
}

// ReadHost lists the interfaces of the capture's network namespace.
func ReadHost() (Host, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return Host{}, fmt.Errorf("listing interfaces: %w", err)
	}
	h := Host{Names: make([]string, len(ifaces)), Index: map[string]uint32{}, Up: map[string]bool{}}
	for i, ifc := range ifaces {
		h.Names[i] = ifc.Name
		h.Index[ifc.Name] = uint32(ifc.Index)
		h.Up[ifc.Name] = ifc.Flags&net.FlagUp != 0
	}
	return h, nil
}

// Watch picks the interfaces to capture on: watched by one of the scoped subscriptions, up (a
// down interface carries nothing, and its socket or hook is set up when a later look finds it
// up), and with an Ethernet header. An interface left out for want of one is logged once, and
// remembered in skipped.
func (h Host) Watch(subs []sdk.Subscription, skipped map[string]bool, log *slog.Logger) map[string]bool {
	want := map[string]bool{}
	for _, name := range h.Names {
		if !WatchedBy(subs, name) || !h.Up[name] {
			continue
		}
		if !HasEthernetHeader(name) {
			if !skipped[name] {
				skipped[name] = true
				log.Warn("interface carries no Ethernet header (a tun or similar device); it is not captured", "nic", name)
			}
			continue
		}
		want[name] = true
	}
	return want
}
