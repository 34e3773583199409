package store

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"slices"
	"time"
)

// Sketch is a mergeable latency histogram with log-linear buckets, in microseconds: values
// below 32 µs each have their own bucket, and every doubling above is split into 32 equal
// buckets, so a quantile read from the sketch is within about 3% of the true value whatever the
// distribution. Merging two sketches adds their buckets, which is what rollups and the
// conversation merge need: a sorted list of samples could not be combined across buckets,
// resolutions or stores.
//
// The zero Sketch is empty and ready to use. Buckets are kept sparse and sorted by index.
type Sketch struct {
	buckets []sketchBucket
	count   uint64
	sumUS   uint64
}

type sketchBucket struct {
	idx uint16
	n   uint32
}

const sketchSubBits = 5 // 32 buckets per doubling

// maxSketchUS caps recorded values (about 12 days); bucket indexes stay within uint16.
const maxSketchUS = 1 << 40

func sketchIndex(us uint64) uint16 {
	if us > maxSketchUS {
		us = maxSketchUS
	}
	if us < 1<<sketchSubBits {
		return uint16(us)
	}
	e := bits.Len64(us) - sketchSubBits - 1
	m := us >> e // in [32, 64)
	return uint16((e+1)<<sketchSubBits) + uint16(m-(1<<sketchSubBits))
}

// sketchValue is the middle of bucket idx, in microseconds.
func sketchValue(idx uint16) float64 {
	if idx < 1<<sketchSubBits {
		return float64(idx)
	}
	e := int(idx>>sketchSubBits) - 1
	m := uint64(idx&(1<<sketchSubBits-1)) + 1<<sketchSubBits
	lo := m << e
	hi := (m + 1) << e
	return (float64(lo) + float64(hi) - 1) / 2
}

// Add records one latency.
func (s *Sketch) Add(d time.Duration) { s.addN(d, 1) }

func (s *Sketch) addN(d time.Duration, n uint32) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	s.addBucket(sketchIndex(us), n)
	s.count += uint64(n)
	s.sumUS += us * uint64(n)
}

func (s *Sketch) addBucket(idx uint16, n uint32) {
	i, found := slices.BinarySearchFunc(s.buckets, idx, func(b sketchBucket, t uint16) int { return int(b.idx) - int(t) })
	if found {
		s.buckets[i].n += n
		return
	}
	s.buckets = slices.Insert(s.buckets, i, sketchBucket{idx, n})
}

// Merge adds o's samples to s.
func (s *Sketch) Merge(o *Sketch) {
	if o == nil || o.count == 0 {
		return
	}
	if len(s.buckets) == 0 {
		s.buckets = slices.Clone(o.buckets)
	} else if s.mergeInPlace(o) {
		// Sketches of one series over time mostly share their buckets: no allocation then.
	} else {
		out := make([]sketchBucket, 0, len(s.buckets)+len(o.buckets))
		i, j := 0, 0
		for i < len(s.buckets) && j < len(o.buckets) {
			switch a, b := s.buckets[i], o.buckets[j]; {
			case a.idx == b.idx:
				out = append(out, sketchBucket{a.idx, a.n + b.n})
				i++
				j++
			case a.idx < b.idx:
				out = append(out, a)
				i++
			default:
				out = append(out, b)
				j++
			}
		}
		out = append(out, s.buckets[i:]...)
		out = append(out, o.buckets[j:]...)
		s.buckets = out
	}
	s.count += o.count
	s.sumUS += o.sumUS
}

// mergeInPlace adds o's buckets when s already has every one of them, and reports whether it
// did.
func (s *Sketch) mergeInPlace(o *Sketch) bool {
	i := 0
	for _, b := range o.buckets {
		for i < len(s.buckets) && s.buckets[i].idx < b.idx {
			i++
		}
		if i == len(s.buckets) || s.buckets[i].idx != b.idx {
			return false
		}
	}
	i = 0
	for _, b := range o.buckets {
		for s.buckets[i].idx < b.idx {
			i++
		}
		s.buckets[i].n += b.n
	}
	return true
}

