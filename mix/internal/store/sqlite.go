package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/internal/sqlitedb"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// FileName is the name of the database file inside the data directory.
const FileName = "mix.db"

// busyTimeout is how long a statement waits for another connection's lock before failing. Writes
// within one process are already serialised (see SQLite.wsem), so this only matters when some
// other process, such as the sqlite3 shell, holds the file.
const busyTimeout = 5 * time.Second

// maxConns bounds the connection pool. WAL lets readers run beside the single writer; a handful of
// connections is plenty for a control plane and each one carries its own page cache.
const maxConns = 8

// SQLite is the [Store] kept in an embedded SQLite database (modernc.org/sqlite, pure Go).
type SQLite struct {
	db   *sql.DB
	path string
	now  func() time.Time

	// wsem serialises writers inside this process. SQLite allows one writer at a time anyway;
	// queueing here (respecting ctx) is fairer and cheaper than letting goroutines spin in
	// SQLite's busy handler.
	wsem chan struct{}

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*SQLite)(nil)

// Option changes how Open sets up the store.
type Option func(*SQLite)

// WithClock makes the store take revision times from now instead of time.Now, so tests can fix
// them.
func WithClock(now func() time.Time) Option {
	return func(s *SQLite) {
		if now != nil {
			s.now = now
		}
	}
}

// Open opens the store in dir (file mix.db), creating the directory (mode 0700) and the database
// (mode 0600) on first start. It sets WAL mode, a busy timeout and full synchronous commits,
// checks the file's integrity (PRAGMA quick_check) and brings the schema up to date. A file that is
// not a SQLite database, is damaged, belongs to another program or was written by a newer mix
// gives an error naming the file.
func Open(ctx context.Context, dir string, opts ...Option) (*SQLite, error) {
	abs, err := sqlitedb.CreateFile(dir, FileName)
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}

	s := &SQLite{path: abs, now: time.Now, wsem: make(chan struct{}, 1)}
	for _, o := range opts {
		o(s)
	}

	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("opening store database %s: %w", abs, err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	s.db = db
	if err := s.check(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening store database %s: %w", abs, explain(err))
	}
	if err := sqlitedb.Migrate(ctx, db, "mix", migrations); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening store database %s: %w", abs, explain(err))
	}
	return s, nil
}

// dsn builds the connection string. The path goes in a file: URI, escaped, so that a data
// directory containing '?' or '#' cannot be mistaken for URI parameters. Every connection in the
// pool runs the pragmas; _txlock=immediate makes write transactions take the write lock at BEGIN,
// which avoids the deadlock two deferred transactions can reach when both try to upgrade from
// reading to writing.
func dsn(path string) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path)}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	// FULL (not NORMAL) so that a revision number that was returned to an operator survives a
	// power cut; mix's write rate is far too low for the extra fsync to matter.
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	u.RawQuery = q.Encode()
	return u.String()
}

// check opens a first connection (which runs the pragmas, so a file that is not a database fails
// here) and verifies the file's structure. quick_check reads every page once; mix's database is
// small, and finding damage at start is far better than finding it mid-push.
func (s *SQLite) check(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, could not switch to WAL", mode)
	}
	rows, err := s.db.QueryContext(ctx, `PRAGMA quick_check`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			return err
		}
		if msg != "ok" && len(problems) < 3 {
			problems = append(problems, msg)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("integrity check failed: %s", strings.Join(problems, "; "))
	}
	return nil
}

// explain adds a hint to the two SQLite errors an operator is likely to meet at start.
func explain(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB:
			return fmt.Errorf("the file is not a SQLite database (move it aside to start an empty store): %w", err)
		case sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("the database is damaged (restore a backup or move it aside): %w", err)
		}
	}
	if strings.HasPrefix(err.Error(), "integrity check failed") {
		return fmt.Errorf("the database is damaged (restore a backup or move it aside): %w", err)
	}
	return err
}

// Path returns the database file's absolute path, for logs.
func (s *SQLite) Path() string { return s.path }

// Close closes the database. It is safe to call more than once.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("closing store database %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// write runs fn in one write transaction, committing if it returns nil and rolling back
// otherwise.
func (s *SQLite) write(ctx context.Context, fn func(tx *sql.Tx, now time.Time) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.wsem }()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := fn(tx, s.now().UTC()); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

// checkWrite validates the arguments every object write shares.
func checkWrite(kind Kind, id, author string) error {
	switch {
	case kind == "":
		return errors.New("empty kind")
	case id == "":
		return errors.New("empty id")
	case author == "":
		// The history is an audit trail; a change with no author is a caller bug worth catching.
		return errors.New("empty author")
	}
	return nil
}

