package sdk

import (
	"net/netip"
	"time"
)

// Inventory is what a host looks like to the network: its interfaces and, per network namespace,
// theirs. It is the seed's "network topology, interfaces and namespace attributes".
type Inventory struct {
	Host       string      `json:"host"`
	Time       time.Time   `json:"time"`
	Interfaces []Interface `json:"interfaces"`
	Namespaces []Namespace `json:"namespaces"`
}

// Interface is one network interface.
type Interface struct {
	Index int            `json:"index"`
	Name  string         `json:"name"`
	MAC   string         `json:"mac,omitempty"`
	Addrs []netip.Prefix `json:"addresses"`
	MTU   int            `json:"mtu"`
	State string         `json:"state"` // "up" or "down"
	Kind  string         `json:"kind,omitempty"`
	// Master is the bridge or bond this interface is enslaved to, if any.
	Master string `json:"master,omitempty"`
}

// Namespace is one network namespace other than the agent's own.
type Namespace struct {
	// Name is the name under /run/netns, empty for namespaces only a process holds.
	Name string `json:"name,omitempty"`
	// Inode identifies the namespace (as in /proc/PID/ns/net → net:[inode]).
	Inode uint64 `json:"inode"`
	// PIDs are up to a few processes living in the namespace, to tell containers apart.
	PIDs       []int       `json:"pids,omitempty"`
	Interfaces []Interface `json:"interfaces"`
}
