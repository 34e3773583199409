// Package testnet builds small networks of test hosts for tests: network namespaces joined by veth
// pairs, with addresses, created by the test itself and removed when it ends. Everything here
// needs root; CI runs as root.
package testnet

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireRoot skips a test that needs root when not running as root. CI runs as root, so there
// these tests always run.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and packet sockets (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the ip command (iproute2) is missing: %v", err)
	}
}

// Name returns a short unique name (interface names are at most 15 bytes).
func Name(prefix string) string {
	return fmt.Sprintf("%s%04x", prefix, rand.IntN(0x10000))
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NS is a network namespace made for one test.
type NS struct {
	Name string
}

// NewNS creates a namespace with lo up and IPv6 off (so no router solicitations or MLD reports
// add packets the test did not send); it is deleted when the test ends.
func NewNS(t testing.TB, prefix string) *NS {
	t.Helper()
	ns := &NS{Name: Name("qy" + prefix)}
	Run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.Name).Run() })
	ns.Exec(t, "ip", "link", "set", "lo", "up")
	ns.Exec(t, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
	ns.Exec(t, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1")
	return ns
}

// Exec runs a command inside the namespace; a nil *NS is the test's own namespace.
func (ns *NS) Exec(t testing.TB, name string, args ...string) string {
	t.Helper()
	if ns == nil {
		return Run(t, name, args...)
	}
	return Run(t, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Link is one end of a veth pair.
type Link struct {
	NS   *NS
	Name string
	MAC  string
}

// Veth joins two namespaces with a veth pair, gives each end an address (CIDR form) and brings
// them up. The neighbours are set statically, so no ARP crosses the link: the only packets on it
// are the ones the test sends. A nil a is the test's own namespace; that end is deleted when the
// test ends (the other goes with its namespace).
func Veth(t testing.TB, a *NS, addrA string, b *NS, addrB string) (*Link, *Link) {
	t.Helper()
	na, nb := Name("qva"), Name("qvb")
	args := []string{"link", "add", na}
	if a != nil {
		args = append(args, "netns", a.Name)
	} else {
		sweep(addrA)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", na).Run() })
	}
	Run(t, "ip", append(args, "type", "veth", "peer", "name", nb, "netns", b.Name)...)
	if a == nil {
		// Keep the kernel from sending router solicitations and MLD reports on the test's end.
		Run(t, "sysctl", "-q", "-w", "net.ipv6.conf."+na+".disable_ipv6=1")
	}
	la, lb := &Link{NS: a, Name: na}, &Link{NS: b, Name: nb}
	for _, l := range []struct {
		link *Link
		addr string
	}{{la, addrA}, {lb, addrB}} {
		l.link.NS.Exec(t, "ip", "addr", "add", l.addr, "dev", l.link.Name)
		l.link.NS.Exec(t, "ip", "link", "set", l.link.Name, "up")
		l.link.MAC = l.link.linkInfo(t).Address
	}
	ipA, ipB := strings.Split(addrA, "/")[0], strings.Split(addrB, "/")[0]
	a.Exec(t, "ip", "neigh", "replace", ipB, "lladdr", lb.MAC, "dev", na, "nud", "permanent")
	b.Exec(t, "ip", "neigh", "replace", ipA, "lladdr", la.MAC, "dev", nb, "nud", "permanent")
	return la, lb
}

// sweep removes, from the test's own namespace, links of ours (named qv…) that hold addr: left by
// an earlier test run that was killed before its clean-up, they would take the route.
func sweep(addr string) {
	out, err := exec.Command("ip", "-j", "addr", "show").Output()
	if err != nil {
		return
	}
	var links []struct {
		Name  string `json:"ifname"`
		Addrs []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if json.Unmarshal(out, &links) != nil {
		return
	}
	for _, l := range links {
		for _, a := range l.Addrs {
			if strings.HasPrefix(l.Name, "qv") && fmt.Sprintf("%s/%d", a.Local, a.PrefixLen) == addr {
				_ = exec.Command("ip", "link", "del", l.Name).Run()
			}
		}
	}
}

type linkJSON struct {
	Address string `json:"address"`
	Stats   struct {
		RX struct {
			Bytes   uint64 `json:"bytes"`
			Packets uint64 `json:"packets"`
		} `json:"rx"`
		TX struct {
			Bytes   uint64 `json:"bytes"`
			Packets uint64 `json:"packets"`
		} `json:"tx"`
	} `json:"stats64"`
}

func (l *Link) linkInfo(t testing.TB) linkJSON {
	t.Helper()
	out := l.NS.Exec(t, "ip", "-s", "-j", "link", "show", l.Name)
	var links []linkJSON
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("reading link %s: %v\n%s", l.Name, err, out)
	}
	return links[0]
}

// Counters are the kernel's own interface counters (link-layer bytes).
type Counters struct {
	RXPackets, RXBytes, TXPackets, TXBytes uint64
}

// Counters reads the interface's counters from the kernel.
func (l *Link) Counters(t testing.TB) Counters {
	t.Helper()
	li := l.linkInfo(t)
	return Counters{RXPackets: li.Stats.RX.Packets, RXBytes: li.Stats.RX.Bytes,
		TXPackets: li.Stats.TX.Packets, TXBytes: li.Stats.TX.Bytes}
}

// Sub is the difference of two counter readings.
func (c Counters) Sub(o Counters) Counters {
	return Counters{c.RXPackets - o.RXPackets, c.RXBytes - o.RXBytes, c.TXPackets - o.TXPackets, c.TXBytes - o.TXBytes}
}

// Do runs fn on an OS thread switched into the namespace. Sockets created inside fn stay in the
// namespace after fn returns, so a test can listen and dial in several namespaces from one
// process.
func (ns *NS) Do(fn func() error) error {
	target, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", ns.Name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is never handed back to the runtime: it exits with this goroutine, so no other
		// goroutine can ever run in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Command returns a command that runs inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}
