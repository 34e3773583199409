package inventory

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quanyu/quanyu/internal/testnet"
	"github.com/quanyu/quanyu/sdk"
)

// The inventory finds a namespace the test makes, by name, with its interfaces as the kernel
// reports them (ip -j link).
func TestCollectFindsNamespacesAndInterfaces(t *testing.T) {
	testnet.RequireRoot(t)
	a, b := testnet.NewNS(t, "inva"), testnet.NewNS(t, "invb")
	la, _ := testnet.Veth(t, a, "10.88.0.1/24", b, "10.88.0.2/24")
	a.Exec(t, "ip", "link", "set", la.Name, "mtu", "1400")

	inv, err := Collect("test-host", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if inv.Host != "test-host" || len(inv.Interfaces) == 0 {
		t.Fatalf("inventory %+v", inv)
	}
	hasLo := false
	for _, i := range inv.Interfaces {
		if i.Name == "lo" && i.State == "up" {
			hasLo = true
		}
	}
	if !hasLo {
		t.Errorf("the agent's own namespace should list lo up: %+v", inv.Interfaces)
	}
	var ns *sdk.Namespace
	for i := range inv.Namespaces {
		if inv.Namespaces[i].Name == a.Name {
			ns = &inv.Namespaces[i]
		}
	}
	if ns == nil {
		t.Fatalf("namespace %s not in the inventory: %+v", a.Name, inv.Namespaces)
	}
	var veth *sdk.Interface
	for i := range ns.Interfaces {
		if ns.Interfaces[i].Name == la.Name {
			veth = &ns.Interfaces[i]
		}
	}
	if veth == nil {
		t.Fatalf("%s not among %s's interfaces: %+v", la.Name, a.Name, ns.Interfaces)
	}
	want := netip.MustParsePrefix("10.88.0.1/24")
	if veth.MAC != la.MAC || veth.MTU != 1400 || veth.State != "up" || veth.Kind != "veth" ||
		len(veth.Addrs) != 1 || veth.Addrs[0] != want || veth.Index == 0 {
		t.Fatalf("veth as inventoried: %+v; want MAC %s, MTU 1400, up, veth, %v", veth, la.MAC, want)
	}
	if ns.Inode == 0 {
		t.Errorf("namespace without an inode")
	}
}

// A namespace held only by a process (as a container runtime leaves it) is found through /proc.
func TestCollectFindsProcessNamespaces(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNS(t, "invp")
	cmd := ns.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// ip-netns-exec enters the namespace, then becomes sleep: wait for the second step.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
		if filepath.Base(exe) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not become sleep in its namespace", cmd.Process.Pid)
		}
	}
	// Pretend there is no /run/netns: only the process points at the namespace.
	inv, err := Collect("h", Options{NetnsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range inv.Namespaces {
		for _, pid := range n.PIDs {
			if pid == cmd.Process.Pid {
				found = true
				if n.Name != "" {
					t.Errorf("name %q without /run/netns", n.Name)
				}
			}
		}
	}
	if !found {
		t.Fatalf("process %d's namespace not found: %+v", cmd.Process.Pid, inv.Namespaces)
	}
}
