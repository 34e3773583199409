// Package lab brings up a lab of test hosts on this machine, for demos and tests: network
// namespaces joined by one Linux bridge, each running a small service from the quanyu binary
// itself (`quanyu lab serve ROLE`), and a client that sends them a realistic, slowly varying mix
// of requests. An agent capturing on the lab's interfaces sees web → api → db/cache calls, DNS
// lookups between them, errors and slow requests: enough for a live service map.
//
// Everything the lab makes carries its prefix (bridge "qylab0", namespaces "qylab-web", host-side
// veth ends "qylab-web", processes started with "--lab qylab"), so Down finds it all again even
// after a crash or without the state file. Up, Down and Status need root (network namespaces);
// Status reads what it can without.
//
// Lifecycle of the serve processes. Up starts them with `ip netns exec`, which execs the service
// in place, so each is a direct child of the caller. With Options.Detach (the CLI's `lab up`,
// which returns) they outlive the caller and live until Down. Without it (Up called in-process,
// as `quanyu up` does) they must not outlive the caller, and three things see to it: Lab.Down
// kills the ones it tracks; each is started with --parent-pid and exits within a second of its
// parent changing, which covers the caller being killed with SIGKILL; and each exits when its
// namespace is deleted. Pdeathsig is not used: it fires when the creating *thread* exits, and Go
// may retire the thread that forked at any time, killing a lab that should still run. They run
// in their own session in both modes so that a terminal's Ctrl-C reaches only the caller, which
// then takes the lab down in order.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/quanyu/quanyu/internal/confload"
	"github.com/quanyu/quanyu/mix/api"
)

// Defaults of Options.
const (
	DefaultPrefix = "qylab"
	DefaultCIDR   = "10.177.0.0/24"
	// MaxPrefixLength keeps prefix+"-client", the longest link name, within the kernel's 15 bytes.
	MaxPrefixLength = 8
)

// Sentinel errors callers (and the CLI's messages) branch on.
var (
	// ErrNotRoot: the lab needs root for network namespaces.
	ErrNotRoot = errors.New("the lab needs root (network namespaces): run as root or with sudo")
	// ErrNoIP: the ip command is missing.
	ErrNoIP = errors.New("the lab needs the ip command: install the iproute2 package (apt-get install iproute2, dnf install iproute)")
	// ErrExists: a lab with this prefix (or something of it) is already there.
	ErrExists = errors.New("a lab with this prefix is already there")
)

