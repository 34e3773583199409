//go:build linux

package cbpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/quanyu/quanyu/internal/testframes"
	"github.com/quanyu/quanyu/sdk"
)

// TestKernel attaches compiled programs to an AF_PACKET socket on one end of a veth pair, in a
// network namespace of its own, sends frames into the other end, and checks that the kernel
// accepts each program and passes exactly the frames the BPF interpreter passes, cut to the
// returned snap length.
func TestKernel(t *testing.T) {
	seed := testSeed(t)
	done := make(chan error, 1)
	go func() {
		// The thread is never unlocked: when this goroutine returns, the runtime ends the thread,
		// and the namespace and its veth pair go with it, however the test ended.
		runtime.LockOSThread()
		done <- kernelTest(t, seed)
	}()
	err := <-done
	var skip skipError
	if errors.As(err, &skip) {
		t.Skip(string(skip))
	}
	if err != nil {
		t.Fatal(err)
	}
}

type skipError string

func (s skipError) Error() string { return string(s) }

type vethPair struct {
	tx, rx   int // sockets
	txIndex  int
	rxIndex  int
	received map[uint32][]byte
}

func setUpVeth() (*vethPair, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, skipError(fmt.Sprintf("creating a network namespace needs CAP_SYS_ADMIN (CI runs this test as root): %v", err))
		}
		return nil, skipError(fmt.Sprintf("this kernel cannot create a network namespace: %v", err))
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "qtx0", MTU: 1500}, PeerName: "qrx0"}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT) {
			return nil, skipError(fmt.Sprintf("this kernel has no veth devices: %v", err))
		}
		return nil, fmt.Errorf("creating a veth pair: %w", err)
	}
	p := &vethPair{received: map[uint32][]byte{}}
	for _, name := range []string{"qtx0", "qrx0"} {
		// IPv6 would send router solicitations and MLD reports through the pair; the marker check
		// below ignores them anyway, but a quiet pair keeps the receive queue short.
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
		link, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("finding %s: %w", name, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("bringing %s up: %w", name, err)
		}
		if name == "qtx0" {
			p.txIndex = link.Attrs().Index
		} else {
			p.rxIndex = link.Attrs().Index
		}
	}
	var err error
	if p.rx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, skipError(fmt.Sprintf("this kernel has no AF_PACKET sockets: %v", err))
		}
		return nil, fmt.Errorf("opening the receiving AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(p.rx, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: p.rxIndex}); err != nil {
		p.close()
		return nil, fmt.Errorf("binding the receiving socket to qrx0: %w", err)
	}
	if err := unix.SetsockoptInt(p.rx, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		p.close()
		return nil, fmt.Errorf("enlarging the receive buffer: %w", err)
	}
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(p.rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		p.close()
		return nil, fmt.Errorf("setting the receive timeout: %w", err)
	}
	if p.tx, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
		p.close()
		return nil, fmt.Errorf("opening the sending AF_PACKET socket: %w", err)
	}
	return p, nil
}

