package lru

import (
	"slices"
	"testing"
)

type item struct {
	id    int
	links Links[item]
}

func order(l *List[item]) []int {
	var out []int
	for e := l.Front(); e != nil; e = l.Next(e) {
		out = append(out, e.id)
	}
	// The back-to-front walk must agree.
	var back []int
	for e := l.Back(); e != nil; e = e.links.prev {
		back = append(back, e.id)
	}
	slices.Reverse(back)
	if !slices.Equal(out, back) {
		panic("front and back walks differ")
	}
	return out
}

func TestList(t *testing.T) {
	l := New(func(i *item) *Links[item] { return &i.links })
	if l.Front() != nil || l.Back() != nil {
		t.Fatal("new list not empty")
	}
	items := make([]*item, 4)
	for i := range items {
		items[i] = &item{id: i}
		l.PushFront(items[i])
	}
	steps := []struct {
		do   func()
		want []int
	}{
		{func() {}, []int{3, 2, 1, 0}},
		{func() { l.MoveToFront(items[0]) }, []int{0, 3, 2, 1}},
		{func() { l.MoveToFront(items[0]) }, []int{0, 3, 2, 1}},
		{func() { l.Remove(items[2]) }, []int{0, 3, 1}},
		{func() { l.Remove(l.Back()) }, []int{0, 3}},
		{func() { l.Remove(l.Front()) }, []int{3}},
		{func() { l.Remove(items[3]) }, nil},
		{func() { l.PushFront(items[2]) }, []int{2}},
		{func() { l.Clear() }, nil},
	}
	for i, s := range steps {
		s.do()
		if got := order(&l); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: %v, want %v", i, got, s.want)
		}
	}
}
