package filter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/quanyu/quanyu/plugins/capture-ebpf/internal/kern"
)

// Maps are the filter maps of a loaded program.
type Maps struct {
	Config   *ebpf.Map
	Sets     *ebpf.Map
	InclV4   *ebpf.Map
	ExclV4   *ebpf.Map
	InclV6   *ebpf.Map
	ExclV6   *ebpf.Map
	PortIncl *ebpf.Map
	PortExcl *ebpf.Map
	Protos   *ebpf.Map
	NICs     *ebpf.Map
}

// MapsOf picks the filter maps out of the loaded objects.
func MapsOf(o *kern.CaptureObjects) Maps {
	return Maps{Config: o.Config, Sets: o.Sets, InclV4: o.InclV4, ExclV4: o.ExclV4, InclV6: o.InclV6,
		ExclV6: o.ExclV6, PortIncl: o.PortIncl, PortExcl: o.PortExcl, Protos: o.Protos, NICs: o.Nics}
}

// Writer keeps the kernel's filter in step with the subscriptions. It remembers what each version
// holds in the hash and trie maps, so the version left behind by a swap can be emptied.
type Writer struct {
	m       Maps
	active  uint32
	written [2]written
	// Grace is how long a swap waits before it empties the old version: long enough for every
	// program run that read the old version number to finish (they take microseconds).
	Grace time.Duration
}

type written struct {
	v4incl, v4excl []kern.CaptureLpmV4Key
	v6incl, v6excl []kern.CaptureLpmV6Key
	nics           []kern.CaptureNicKey
}

// NewWriter starts from empty maps with version 0 active (what loading gives).
func NewWriter(m Maps) *Writer { return &Writer{m: m, Grace: 50 * time.Millisecond} }

// Active is the version in force.
func (w *Writer) Active() uint32 { return w.active }

// Swap writes s as the inactive version, makes it the active one, and empties the old one.
func (w *Writer) Swap(s *Set) error {
	next := 1 - w.active
	if err := w.clear(next); err != nil {
		return fmt.Errorf("emptying filter version %d: %w", next, err)
	}
	if err := w.write(next, s); err != nil {
		return fmt.Errorf("writing filter version %d: %w", next, err)
	}
	zero := uint32(0)
	sampling := uint32(0)
	if s.L7 != 0 {
		sampling = 1
	}
	if err := w.m.Config.Put(zero, kern.CaptureCaptureConfig{Active: next, Sampling: sampling}); err != nil {
		return fmt.Errorf("switching to filter version %d: %w", next, err)
	}
	old := w.active
	w.active = next
	time.Sleep(w.Grace)
	if err := w.clear(old); err != nil {
		return fmt.Errorf("emptying filter version %d: %w", old, err)
	}
	return nil
}

// UpdateNICs rewrites the interface masks of the active version in place: interfaces come and go
// without the subscriptions changing, and a new or removed key is an atomic change on its own.
func (w *Writer) UpdateNICs(nics map[uint32]uint64) error {
	v := w.active
	keep := map[kern.CaptureNicKey]bool{}
	for idx, mask := range nics {
		k := kern.CaptureNicKey{Version: v, Ifindex: idx}
		keep[k] = true
		if err := w.m.NICs.Put(k, mask); err != nil {
			return fmt.Errorf("writing the mask of interface %d: %w", idx, err)
		}
	}
	var kept []kern.CaptureNicKey
	for _, k := range w.written[v].nics {
		if keep[k] {
			kept = append(kept, k)
			delete(keep, k)
			continue
		}
		if err := w.m.NICs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("removing interface %d: %w", k.Ifindex, err)
		}
	}
	for k := range keep {
		kept = append(kept, k)
	}
	w.written[v].nics = kept
	return nil
}

func v4Key(v uint32, p netip.Prefix) kern.CaptureLpmV4Key {
	a := p.Addr().As4()
	return kern.CaptureLpmV4Key{Prefixlen: 32 + uint32(p.Bits()), Version: v, Addr: binary.LittleEndian.Uint32(a[:])}
}