// Options say which lab and how. The zero value is the default lab.
type Options struct {
	// Prefix starts every name the lab makes: 1 to MaxPrefixLength lowercase letters and
	// digits, starting with a letter. Default "qylab".
	Prefix string
	// CIDR is the IPv4 range the lab owns, /24 or wider; the bridge takes .1 and the hosts fixed
	// offsets (web .10, api .20, db .30, cache .40, dns .53, client .100). Default 10.177.0.0/24.
	CIDR netip.Prefix
	// StateDir holds the state file and the services' logs. Default: confload.StateDir("lab").
	StateDir string
	// Exe is the quanyu binary the services run from. Default: this executable.
	Exe string
	// ClientRate is the client's base rate in requests per second (default 5); the rate swings
	// ±50% around it over five minutes. ClientUsers is its number of concurrent users (default 4).
	ClientRate  float64
	ClientUsers int
	// WebErrorRatio and APIErrorRatio are the share of requests web and api fail on their own
	// (HTTP 500). Nil means the defaults, 1% and 2%; point at 0 for none.
	WebErrorRatio, APIErrorRatio *float64
	// Detach lets the services outlive the caller (see the package comment).
	Detach bool
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// withDefaults fills in the defaults and checks the result.
func (o Options) withDefaults() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !o.CIDR.IsValid() {
		o.CIDR = netip.MustParsePrefix(DefaultCIDR)
	}
	if o.StateDir == "" {
		d, err := confload.StateDir("lab")
		if err != nil {
			return o, err
		}
		o.StateDir = d
	}
	if o.ClientRate == 0 {
		o.ClientRate = 5
	}
	if o.ClientUsers == 0 {
		o.ClientUsers = 4
	}
	if o.WebErrorRatio == nil {
		o.WebErrorRatio = ptr(0.01)
	}
	if o.APIErrorRatio == nil {
		o.APIErrorRatio = ptr(0.02)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o, o.validate()
}

func ptr[T any](v T) *T { return &v }

// validate names the option that is wrong.
func (o Options) validate() error {
	if err := checkPrefix(o.Prefix); err != nil {
		return err
	}
	if !o.CIDR.Addr().Is4() || o.CIDR.Bits() > 24 || o.CIDR.Bits() < 8 {
		return fmt.Errorf("cidr %s: want an IPv4 range from /8 to /24", o.CIDR)
	}
	if o.CIDR.Masked() != o.CIDR {
		return fmt.Errorf("cidr %s: host bits set (did you mean %s?)", o.CIDR, o.CIDR.Masked())
	}
	if o.ClientRate < 0 || o.ClientRate > 10000 {
		return fmt.Errorf("client rate %g: want 0 to 10000 requests per second", o.ClientRate)
	}
	if o.ClientUsers < 1 || o.ClientUsers > 1000 {
		return fmt.Errorf("client users %d: want 1 to 1000", o.ClientUsers)
	}
	for name, r := range map[string]*float64{"web error ratio": o.WebErrorRatio, "api error ratio": o.APIErrorRatio} {
		if *r < 0 || *r > 1 {
			return fmt.Errorf("%s %g: want 0 to 1", name, *r)
		}
	}
	return nil
}

func checkPrefix(p string) error {
	if p == "" || len(p) > MaxPrefixLength {
		return fmt.Errorf("prefix %q: want 1 to %d characters (link names are at most 15 bytes)", p, MaxPrefixLength)
	}
	for i, c := range p {
		if !(c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("prefix %q: want lowercase letters and digits, starting with a letter", p)
		}
	}
	return nil
}

// role is one kind of host: its service and where it sits.
type role struct {
	name    string
	offset  int    // the host's address is the lab's range plus this
	port    int    // 0: serves nothing (the client)
	proto   string // "tcp", or "udp+tcp" for dns
	service string // what it runs, for people
	owner   ownerInfo
}

type ownerInfo struct{ name, team, contact, desc string }

// roles are the lab's hosts in the order they start: each after what it calls.
var roles = []role{
	{"dns", 53, 53, "udp+tcp", "DNS :53 (A records of *.lab)",
		ownerInfo{"Network team", "network", "network@example.com", "The lab's DNS server: A records of web.lab, api.lab, db.lab, cache.lab, dns.lab."}},
	{"db", 30, 5432, "tcp", "key-value store :5432",
		ownerInfo{"Data team", "data", "data@example.com", "The lab's database: a key-value store with a line protocol."}},
	{"cache", 40, 6379, "tcp", "key-value cache :6379",
		ownerInfo{"Platform team", "platform", "platform@example.com", "The lab's cache: a key-value store whose keys expire."}},
	{"api", 20, 8080, "tcp", "HTTP API :8080",
		ownerInfo{"Orders team", "orders", "orders@example.com", "The lab's API: products and orders, backed by db and cache."}},
	{"web", 10, 80, "tcp", "HTTP storefront :80",
		ownerInfo{"Storefront team", "web", "storefront@example.com", "The lab's storefront: pages, products and a cart, calling api."}},
	{"client", 100, 0, "", "traffic generator",
		ownerInfo{"Load generator", "lab", "lab@example.com", "The lab's simulated users, sending requests to web."}},
}

func roleByName(name string) (role, bool) {
	for _, r := range roles {
		if r.name == name {
			return r, true
		}
	}
	return role{}, false
}

// Host is one host of the lab.
type Host struct {
	Name      string     `json:"name"`      // web, api, db, cache, dns, client
	Service   string     `json:"service"`   // what it runs, for people
	Namespace string     `json:"namespace"` // its network namespace
	Veth      string     `json:"veth"`      // the host-side end of its link, on the bridge
	Addr      netip.Addr `json:"addr"`
	Port      int        `json:"port,omitempty"`  // 0 for the client
	Proto     string     `json:"proto,omitempty"` // tcp, or udp+tcp for dns
	PID       int        `json:"pid,omitempty"`
	// Start is the process's start time in clock ticks since boot (/proc/PID/stat field 22),
	// so that a pid reused by another program after a crash is never killed for the lab's.
	Start uint64 `json:"start,omitempty"`
	Log   string `json:"log"`
}

// names are the names of one lab's pieces, all derived from its prefix.
type names struct{ prefix string }

func (n names) bridge() string               { return n.prefix + "0" }
func (n names) namespace(host string) string { return n.prefix + "-" + host }
func (n names) veth(host string) string      { return n.prefix + "-" + host }
func (n names) ours(name string) bool        { return strings.HasPrefix(name, n.prefix+"-") }

// addrAt is the address offset hosts into the range.
func addrAt(p netip.Prefix, offset int) netip.Addr {
	a := p.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(offset)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// plan lays out the hosts of a lab (without pids).
func plan(o Options) []Host {
	n := names{o.Prefix}
	hosts := make([]Host, 0, len(roles))
	for _, r := range roles {
		hosts = append(hosts, Host{
			Name: r.name, Service: r.service, Namespace: n.namespace(r.name), Veth: n.veth(r.name),
			Addr: addrAt(o.CIDR, r.offset), Port: r.port, Proto: r.proto,
			Log: filepath.Join(o.StateDir, o.Prefix+"-"+r.name+".log"),
		})
	}
	return hosts
}

// Lab is a running lab.
type Lab struct {
	opts  Options
	state state

	mu   sync.Mutex
	down bool
}

// Hosts are the lab's hosts, in the order they started.
func (l *Lab) Hosts() []Host { return append([]Host(nil), l.state.Hosts...) }

// Interfaces are the host-side veth ends, one per host: an agent capturing on them sees every
// packet of the lab once per host it passes (a web → api request on web's and on api's).
func (l *Lab) Interfaces() []string {
	out := make([]string, 0, len(l.state.Hosts))
	for _, h := range l.state.Hosts {
		out = append(out, h.Veth)
	}
	return out
}

// Bridge is the name of the lab's bridge; it holds the lab's first address.
func (l *Lab) Bridge() string { return l.state.Bridge }

// StateFile is where the lab is recorded.
func (l *Lab) StateFile() string { return stateFile(l.opts.StateDir, l.opts.Prefix) }

// String sums the lab up in a line.
func (l *Lab) String() string {
	parts := make([]string, 0, len(l.state.Hosts))
	for _, h := range l.state.Hosts {
		parts = append(parts, h.Name+" "+h.Addr.String())
	}
	return fmt.Sprintf("%d hosts on bridge %s (%s): %s", len(l.state.Hosts), l.state.Bridge, l.state.CIDR, strings.Join(parts, ", "))
}

// Catalog is the lab's applications and their owners, one per host, each matching its host's
// address, ready to be applied to mix's catalog.
func (l *Lab) Catalog() []api.CatalogEntry { return catalog(l.opts.Prefix, l.state.Hosts) }

// CatalogJSON is Catalog as the document `quanyu catalog apply` takes.
func (l *Lab) CatalogJSON() ([]byte, error) {
	return json.MarshalIndent(map[string]any{"catalog": l.Catalog()}, "", "  ")
}

// Down stops the services this Lab started and removes everything of the lab (as Down does).
// It is safe to call twice.
func (l *Lab) Down(ctx context.Context) error {
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		return nil
	}
	l.down = true
	l.mu.Unlock()
	_, err := Down(ctx, l.opts)
	return err
}

// checkPrivileges says what is missing for changing the network.
func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return ErrNoIP
	}
	return nil
}
