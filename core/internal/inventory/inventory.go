// Package inventory reads what a host looks like to the network: its interfaces (index, MAC,
// addresses, MTU, state, kind, bridge) and every other network namespace with its interfaces.
// Namespaces are found both by name (/run/netns, as ip-netns makes them) and through processes
// (/proc/PID/ns/net, as container runtimes leave them), and told apart by inode.
package inventory

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/quanyu/quanyu/sdk"
)

// maxPIDsPerNamespace bounds how many processes are listed per namespace: enough to tell
// containers apart, not a process table.
const maxPIDsPerNamespace = 4

// Options point the reader at the files it needs (tests point them elsewhere).
type Options struct {
	NetnsDir string // default /run/netns
	ProcDir  string // default /proc
}

// Collect reads the inventory of this host.
func Collect(host string, opts Options) (*sdk.Inventory, error) {
	if opts.NetnsDir == "" {
		opts.NetnsDir = "/run/netns"
	}
	if opts.ProcDir == "" {
		opts.ProcDir = "/proc"
	}
	own, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening own network namespace: %w", err)
	}
	defer own.Close()
	ownInode := inode(int(own))

	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	defer h.Close()
	ifaces, err := interfaces(h)
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	inv := &sdk.Inventory{Host: host, Time: time.Now().UTC(), Interfaces: ifaces, Namespaces: []sdk.Namespace{}}

	byInode := map[uint64]*sdk.Namespace{}
	paths := map[uint64]string{}
	if entries, err := os.ReadDir(opts.NetnsDir); err == nil {
		for _, e := range entries {
			p := filepath.Join(opts.NetnsDir, e.Name())
			ino, err := inodeOfPath(p)
			if err != nil || ino == ownInode {
				continue
			}
			if _, ok := byInode[ino]; !ok {
				byInode[ino] = &sdk.Namespace{Inode: ino}
				paths[ino] = p
			}
			byInode[ino].Name = e.Name()
		}
	}
	if procs, err := os.ReadDir(opts.ProcDir); err == nil {
		for _, e := range procs {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			p := filepath.Join(opts.ProcDir, e.Name(), "ns", "net")
			ino, err := inodeOfPath(p)
			if err != nil || ino == ownInode {
				continue
			}
			ns, ok := byInode[ino]
			if !ok {
				ns = &sdk.Namespace{Inode: ino}
				byInode[ino] = ns
				paths[ino] = p
			}
			if len(ns.PIDs) < maxPIDsPerNamespace {
				ns.PIDs = append(ns.PIDs, pid)
			}
		}
	}
	for ino, ns := range byInode {
		ns.Interfaces, err = namespaceInterfaces(paths[ino])
		if err != nil {
			// A process can exit between listing and opening; its namespace is simply gone.
			delete(byInode, ino)
			continue
		}
		inv.Namespaces = append(inv.Namespaces, *ns)
	}
	sort.Slice(inv.Namespaces, func(i, j int) bool {
		a, b := inv.Namespaces[i], inv.Namespaces[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Inode < b.Inode
	})
	return inv, nil
}

func namespaceInterfaces(path string) ([]sdk.Interface, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("opening netlink in %s: %w", path, err)
	}
	defer h.Close()
	return interfaces(h)
}

func interfaces(h *netlink.Handle) ([]sdk.Interface, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]sdk.Interface, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		iface := sdk.Interface{
			Index: a.Index, Name: a.Name, MTU: a.MTU, Kind: l.Type(), State: "down",
			Addrs: []netip.Prefix{},
		}
		if len(a.HardwareAddr) > 0 {
			iface.MAC = a.HardwareAddr.String()
		}
		if a.Flags&(1<<0) != 0 { // net.FlagUp
			iface.State = "up"
		}
		if a.MasterIndex != 0 {
			iface.Master = names[a.MasterIndex]
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err == nil {
			for _, ad := range addrs {
				ip, ok := netip.AddrFromSlice(ad.IP)
				if !ok {
					continue
				}
				ones, _ := ad.Mask.Size()
				iface.Addrs = append(iface.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
		slices.SortFunc(iface.Addrs, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
		out = append(out, iface)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

func inode(fd int) uint64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	return st.Ino
}

func inodeOfPath(p string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Same reports whether two inventories describe the same host state (time aside).
func Same(a, b *sdk.Inventory) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.Time, y.Time = time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

// InterfaceNames lists the names of the host's own interfaces.
func InterfaceNames(inv *sdk.Inventory) []string {
	out := make([]string, len(inv.Interfaces))
	for i, f := range inv.Interfaces {
		out[i] = f.Name
	}
	return out
}

// IsGlob reports whether an interface pattern is a glob rather than a name.
func IsGlob(pattern string) bool { return strings.ContainsAny(pattern, "*?[") }
