// Package store keeps mix's state: the objects operators manage (subscriptions, the application
// catalog, alert rules, prediction settings) with a full revision history, and what mix last knew
// of each agent.
//
// Objects are opaque JSON to the store. Callers validate and normalise them before they arrive;
// the store only checks that a body is well-formed JSON and compacts it, so that re-applying the
// same object is recognised as "no change" and does not create a revision.
//
// Every change to an object is one revision: a number that the database hands out (global,
// strictly increasing, never reused, even after deletes), the time, the author (the name of the
// token that made the change), the action, and the object before and after. Revisions are never
// deleted, so the history of an object outlives the object.
//
// Agent records are not versioned: they are a cache of the last state mix saw, kept so that a
// restarted mix can show agents that have not reconnected yet.
//
// The only implementation is [SQLite], an embedded database in a data directory. Callers should
// depend on the [Store] interface so that tests can substitute it and the SQL stays here.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Kind names a class of object. The store does not restrict kinds, so that new classes of
// configuration need no schema change; the constants below are the ones mix uses today.
type Kind string

// The kinds mix stores.
const (
	KindSubscription Kind = "subscription"
	KindCatalog      Kind = "catalog"
	KindRule         Kind = "rule"
	KindSettings     Kind = "settings"
)

// Actions recorded in a [Revision].
const (
	ActionApply  = "apply"
	ActionDelete = "delete"
)

// Object is the current state of one stored object.
type Object struct {
	Kind     Kind
	ID       string
	Body     json.RawMessage // compacted JSON, as stored
	Revision int64           // the revision that last changed it
	Updated  time.Time       // the time of that revision, in UTC
	Author   string          // the author of that revision
}

// Revision is one change to one object.
type Revision struct {
	Number int64 // global, strictly increasing, never reused
	Time   time.Time
	Author string
	Kind   Kind
	ID     string
	Action string          // ActionApply or ActionDelete
	Body   json.RawMessage // the object after the change; nil for a delete
	Before json.RawMessage // the object before the change; nil when it did not exist
}

// AgentRecord is what mix last knew of an agent, kept across restarts.
type AgentRecord struct {
	ID             string
	Host           string
	Labels         map[string]string
	Status         string // SYNCED, PENDING, NACKED, DISCONNECTED (the caller's vocabulary)
	AppliedVersion string
	PendingVersion string
	LastSeen       time.Time // the zero time means never
	LastError      string
	Backend        string
	Inventory      json.RawMessage // nil, or JSON (stored compacted)
	Plugins        json.RawMessage // nil, or JSON (stored compacted)
}

// ErrNotFound is returned (wrapped) by Get and Delete when the object does not exist.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned (wrapped) by every method called after Close.
var ErrClosed = errors.New("store is closed")

// Store is mix's persistent state. Implementations are safe for concurrent use.
//
// Lifecycle:
//  1. Open (for SQLite) creates or opens the store and brings its schema up to date.
//  2. Any methods, from any number of goroutines. Each write is one transaction: it happens
//     completely or not at all.
//  3. Close releases the store. It is safe to call twice; every other method then returns
//     ErrClosed.
//
// Errors name the operation and the object ("applying subscription \"web\": …"). Kind, id and
// author must be non-empty in every write.
type Store interface {
	// Apply stores body as the object kind/id. body must be well-formed JSON; it is stored
	// compacted. An identical body (byte for byte after JSON compaction) is not a change: no new
	// revision, changed=false, rev = the object's current revision.
	Apply(ctx context.Context, kind Kind, id string, body json.RawMessage, author string) (rev int64, changed bool, err error)

	// ApplyAll applies several objects of one kind in one transaction: all or none. Objects are
	// applied in ID order, so their revision numbers follow their IDs. revs holds, for every ID,
	// the object's revision afterwards (its old one when its body did not change). An empty map
	// is not an error and changes nothing.
	ApplyAll(ctx context.Context, kind Kind, objs map[string]json.RawMessage, author string) (revs map[string]int64, err error)

	// Delete removes the object and records a delete revision. It returns an error wrapping
	// ErrNotFound when the object does not exist.
	Delete(ctx context.Context, kind Kind, id, author string) (rev int64, err error)

	// Get returns the object, or an error wrapping ErrNotFound.
	Get(ctx context.Context, kind Kind, id string) (Object, error)

	// List returns every object of the kind, ordered by ID (bytewise).
	List(ctx context.Context, kind Kind) ([]Object, error)

	// History lists revisions, newest first. id "" means every object of the kind; kind "" (with
	// id "") means every revision. limit <= 0 means all. An object that never existed has an
	// empty history, not an error.
	History(ctx context.Context, kind Kind, id string, limit int) ([]Revision, error)

	// LastRevision returns the newest revision number, or 0 when nothing was ever written.
	LastRevision(ctx context.Context) (int64, error)

	// PutAgent creates or replaces the record with a.ID.
	PutAgent(ctx context.Context, a AgentRecord) error

	// ListAgents returns every agent record, ordered by ID.
	ListAgents(ctx context.Context) ([]AgentRecord, error)

	// Close releases the store; see the lifecycle above.
	Close() error
}