// compact returns body compacted, or an error saying it is not JSON.
func compact(body json.RawMessage) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(body))
	if err := json.Compact(&buf, body); err != nil {
		return nil, fmt.Errorf("body is not valid JSON: %w", err)
	}
	return buf.Bytes(), nil
}

// Apply implements [Store].
func (s *SQLite) Apply(ctx context.Context, kind Kind, id string, body json.RawMessage, author string) (rev int64, changed bool, err error) {
	if err := checkWrite(kind, id, author); err != nil {
		return 0, false, fmt.Errorf("applying %s %q: %w", kind, id, err)
	}
	c, err := compact(body)
	if err != nil {
		return 0, false, fmt.Errorf("applying %s %q: %w", kind, id, err)
	}
	err = s.write(ctx, func(tx *sql.Tx, now time.Time) error {
		a, err := prepareApply(ctx, tx)
		if err != nil {
			return err
		}
		defer a.close()
		rev, changed, err = a.apply(ctx, now, kind, id, c, author)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("applying %s %q: %w", kind, id, err)
	}
	return rev, changed, nil
}

// ApplyAll implements [Store].
func (s *SQLite) ApplyAll(ctx context.Context, kind Kind, objs map[string]json.RawMessage, author string) (map[string]int64, error) {
	ids := make([]string, 0, len(objs))
	for id := range objs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	switch {
	case kind == "":
		return nil, fmt.Errorf("applying %d objects: empty kind", len(ids))
	case author == "":
		return nil, fmt.Errorf("applying %d %s objects: empty author", len(ids), kind)
	}
	revs := make(map[string]int64, len(ids))
	if len(ids) == 0 {
		return revs, nil
	}
	err := s.write(ctx, func(tx *sql.Tx, now time.Time) error {
		a, err := prepareApply(ctx, tx)
		if err != nil {
			return err
		}
		defer a.close()
		for i, id := range ids {
			// Each object is checked inside the transaction, just before it is written: a bad
			// one rolls back those already written, which is the all-or-none promise.
			fail := func(err error) error {
				return fmt.Errorf("%s %q (%d of %d, nothing stored): %w", kind, id, i+1, len(ids), err)
			}
			if err := checkWrite(kind, id, author); err != nil {
				return fail(err)
			}
			c, err := compact(objs[id])
			if err != nil {
				return fail(err)
			}
			rev, _, err := a.apply(ctx, now, kind, id, c, author)
			if err != nil {
				return fail(err)
			}
			revs[id] = rev
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("applying %d %s objects: %w", len(ids), kind, err)
	}
	return revs, nil
}

// applier holds the statements one apply runs, prepared once per transaction: ApplyAll runs
// them for every object, and parsing SQL is a large part of the cost of a small write.
type applier struct {
	tx            *sql.Tx
	get, rev, put *sql.Stmt
}

func prepareApply(ctx context.Context, tx *sql.Tx) (*applier, error) {
	get, err := tx.PrepareContext(ctx, `SELECT body, revision FROM objects WHERE kind = ? AND id = ?`)
	if err != nil {
		return nil, fmt.Errorf("preparing statements: %w", err)
	}
	return &applier{tx: tx, get: get}, nil
}

// prepareWrites prepares the two writing statements, which a re-apply of an unchanged object
// never needs.
func (a *applier) prepareWrites(ctx context.Context) error {
	if a.rev != nil {
		return nil
	}
	rev, err := a.tx.PrepareContext(ctx, `INSERT INTO revisions (at_ns, author, kind, object_id, op, body, prev_body)
		VALUES (?, ?, ?, ?, 'apply', ?, ?) RETURNING number`)
	if err != nil {
		return fmt.Errorf("preparing statements: %w", err)
	}
	a.rev = rev
	put, err := a.tx.PrepareContext(ctx, `INSERT INTO objects (kind, id, body, revision) VALUES (?, ?, ?, ?)
		ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, revision = excluded.revision`)
	if err != nil {
		return fmt.Errorf("preparing statements: %w", err)
	}
	a.put = put
	return nil
}

func (a *applier) close() {
	for _, st := range []*sql.Stmt{a.get, a.rev, a.put} {
		if st != nil {
			_ = st.Close()
		}
	}
}

// apply writes one compacted body, unless it equals the stored one.
func (a *applier) apply(ctx context.Context, now time.Time, kind Kind, id string, body []byte, author string) (int64, bool, error) {
	var old []byte
	var oldRev int64
	err := a.get.QueryRowContext(ctx, string(kind), id).Scan(&old, &oldRev)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		old = nil
	case err != nil:
		return 0, false, fmt.Errorf("reading current object: %w", err)
	case bytes.Equal(old, body):
		return oldRev, false, nil
	}
	if err := a.prepareWrites(ctx); err != nil {
		return 0, false, err
	}
	var rev int64
	err = a.rev.QueryRowContext(ctx, now.UnixNano(), author, string(kind), id, string(body), text(old)).Scan(&rev)
	if err != nil {
		return 0, false, fmt.Errorf("recording revision: %w", err)
	}
	if _, err := a.put.ExecContext(ctx, string(kind), id, string(body), rev); err != nil {
		return 0, false, fmt.Errorf("writing object: %w", err)
	}
	return rev, true, nil
}

// text binds b as TEXT, or NULL when b is nil. Binding []byte directly would store a BLOB, which
// the sqlite3 shell shows as unreadable.
func text(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// Delete implements [Store].
func (s *SQLite) Delete(ctx context.Context, kind Kind, id, author string) (int64, error) {
	if err := checkWrite(kind, id, author); err != nil {
		return 0, fmt.Errorf("deleting %s %q: %w", kind, id, err)
	}
	var rev int64
	err := s.write(ctx, func(tx *sql.Tx, now time.Time) error {
		var old []byte
		err := tx.QueryRowContext(ctx,
			`SELECT body FROM objects WHERE kind = ? AND id = ?`, string(kind), id).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("reading current object: %w", err)
		}
		// The revision goes in first: the object row references it until it is removed.
		if err := tx.QueryRowContext(ctx,
			`INSERT INTO revisions (at_ns, author, kind, object_id, op, body, prev_body)
			 VALUES (?, ?, ?, ?, 'delete', NULL, ?) RETURNING number`,
			now.UnixNano(), author, string(kind), id, string(old)).Scan(&rev); err != nil {
			return fmt.Errorf("recording revision: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM objects WHERE kind = ? AND id = ?`, string(kind), id); err != nil {
			return fmt.Errorf("removing object: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting %s %q: %w", kind, id, err)
	}
	return rev, nil
}

const objectColumns = `o.kind, o.id, o.body, o.revision, r.at_ns, r.author
	FROM objects o JOIN revisions r ON r.number = o.revision`

func scanObject(sc interface{ Scan(...any) error }) (Object, error) {
	var o Object
	var kind string
	var ns int64
	if err := sc.Scan(&kind, &o.ID, (*[]byte)(&o.Body), &o.Revision, &ns, &o.Author); err != nil {
		return Object{}, err
	}
	o.Kind = Kind(kind)
	o.Updated = time.Unix(0, ns).UTC()
	return o, nil
}

// Get implements [Store].
func (s *SQLite) Get(ctx context.Context, kind Kind, id string) (Object, error) {
	if s.closed.Load() {
		return Object{}, fmt.Errorf("getting %s %q: %w", kind, id, ErrClosed)
	}
	o, err := scanObject(s.db.QueryRowContext(ctx,
		`SELECT `+objectColumns+` WHERE o.kind = ? AND o.id = ?`, string(kind), id))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Object{}, fmt.Errorf("getting %s %q: %w", kind, id, err)
	}
	return o, nil
}

// List implements [Store].
func (s *SQLite) List(ctx context.Context, kind Kind) ([]Object, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("listing %s objects: %w", kind, ErrClosed)
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT `+objectColumns+` WHERE o.kind = ? ORDER BY o.id`, string(kind))
	if err != nil {
		return nil, fmt.Errorf("listing %s objects: %w", kind, err)
	}
	defer rows.Close()
	var out []Object
	for rows.Next() {
		o, err := scanObject(rows)
		if err != nil {
			return nil, fmt.Errorf("listing %s objects: %w", kind, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing %s objects: %w", kind, err)
	}
	return out, nil
}

// History implements [Store].
func (s *SQLite) History(ctx context.Context, kind Kind, id string, limit int) ([]Revision, error) {
	what := fmt.Sprintf("%s %q", kind, id)
	switch {
	case kind == "" && id == "":
		what = "all objects"
	case id == "":
		what = fmt.Sprintf("all %s objects", kind)
	}
	if kind == "" && id != "" {
		return nil, fmt.Errorf("reading history of %s: an id needs a kind", what)
	}
	if s.closed.Load() {
		return nil, fmt.Errorf("reading history of %s: %w", what, ErrClosed)
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	q := `SELECT number, at_ns, author, kind, object_id, op, body, prev_body FROM revisions`
	var args []any
	switch {
	case kind == "":
	case id == "":
		q += ` WHERE kind = ?`
		args = append(args, string(kind))
	default:
		q += ` WHERE kind = ? AND object_id = ?`
		args = append(args, string(kind), id)
	}
	q += ` ORDER BY number DESC LIMIT ?`
	args = append(args, limit)

	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading history of %s: %w", what, err)
	}
	defer rows.Close()
	var out []Revision
	for rows.Next() {
		var r Revision
		var k string
		var ns int64
		if err := rows.Scan(&r.Number, &ns, &r.Author, &k, &r.ID, &r.Action, (*[]byte)(&r.Body), (*[]byte)(&r.Before)); err != nil {
			return nil, fmt.Errorf("reading history of %s: %w", what, err)
		}
		r.Kind = Kind(k)
		r.Time = time.Unix(0, ns).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading history of %s: %w", what, err)
	}
	return out, nil
}

// LastRevision implements [Store].
func (s *SQLite) LastRevision(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, fmt.Errorf("reading last revision: %w", ErrClosed)
	}
	// sqlite_sequence holds AUTOINCREMENT's high-water mark: the last number handed out, even if
	// its row were ever gone. No row means no revision yet.
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = 'revisions'`).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading last revision: %w", err)
	}
	return n, nil
}

// optionalJSON compacts b, keeping nil as nil (NULL in the database).
func optionalJSON(b json.RawMessage) (any, error) {
	if b == nil {
		return nil, nil
	}
	c, err := compact(b)
	if err != nil {
		return nil, err
	}
	return string(c), nil
}

// minTime and maxTime bound what fits in int64 Unix nanoseconds.
var (
	minTime = time.Unix(0, -1<<63).UTC()
	maxTime = time.Unix(0, 1<<63-1).UTC()
)

// PutAgent implements [Store].
func (s *SQLite) PutAgent(ctx context.Context, a AgentRecord) error {
	fail := func(err error) error { return fmt.Errorf("saving agent %q: %w", a.ID, err) }
	if a.ID == "" {
		return fail(errors.New("empty id"))
	}
	inv, err := optionalJSON(a.Inventory)
	if err != nil {
		return fail(fmt.Errorf("inventory: %w", err))
	}
	plugins, err := optionalJSON(a.Plugins)
	if err != nil {
		return fail(fmt.Errorf("plugins: %w", err))
	}
	var labels any
	if a.Labels != nil {
		b, err := json.Marshal(a.Labels)
		if err != nil {
			return fail(fmt.Errorf("labels: %w", err))
		}
		labels = string(b)
	}
	var lastSeen any
	if !a.LastSeen.IsZero() {
		if a.LastSeen.Before(minTime) || a.LastSeen.After(maxTime) {
			return fail(fmt.Errorf("last seen time %s is out of range", a.LastSeen))
		}
		lastSeen = a.LastSeen.UnixNano()
	}
	err = s.write(ctx, func(tx *sql.Tx, _ time.Time) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO agents (id, host, labels, status, applied_version, pending_version,
			                     last_seen_ns, last_error, backend, inventory, plugins)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			 ON CONFLICT (id) DO UPDATE SET
			   host = excluded.host, labels = excluded.labels, status = excluded.status,
			   applied_version = excluded.applied_version, pending_version = excluded.pending_version,
			   last_seen_ns = excluded.last_seen_ns, last_error = excluded.last_error,
			   backend = excluded.backend, inventory = excluded.inventory, plugins = excluded.plugins`,
			a.ID, a.Host, labels, a.Status, a.AppliedVersion, a.PendingVersion,
			lastSeen, a.LastError, a.Backend, inv, plugins)
		return err
	})
	if err != nil {
		return fail(err)
	}
	return nil
}

// ListAgents implements [Store].
func (s *SQLite) ListAgents(ctx context.Context) ([]AgentRecord, error) {
	fail := func(err error) error { return fmt.Errorf("listing agents: %w", err) }
	if s.closed.Load() {
		return nil, fail(ErrClosed)
	}
	rows, err := s.db.QueryContext(ctx,
		`SELECT id, host, labels, status, applied_version, pending_version,
		        last_seen_ns, last_error, backend, inventory, plugins
		 FROM agents ORDER BY id`)
	if err != nil {
		return nil, fail(err)
	}
	defer rows.Close()
	var out []AgentRecord
	for rows.Next() {
		var a AgentRecord
		var labels []byte
		var lastSeen sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Host, &labels, &a.Status, &a.AppliedVersion, &a.PendingVersion,
			&lastSeen, &a.LastError, &a.Backend, (*[]byte)(&a.Inventory), (*[]byte)(&a.Plugins)); err != nil {
			return nil, fail(err)
		}
		if labels != nil {
			if err := json.Unmarshal(labels, &a.Labels); err != nil {
				return nil, fail(fmt.Errorf("labels of agent %q: %w", a.ID, err))
			}
		}
		if lastSeen.Valid {
			a.LastSeen = time.Unix(0, lastSeen.Int64).UTC()
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(err)
	}
	return out, nil
}
