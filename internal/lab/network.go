package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// ip runs the ip command; the error names the command and carries its output.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// labNamespaces are the named namespaces with the lab's prefix.
func labNamespaces(n names) []string {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if n.ours(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// labLinks are the links of this (the host's) namespace with the lab's prefix: the bridge and
// the host-side veth ends, bridge last so that deleting in order takes the ports first.
func labLinks(n names) []string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []string
	bridge := false
	for _, ifc := range ifaces {
		switch {
		case ifc.Name == n.bridge():
			bridge = true
		case n.ours(ifc.Name):
			out = append(out, ifc.Name)
		}
	}
	sort.Strings(out)
	if bridge {
		out = append(out, n.bridge())
	}
	return out
}

// leftovers are what of the lab exists, for people: "bridge qylab0", "namespace qylab-web".
func leftovers(n names) []string {
	var out []string
	for _, l := range labLinks(n) {
		kind := "link"
		if l == n.bridge() {
			kind = "bridge"
		}
		out = append(out, kind+" "+l)
	}
	for _, ns := range labNamespaces(n) {
		out = append(out, "namespace "+ns)
	}
	return out
}

// checkOverlap refuses a range that an address of this host already falls into (or that holds
// one): the lab would take over or shadow that network's routes.
func checkOverlap(cidr netip.Prefix) error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing this host's interfaces: %w", err)
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			p, err := netip.ParsePrefix(ipn.String())
			if err != nil {
				continue
			}
			if p.Addr().Unmap().Is4() && p.Overlaps(cidr) {
				return fmt.Errorf("the lab's range %s overlaps %s on %s: pick another range (--cidr)", cidr, p, ifc.Name)
			}
		}
	}
	return nil
}

// createBridge makes the bridge with the lab's first address, IPv6 off.
func createBridge(ctx context.Context, name string, addr netip.Prefix) error {
	if err := ip(ctx, "link", "add", name, "type", "bridge"); err != nil {
		return fmt.Errorf("creating bridge %s: %w", name, err)
	}
	if err := disableIPv6(name); err != nil {
		return fmt.Errorf("turning IPv6 off on %s: %w", name, err)
	}
	if err := ip(ctx, "addr", "add", addr.String(), "dev", name); err != nil {
		return fmt.Errorf("giving bridge %s its address: %w", name, err)
	}
	if err := ip(ctx, "link", "set", name, "up"); err != nil {
		return fmt.Errorf("bringing bridge %s up: %w", name, err)
	}
	return nil
}

// createHost makes a host: its namespace (lo up, IPv6 off) and a veth pair whose inside end is
// eth0 with the host's address and a default route through the bridge, and whose outside end
// is a port of the bridge.
func createHost(ctx context.Context, h Host, bridge string, bits int, gateway netip.Addr) error {
	if err := ip(ctx, "netns", "add", h.Namespace); err != nil {
		return fmt.Errorf("creating namespace %s: %w", h.Namespace, err)
	}
	// IPv6 goes off in the namespace before any link comes up in it, so that no router
	// solicitation or MLD report ever leaves a host: the map shows only the lab's own traffic.
	if err := inNamespace(h.Namespace, func() error {
		for _, k := range []string{"all", "default"} {
			if err := disableIPv6(k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("turning IPv6 off in namespace %s: %w", h.Namespace, err)
	}
	steps := []struct {
		what string
		args []string
	}{
		{"creating link " + h.Veth, []string{"link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.Namespace}},
		{"", nil}, // IPv6 off on the outside end, before it comes up
		{"attaching " + h.Veth + " to " + bridge, []string{"link", "set", h.Veth, "master", bridge}},
		{"bringing " + h.Veth + " up", []string{"link", "set", h.Veth, "up"}},
		{"bringing lo up in " + h.Namespace, []string{"-n", h.Namespace, "link", "set", "lo", "up"}},
		{"giving " + h.Name + " its address", []string{"-n", h.Namespace, "addr", "add", netip.PrefixFrom(h.Addr, bits).String(), "dev", "eth0"}},
		{"bringing eth0 up in " + h.Namespace, []string{"-n", h.Namespace, "link", "set", "eth0", "up"}},
		{"routing " + h.Namespace + " through the bridge", []string{"-n", h.Namespace, "route", "add", "default", "via", gateway.String()}},
	}
	for _, s := range steps {
		if s.args == nil {
			if err := disableIPv6(h.Veth); err != nil {
				return fmt.Errorf("turning IPv6 off on %s: %w", h.Veth, err)
			}
			continue
		}
		if err := ip(ctx, s.args...); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// disableIPv6 turns IPv6 off on a link of the calling thread's namespace ("all" and "default"
// for every link). A kernel without IPv6 has nothing to turn off.
func disableIPv6(link string) error {
	path := filepath.Join("/proc/sys/net/ipv6/conf", link, "disable_ipv6")
	err := os.WriteFile(path, []byte("1"), 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat("/proc/sys/net/ipv6"); errors.Is(statErr, fs.ErrNotExist) {
			return nil
		}
	}
	return err
}

// inNamespace runs fn on a thread moved into the named namespace. The thread stays locked and
// ends with its goroutine, so it never returns to the runtime's pool in the wrong namespace.
func inNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join(netnsDir, ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
