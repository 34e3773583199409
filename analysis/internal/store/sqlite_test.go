package store_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/quanyu/quanyu/analysis/internal/store"
	"github.com/quanyu/quanyu/analysis/internal/storetest"
)

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenSQLite(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestSketchQuantiles holds the sketch to a brute-force nearest-rank percentile over skewed
// data, split across sketches that are then merged and sent through the wire form.
func TestSketchQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var all []time.Duration
	parts := make([]store.Sketch, 7)
	for i := 0; i < 20000; i++ {
		d := time.Duration(math.Exp(r.NormFloat64()*1.5+8)) * time.Microsecond // log-normal around 3 ms
		all = append(all, d)
		parts[i%len(parts)].Add(d)
	}
	var merged store.Sketch
	for i := range parts {
		b, _ := parts[i].MarshalBinary()
		var back store.Sketch
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		merged.Merge(&back)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
		rank := int(math.Ceil(q * float64(len(all))))
		want := float64(all[rank-1].Microseconds()) / 1000
		got := merged.Quantile(q)
		if math.Abs(got-want)/want > 0.035 {
			t.Errorf("p%v: %.3f ms, brute force %.3f ms", q*100, got, want)
		}
	}
	if merged.Count() != uint64(len(all)) {
		t.Errorf("count %d", merged.Count())
	}
}

func TestSketchRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{{1}, {2, 0, 5, 1}, {0xff, 0xff}} {
		var s store.Sketch
		if err := s.UnmarshalBinary(b); err == nil {
			t.Errorf("%x decoded", b)
		}
	}
}