func (p *vethPair) close() {
	if p.rx > 0 {
		unix.Close(p.rx)
	}
	if p.tx > 0 {
		unix.Close(p.tx)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (p *vethPair) attach(prog Program) error {
	filter := make([]unix.SockFilter, len(prog.Instructions))
	for i, ri := range prog.Instructions {
		filter[i] = unix.SockFilter{Code: ri.Op, Jt: ri.Jt, Jf: ri.Jf, K: ri.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: unsafe.SliceData(filter)}
	if err := unix.SetsockoptSockFprog(p.rx, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attaching a %d-instruction program (SO_ATTACH_FILTER): %w", len(filter), err)
	}
	return nil
}

func (p *vethPair) send(frame []byte) error {
	addr := &unix.SockaddrLinklayer{Ifindex: p.txIndex, Protocol: htons(binary.BigEndian.Uint16(frame[12:])), Halen: 6}
	copy(addr.Addr[:], frame[:6])
	if err := unix.Sendto(p.tx, frame, 0, addr); err != nil {
		return fmt.Errorf("sending a %d-byte frame on qtx0: %w", len(frame), err)
	}
	return nil
}

// receiveUntil reads frames until the one carrying marker stop, keeping ours (source MAC
// 02:51:…) by marker.
func (p *vethPair) receiveUntil(stop uint32) error {
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(p.rx, buf, 0)
		if err != nil {
			return fmt.Errorf("waiting for the end-of-batch frame: %w", err)
		}
		if n < 12 || buf[6] != 0x02 || buf[7] != 0x51 {
			continue
		}
		marker := binary.BigEndian.Uint32(buf[8:])
		if marker == stop {
			return nil
		}
		p.received[marker] = append([]byte(nil), buf[:n]...)
	}
}

// kernelView is the frame as a socket filter sees it: on receive the kernel moves an outer
// 802.1Q or 802.1ad tag into packet metadata before the taps run.
func kernelView(frame []byte) []byte {
	if len(frame) >= 18 {
		if tpid := binary.BigEndian.Uint16(frame[12:]); tpid == 0x8100 || tpid == 0x88a8 {
			return append(append([]byte(nil), frame[:12]...), frame[16:]...)
		}
	}
	return frame
}

func kernelTest(t *testing.T, seed uint64) error {
	p, err := setUpVeth()
	if err != nil {
		return err
	}
	defer p.close()

	g := testframes.NewGen(seed)
	type batch struct {
		name string
		subs []sdk.Subscription
		opts Options
		n    int
	}
	var batches []batch
	for len(batches) < 8 {
		subs := g.Set()
		prog, err := Compile(subs, "qrx0", Options{})
		if err != nil {
			return err
		}
		if len(prog.Subscriptions) == 0 {
			continue // the end-of-batch ARP frame would not come through
		}
		batches = append(batches, batch{fmt.Sprintf("random set %d", len(batches)), subs,
			Options{SnapLen: testframes.Pick(g, []uint32{0, 64, 100})}, 50})
	}
	big := bigSet(seed)
	batches = append(batches,
		batch{"1,000 CIDRs and 100 port ranges", big, Options{SnapLen: 96}, 60},
		batch{"the same, widened to 400 instructions", big, Options{SnapLen: 96, MaxInstructions: 400}, 40},
	)

	var sent, passed int
	for bi, b := range batches {
		prog, err := Compile(b.subs, "qrx0", b.opts)
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		if err := p.attach(prog); err != nil {
			return fmt.Errorf("%s: the kernel refuses the program: %w\n%v", b.name, err, prog)
		}
		vm := newVM(t, prog)
		tg := testframes.TargetsOf(b.subs)
		frames := map[uint32][]byte{}
		for i := 0; len(frames) < b.n; i++ {
			f, _ := g.Frame(tg, uint32(bi)<<16|uint32(i), true)
			frame := f.Build()
			if len(frame) < 20 || len(frame) > 1514 {
				continue // the kernel drops tagged frames shorter than a tag, and veth has an MTU
			}
			if err := p.send(frame); err != nil {
				return err
			}
			frames[f.Marker] = frame
		}
		stop := uint32(bi)<<16 | 0xffff
		if err := p.send(testframes.Frame{EtherType: 0x0806, Marker: stop}.Build()); err != nil {
			return err
		}
		if err := p.receiveUntil(stop); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		for marker, frame := range frames {
			view := kernelView(frame)
			snap := runVM(t, vm, view)
			got, ok := p.received[marker]
			wantLen := min(int(snap), len(view))
			switch {
			case snap == 0 && ok:
				t.Errorf("%s: the kernel passes a frame the interpreter drops: %x", b.name, frame)
			case snap != 0 && !ok:
				t.Errorf("%s: the kernel drops a frame the interpreter passes: %x", b.name, frame)
			case ok && len(got) != wantLen:
				t.Errorf("%s: the kernel keeps %d bytes of a %d-byte frame, the program returns %d", b.name, len(got), len(view), snap)
			}
			if ok {
				passed++
			}
			delete(p.received, marker)
		}
		sent += len(frames)
	}
	stats, err := unix.GetsockoptTpacketStats(p.rx, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return fmt.Errorf("reading the socket's statistics: %w", err)
	}
	if stats.Drops != 0 {
		return fmt.Errorf("the receiving socket dropped %d frames for lack of room: the comparison is void", stats.Drops)
	}
	t.Logf("%d programs, %d frames sent, %d passed by the kernel's filter", len(batches), sent, passed)
	if passed == 0 || passed == sent {
		return fmt.Errorf("%d of %d frames passed: the test does not exercise both answers", passed, sent)
	}
	return nil
}