// Sub removes o's samples from s, where o was merged into s before.
func (s *Sketch) Sub(o *Sketch) {
	if o == nil || o.count == 0 {
		return
	}
	i := 0
	for _, b := range o.buckets {
		for i < len(s.buckets) && s.buckets[i].idx < b.idx {
			i++
		}
		if i < len(s.buckets) && s.buckets[i].idx == b.idx {
			s.buckets[i].n -= min(s.buckets[i].n, b.n)
		}
	}
	s.buckets = slices.DeleteFunc(s.buckets, func(b sketchBucket) bool { return b.n == 0 })
	s.count -= min(s.count, o.count)
	s.sumUS -= min(s.sumUS, o.sumUS)
}

// Count is the number of samples.
func (s *Sketch) Count() uint64 { return s.count }

// Quantile gives the q-quantile (0 ≤ q ≤ 1) in milliseconds: the middle of the bucket holding
// the sample of rank ⌈q·n⌉, as a nearest-rank percentile would; 0 when the sketch is empty.
func (s *Sketch) Quantile(q float64) float64 {
	if s.count == 0 {
		return 0
	}
	rank := uint64(q*float64(s.count) + 0.9999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for _, b := range s.buckets {
		seen += uint64(b.n)
		if seen >= rank {
			return sketchValue(b.idx) / 1000
		}
	}
	return sketchValue(s.buckets[len(s.buckets)-1].idx) / 1000
}

// Sum is the sum of the samples, in microseconds as recorded.
func (s *Sketch) Sum() time.Duration { return time.Duration(s.sumUS) * time.Microsecond }

// CountAtMost is the number of samples whose bucket lies wholly at or below d, for cumulative
// histograms with fixed bounds; a bucket straddling d counts as above it.
func (s *Sketch) CountAtMost(d time.Duration) uint64 {
	limit := float64(d / time.Microsecond)
	var n uint64
	for _, b := range s.buckets {
		if sketchValue(b.idx) > limit {
			break
		}
		n += uint64(b.n)
	}
	return n
}

// MarshalBinary encodes the sketch compactly: count, sum, then (index delta, count) pairs as
// uvarints.
func (s *Sketch) MarshalBinary() ([]byte, error) {
	if s.count == 0 {
		return nil, nil
	}
	out := make([]byte, 0, 16+4*len(s.buckets))
	out = binary.AppendUvarint(out, s.count)
	out = binary.AppendUvarint(out, s.sumUS)
	prev := uint16(0)
	for _, b := range s.buckets {
		out = binary.AppendUvarint(out, uint64(b.idx-prev))
		out = binary.AppendUvarint(out, uint64(b.n))
		prev = b.idx
	}
	return out, nil
}

var errBadSketch = errors.New("malformed latency sketch")

// UnmarshalBinary is the inverse of MarshalBinary; empty data is an empty sketch.
func (s *Sketch) UnmarshalBinary(data []byte) error {
	*s = Sketch{}
	if len(data) == 0 {
		return nil
	}
	next := func() (uint64, error) {
		v, n := binary.Uvarint(data)
		if n <= 0 {
			return 0, errBadSketch
		}
		data = data[n:]
		return v, nil
	}
	count, err := next()
	if err != nil {
		return err
	}
	sum, err := next()
	if err != nil {
		return err
	}
	idx := uint64(0)
	var total uint64
	for len(data) > 0 {
		d, err := next()
		if err != nil {
			return err
		}
		n, err := next()
		if err != nil {
			return err
		}
		idx += d
		if idx > 0xffff || n > 0xffffffff || (len(s.buckets) > 0 && d == 0) {
			return errBadSketch
		}
		s.buckets = append(s.buckets, sketchBucket{uint16(idx), uint32(n)})
		total += n
	}
	if total != count {
		return errBadSketch
	}
	s.count, s.sumUS = count, sum
	return nil
}
