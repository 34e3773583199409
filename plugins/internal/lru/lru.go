// Package lru is the recency list the decoder plugins keep their flows on: an intrusive doubly
// linked list, so that moving a flow to the front on each of its samples allocates nothing, and
// the least recently used flow is at the back, ready to be evicted.
package lru

// Links puts an element on a List: the element's type holds one and the List's accessor returns it.
type Links[T any] struct{ prev, next *T }

// List is a recency list of *T. The zero List is not usable: make one with New.
type List[T any] struct {
	head, tail *T
	links      func(*T) *Links[T]
}

// New makes an empty list whose elements keep their links where links says.
func New[T any](links func(*T) *Links[T]) List[T] { return List[T]{links: links} }

// Front is the most recently used element; nil when the list is empty.
func (l *List[T]) Front() *T { return l.head }

// Back is the least recently used element; nil when the list is empty.
func (l *List[T]) Back() *T { return l.tail }

// Next is the element after e, toward the back; nil at the back.
func (l *List[T]) Next(e *T) *T { return l.links(e).next }

// PushFront puts e, which must not be on the list, at the front.
func (l *List[T]) PushFront(e *T) {
	le := l.links(e)
	le.prev, le.next = nil, l.head
	if l.head != nil {
		l.links(l.head).prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
}

// Remove takes e, which must be on the list, off it.
func (l *List[T]) Remove(e *T) {
	le := l.links(e)
	if le.prev != nil {
		l.links(le.prev).next = le.next
	} else {
		l.head = le.next
	}
	if le.next != nil {
		l.links(le.next).prev = le.prev
	} else {
		l.tail = le.prev
	}
	le.prev, le.next = nil, nil
}

// MoveToFront marks e, which must be on the list, as the most recently used.
func (l *List[T]) MoveToFront(e *T) {
	if l.head != e {
		l.Remove(e)
		l.PushFront(e)
	}
}

// Clear empties the list without visiting its elements; their links are stale afterwards.
func (l *List[T]) Clear() { l.head, l.tail = nil, nil }
