package capture

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/kern"
	"github.com/quanyu/quanyu/sdk"
)

// kernel is the loaded program and its maps.
type kernel struct {
	objs kern.CaptureObjects
	// tcx reports whether this kernel attaches with TCX (6.6 and later); otherwise TC clsact.
	tcx bool
}

// loadKernel loads the program with the flow map and ring buffer sized as configured. Every
// failure here means the eBPF capture cannot run on this host, and says why.
func loadKernel(maxFlows, ringBytes int) (*kernel, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones to the cgroup, and
	// there the limit does not matter. A failure to raise it is only worth reporting if loading
	// then fails, and loading says why.
	memlockErr := rlimit.RemoveMemlock()
	spec, err := kern.LoadCapture()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	spec.Maps[kern.CaptureMapFlows].MaxEntries = uint32(maxFlows)
	spec.Maps[kern.CaptureMapEvents].MaxEntries = uint32(ringBytes)
	k := &kernel{}
	if err := spec.LoadAndAssign(&k.objs, nil); err != nil {
		if memlockErr != nil {
			err = fmt.Errorf("%w (and raising the locked-memory limit failed: %v)", err, memlockErr)
		}
		return nil, unavailable("loading the eBPF program", err)
	}
	if err := k.probeAttach(); err != nil {
		k.close()
		return nil, err
	}
	return k, nil
}

// unavailable explains a load or attach failure in terms of what to do about it.
func unavailable(what string, err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: %s: permission denied (needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or root): %v",
			sdk.ErrUnavailable, what, err)
	case errors.As(err, &ve):
		return fmt.Errorf("%w: %s: the kernel's verifier rejected it: %v", sdk.ErrUnavailable, what, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %s: this kernel lacks a feature it needs: %v", sdk.ErrUnavailable, what, err)
	}
	return fmt.Errorf("%w: %s: %v", sdk.ErrUnavailable, what, err)
}

// probeAttach finds out, on the loopback device, whether this kernel and this process can attach
// the program, and whether with TCX: a capture that loads but cannot attach would watch nothing.
func (k *kernel) probeAttach() error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("finding the loopback device to probe attaching: %w", err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Index, Program: k.objs.QuanyuCapture, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		k.tcx = true
		return l.Close()
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return unavailable("attaching the eBPF program (TCX)", err)
	}
	// No TCX: TC clsact needs CAP_NET_ADMIN for the qdisc, which a real attach will show; the
	// program type itself loaded, so TC can run it.
	return nil
}

func (k *kernel) close() { _ = k.objs.Close() }

// counters sums the kernel's per-CPU counters.
func (k *kernel) counters() (map[kern.CaptureCounter]uint64, error) {
	out := map[kern.CaptureCounter]uint64{}
	var perCPU []uint64
	for c := kern.CaptureCounter(0); c < kern.CaptureCounterCOUNT_MAX; c++ {
		if err := k.objs.Counters.Lookup(uint32(c), &perCPU); err != nil {
			return nil, fmt.Errorf("reading kernel counter %d: %w", c, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[c] = sum
	}
	return out, nil
}

// attachment is the program on one interface, both ways.
type attachment struct {
	name    string
	ifindex int
	links   []link.Link          // TCX: closing detaches
	filters []*netlink.BpfFilter // TC clsact: deleting detaches
}

// tcFilterName marks the TC filters this capture adds, so that filters left by a capture killed
// before it could remove them (TC filters, unlike TCX links, outlive the process) are found and
// removed at the next start.
const tcFilterName = "quanyu_capture"

// attach puts the program on ingress and egress of an interface.
func (k *kernel) attach(name string, ifindex int, mode string) (*attachment, error) {
	a := &attachment{name: name, ifindex: ifindex}
	useTCX := mode == "tcx" || (mode == "auto" && k.tcx)
	if useTCX {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: k.objs.QuanyuCapture, Attach: at})
			if err != nil {
				a.detach()
				return nil, fmt.Errorf("attaching to %s with TCX: %w", name, err)
			}
			a.links = append(a.links, l)
		}
		return a, nil
	}
	removeStaleTC(ifindex)
	qdisc := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return nil, fmt.Errorf("adding the clsact qdisc to %s: %w", name, err)
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: parent, Handle: netlink.MakeHandle(0, 1),
				Protocol: unix.ETH_P_ALL, Priority: 1},
			Fd: k.objs.QuanyuCapture.FD(), Name: tcFilterName, DirectAction: true,
		}
		if err := netlink.FilterReplace(f); err != nil {
			a.detach()
			return nil, fmt.Errorf("attaching to %s with TC: %w", name, err)
		}
		a.filters = append(a.filters, f)
	}
	return a, nil
}

func (a *attachment) detach() {
	for _, l := range a.links {
		_ = l.Close()
	}
	for _, f := range a.filters {
		_ = netlink.FilterDel(f)
	}
	a.links, a.filters = nil, nil
}

func removeStaleTC(ifindex int) {
	lk, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlink.FilterList(lk, parent)
		if err != nil {
			continue
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, tcFilterName) {
				_ = netlink.FilterDel(bf)
			}
		}
	}
}