func v6Key(v uint32, p netip.Prefix) kern.CaptureLpmV6Key {
	a := p.Addr().As16()
	k := kern.CaptureLpmV6Key{Prefixlen: 32 + uint32(p.Bits()), Version: v}
	for i := range k.Addr {
		// The kernel stores the packet's bytes; on a little-endian host a word read from memory
		// in the host's order gives back the same bytes.
		k.Addr[i] = binary.LittleEndian.Uint32(a[4*i:])
	}
	return k
}

func (w *Writer) write(v uint32, s *Set) error {
	set := kern.CaptureFilterSet{AddrAny: s.AddrAny, PortAny: s.PortAny, L7: s.L7, Frames: s.Frames,
		PayloadBytes: s.PayloadBytes}
	if err := w.m.Sets.Put(v, set); err != nil {
		return fmt.Errorf("set: %w", err)
	}
	if err := putArray(w.m.Protos, v<<8, s.Protos[:]); err != nil {
		return fmt.Errorf("transports: %w", err)
	}
	if err := putArray(w.m.PortIncl, v<<16, s.PortIncl[:]); err != nil {
		return fmt.Errorf("port includes: %w", err)
	}
	if err := putArray(w.m.PortExcl, v<<16, s.PortExcl[:]); err != nil {
		return fmt.Errorf("port excludes: %w", err)
	}
	var wr written
	for p, mask := range s.InclV4 {
		k := v4Key(v, p)
		if err := w.m.InclV4.Put(k, mask); err != nil {
			return fmt.Errorf("address include %s: %w", p, err)
		}
		wr.v4incl = append(wr.v4incl, k)
	}
	for p, mask := range s.ExclV4 {
		k := v4Key(v, p)
		if err := w.m.ExclV4.Put(k, mask); err != nil {
			return fmt.Errorf("address exclude %s: %w", p, err)
		}
		wr.v4excl = append(wr.v4excl, k)
	}
	for p, mask := range s.InclV6 {
		k := v6Key(v, p)
		if err := w.m.InclV6.Put(k, mask); err != nil {
			return fmt.Errorf("address include %s: %w", p, err)
		}
		wr.v6incl = append(wr.v6incl, k)
	}
	for p, mask := range s.ExclV6 {
		k := v6Key(v, p)
		if err := w.m.ExclV6.Put(k, mask); err != nil {
			return fmt.Errorf("address exclude %s: %w", p, err)
		}
		wr.v6excl = append(wr.v6excl, k)
	}
	for idx, mask := range s.NICs {
		k := kern.CaptureNicKey{Version: v, Ifindex: idx}
		if err := w.m.NICs.Put(k, mask); err != nil {
			return fmt.Errorf("interface %d: %w", idx, err)
		}
		wr.nics = append(wr.nics, k)
	}
	w.written[v] = wr
	return nil
}

// putArray writes values at base, base+1, … in one batch.
func putArray(m *ebpf.Map, base uint32, values []uint64) error {
	keys := make([]uint32, len(values))
	for i := range keys {
		keys[i] = base + uint32(i)
	}
	_, err := m.BatchUpdate(keys, values, nil)
	return err
}

func (w *Writer) clear(v uint32) error {
	wr := w.written[v]
	var errs []error
	del := func(m *ebpf.Map, key any) {
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	for _, k := range wr.v4incl {
		del(w.m.InclV4, k)
	}
	for _, k := range wr.v4excl {
		del(w.m.ExclV4, k)
	}
	for _, k := range wr.v6incl {
		del(w.m.InclV6, k)
	}
	for _, k := range wr.v6excl {
		del(w.m.ExclV6, k)
	}
	for _, k := range wr.nics {
		del(w.m.NICs, k)
	}
	// Arrays and the set cannot be deleted; zero masks match nothing.
	if err := w.m.Sets.Put(v, kern.CaptureFilterSet{}); err != nil {
		errs = append(errs, err)
	}
	var zeros [65536]uint64
	for _, a := range []struct {
		m    *ebpf.Map
		base uint32
		n    int
	}{{w.m.Protos, v << 8, 256}, {w.m.PortIncl, v << 16, 65536}, {w.m.PortExcl, v << 16, 65536}} {
		if err := putArray(a.m, a.base, zeros[:a.n]); err != nil {
			errs = append(errs, err)
		}
	}
	w.written[v] = written{}
	return errors.Join(errs...)
}
