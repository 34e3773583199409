package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is an injected clock that moves one second forward on every reading, so each write gets
// a distinct, predictable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openTest opens a store in a fresh directory and closes it when the test ends.
func openTest(t testing.TB, opts ...Option) (*SQLite, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(context.Background(), dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, dir
}

func mustApply(t testing.TB, s Store, kind Kind, id, body, author string) int64 {
	t.Helper()
	rev, changed, err := s.Apply(context.Background(), kind, id, json.RawMessage(body), author)
	if err != nil {
		t.Fatalf("Apply(%s, %q): %v", kind, id, err)
	}
	if !changed {
		t.Fatalf("Apply(%s, %q) reported no change for a new body", kind, id)
	}
	return rev
}

func TestMigrationsAreSequential(t *testing.T) {
	for i, m := range migrations {
		if m.Version != i+1 {
			t.Errorf("migrations[%d] has version %d, want %d", i, m.Version, i+1)
		}
		if m.Name == "" || len(m.Stmts) == 0 {
			t.Errorf("migration %d has no name or no statements", m.Version)
		}
	}
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	s, dir := openTest(t)
	mustApply(t, s, KindSubscription, "web", `{"a":1}`, "admin")
	for _, c := range []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700 | os.ModeDir},
		{filepath.Join(dir, FileName), 0o600},
		{filepath.Join(dir, FileName+"-wal"), 0o600},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatalf("stat %s: %v", c.path, err)
		}
		if fi.Mode() != c.want {
			t.Errorf("%s has mode %v, want %v", filepath.Base(c.path), fi.Mode(), c.want)
		}
	}
	if got := s.Path(); got != filepath.Join(dir, FileName) {
		t.Errorf("Path() = %q, want %q", got, filepath.Join(dir, FileName))
	}
	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q (%v), want wal", mode, err)
	}
}

func TestApplyGetListDelete(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, _ := openTest(t, WithClock(clk.Now))

	// GIVEN three subscriptions and one rule whose id collides with a subscription's.
	r1 := mustApply(t, s, KindSubscription, "web", `{ "L4": [80, 443] }`, "admin")
	r2 := mustApply(t, s, KindSubscription, "db", `{"L4":[5432]}`, "ops")
	r3 := mustApply(t, s, KindSubscription, "api", `{"L4":[8080]}`, "admin")
	r4 := mustApply(t, s, KindRule, "web", `{"threshold":5}`, "ops")
	if !(r1 < r2 && r2 < r3 && r3 < r4) {
		t.Fatalf("revisions %d %d %d %d are not increasing", r1, r2, r3, r4)
	}

	t.Run("get returns the compacted body with its revision, time and author", func(t *testing.T) {
		o, err := s.Get(ctx, KindSubscription, "web")
		if err != nil {
			t.Fatal(err)
		}
		want := Object{Kind: KindSubscription, ID: "web", Body: json.RawMessage(`{"L4":[80,443]}`),
			Revision: r1, Updated: time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC), Author: "admin"}
		if !reflect.DeepEqual(o, want) {
			t.Errorf("Get = %+v\nwant %+v", o, want)
		}
	})
	t.Run("list is ordered by id and holds only its kind", func(t *testing.T) {
		objs, err := s.List(ctx, KindSubscription)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, o := range objs {
			ids = append(ids, o.ID)
			if o.Kind != KindSubscription {
				t.Errorf("List(subscription) returned a %s", o.Kind)
			}
		}
		if want := []string{"api", "db", "web"}; !reflect.DeepEqual(ids, want) {
			t.Errorf("List ids = %v, want %v", ids, want)
		}
		rules, err := s.List(ctx, KindRule)
		if err != nil || len(rules) != 1 || string(rules[0].Body) != `{"threshold":5}` {
			t.Errorf("List(rule) = %+v, %v", rules, err)
		}
		empty, err := s.List(ctx, KindCatalog)
		if err != nil || len(empty) != 0 {
			t.Errorf("List(catalog) = %+v, %v; want nothing", empty, err)
		}
	})
	t.Run("delete removes the object and records a revision", func(t *testing.T) {
		rev, err := s.Delete(ctx, KindSubscription, "db", "ops")
		if err != nil {
			t.Fatal(err)
		}
		if rev <= r4 {
			t.Errorf("delete revision %d not after %d", rev, r4)
		}
		if _, err := s.Get(ctx, KindSubscription, "db"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after delete: %v, want ErrNotFound", err)
		}
		objs, _ := s.List(ctx, KindSubscription)
		if len(objs) != 2 {
			t.Errorf("List after delete has %d objects, want 2", len(objs))
		}
		// The rule with the same id is another object and must survive.
		if _, err := s.Get(ctx, KindRule, "web"); err != nil {
			t.Errorf("rule web after deleting subscription db: %v", err)
		}
	})
	t.Run("missing objects give ErrNotFound with what was being done", func(t *testing.T) {
		_, err := s.Delete(ctx, KindSubscription, "nope", "ops")
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `deleting subscription "nope"`) {
			t.Errorf("Delete missing: %v", err)
		}
		_, err = s.Get(ctx, KindCatalog, "nope")
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `getting catalog "nope"`) {
			t.Errorf("Get missing: %v", err)
		}
	})
}

func TestApplyUnchangedIsNoRevision(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	rev := mustApply(t, s, KindSubscription, "web", `{"L4":[80],"name":"web"}`, "admin")

	for _, c := range []struct {
		name, body  string
		wantChanged bool
	}{
		{"same bytes", `{"L4":[80],"name":"web"}`, false},
		{"same after compaction", "{\n  \"L4\": [ 80 ],\n  \"name\": \"web\"\n}\n", false},
		{"different value", `{"L4":[81],"name":"web"}`, true},
		// The store compares bytes, not meaning: callers normalise, so a reordering is a change.
		{"reordered keys", `{"name":"web","L4":[81]}`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, _ := s.LastRevision(ctx)
			cur, _ := s.Get(ctx, KindSubscription, "web")
			got, changed, err := s.Apply(ctx, KindSubscription, "web", json.RawMessage(c.body), "ci")
			if err != nil {
				t.Fatal(err)
			}
			after, _ := s.LastRevision(ctx)
			if changed != c.wantChanged {
				t.Errorf("changed = %v, want %v", changed, c.wantChanged)
			}
			if !c.wantChanged {
				if got != cur.Revision || after != before {
					t.Errorf("no-op apply returned rev %d (object at %d), last revision %d -> %d", got, cur.Revision, before, after)
				}
				o, _ := s.Get(ctx, KindSubscription, "web")
				if o.Author != cur.Author {
					t.Errorf("no-op apply changed the author to %q", o.Author)
				}
			} else if got != before+1 || after != got {
				t.Errorf("change returned rev %d, last revision %d -> %d", got, before, after)
			}
		})
	}
	h, err := s.History(ctx, KindSubscription, "web", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[len(h)-1].Number != rev {
		t.Errorf("history has %d revisions (want 3, the first %d): %+v", len(h), rev, h)
	}
}

func TestHistory(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, _ := openTest(t, WithClock(clk.Now))

	// GIVEN three edits of one subscription by three authors, a delete, an unrelated object
	// and a rule with the same id.
	r1 := mustApply(t, s, KindSubscription, "web", `{"v":1}`, "admin")
	rOther := mustApply(t, s, KindSubscription, "db", `{"v":1}`, "admin")
	r2 := mustApply(t, s, KindSubscription, "web", `{"v":2}`, "ci")
	rRule := mustApply(t, s, KindRule, "web", `{"v":1}`, "ops")
	r3 := mustApply(t, s, KindSubscription, "web", `{"v":3}`, "ops")
	r4, err := s.Delete(ctx, KindSubscription, "web", "admin")
	if err != nil {
		t.Fatal(err)
	}
	r5 := mustApply(t, s, KindSubscription, "web", `{"v":5}`, "ci")
	at := func(sec int) time.Time { return time.Date(2026, 3, 1, 12, 0, sec, 0, time.UTC) }

	web := []Revision{
		{Number: r5, Time: at(7), Author: "ci", Kind: KindSubscription, ID: "web", Action: ActionApply, Body: json.RawMessage(`{"v":5}`)},
		{Number: r4, Time: at(6), Author: "admin", Kind: KindSubscription, ID: "web", Action: ActionDelete, Before: json.RawMessage(`{"v":3}`)},
		{Number: r3, Time: at(5), Author: "ops", Kind: KindSubscription, ID: "web", Action: ActionApply, Body: json.RawMessage(`{"v":3}`), Before: json.RawMessage(`{"v":2}`)},
		{Number: r2, Time: at(3), Author: "ci", Kind: KindSubscription, ID: "web", Action: ActionApply, Body: json.RawMessage(`{"v":2}`), Before: json.RawMessage(`{"v":1}`)},
		{Number: r1, Time: at(1), Author: "admin", Kind: KindSubscription, ID: "web", Action: ActionApply, Body: json.RawMessage(`{"v":1}`)},
	}
	numbers := func(rs []Revision) []int64 {
		var n []int64
		for _, r := range rs {
			n = append(n, r.Number)
		}
		return n
	}
	for _, c := range []struct {
		name  string
		kind  Kind
		id    string
		limit int
		want  []int64
	}{
		{"one object", KindSubscription, "web", 0, numbers(web)},
		{"one object, limited", KindSubscription, "web", 2, []int64{r5, r4}},
		{"one object, negative limit means all", KindSubscription, "web", -1, numbers(web)},
		{"whole kind", KindSubscription, "", 0, []int64{r5, r4, r3, r2, rOther, r1}},
		{"whole kind, limited", KindSubscription, "", 3, []int64{r5, r4, r3}},
		{"other kind", KindRule, "web", 0, []int64{rRule}},
		{"everything", "", "", 0, []int64{r5, r4, r3, rRule, r2, rOther, r1}},
		{"never existed", KindSubscription, "nope", 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := s.History(ctx, c.kind, c.id, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := numbers(h); !reflect.DeepEqual(got, c.want) {
				t.Errorf("revisions %v, want %v", got, c.want)
			}
		})
	}
	t.Run("revisions carry time, author, action and both bodies", func(t *testing.T) {
		h, err := s.History(ctx, KindSubscription, "web", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(h, web) {
			t.Errorf("history\n got %+v\nwant %+v", h, web)
		}
	})
	t.Run("an id without a kind is refused", func(t *testing.T) {
		if _, err := s.History(ctx, "", "web", 0); err == nil {
			t.Error("History(\"\", \"web\") succeeded")
		}
	})
}

func TestInvalidWritesChangeNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	mustApply(t, s, KindSubscription, "web", `{"v":1}`, "admin")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	for _, c := range []struct {
		name    string
		do      func() error
		wantErr string
	}{
		{"empty kind", func() error { _, _, err := s.Apply(ctx, "", "x", json.RawMessage(`{}`), "admin"); return err }, "empty kind"},
		{"empty id", func() error { _, _, err := s.Apply(ctx, KindRule, "", json.RawMessage(`{}`), "admin"); return err }, "empty id"},
		{"empty author", func() error { _, _, err := s.Apply(ctx, KindRule, "r", json.RawMessage(`{}`), ""); return err }, `applying rule "r": empty author`},
		{"empty body", func() error { _, _, err := s.Apply(ctx, KindRule, "r", nil, "admin"); return err }, "not valid JSON"},
		{"truncated JSON", func() error {
			_, _, err := s.Apply(ctx, KindSubscription, "web", json.RawMessage(`{"v":`), "admin")
			return err
		}, `applying subscription "web": body is not valid JSON`},
		{"trailing garbage", func() error { _, _, err := s.Apply(ctx, KindRule, "r", json.RawMessage(`{} x`), "admin"); return err }, "not valid JSON"},
		{"delete without author", func() error { _, err := s.Delete(ctx, KindSubscription, "web", ""); return err }, "empty author"},
		{"cancelled context", func() error {
			_, _, err := s.Apply(cancelled, KindRule, "r", json.RawMessage(`{}`), "admin")
			return err
		}, "context canceled"},
		{"ApplyAll without author", func() error {
			_, err := s.ApplyAll(ctx, KindRule, map[string]json.RawMessage{"r": json.RawMessage(`{}`)}, "")
			return err
		}, "empty author"},
		{"ApplyAll with an empty id", func() error {
			_, err := s.ApplyAll(ctx, KindRule, map[string]json.RawMessage{"": json.RawMessage(`{}`), "r": json.RawMessage(`{}`)}, "admin")
			return err
		}, "empty id"},
		{"agent without id", func() error { return s.PutAgent(ctx, AgentRecord{Host: "h"}) }, "empty id"},
		{"agent with bad inventory", func() error {
			return s.PutAgent(ctx, AgentRecord{ID: "a", Inventory: json.RawMessage(`{`)})
		}, `saving agent "a": inventory: body is not valid JSON`},
		{"agent with bad plugins", func() error {
			return s.PutAgent(ctx, AgentRecord{ID: "a", Plugins: json.RawMessage(`[}`)})
		}, "plugins"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.do()
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, c.wantErr)
			}
		})
	}
	last, _ := s.LastRevision(ctx)
	rules, _ := s.List(ctx, KindRule)
	agents, _ := s.ListAgents(ctx)
	o, _ := s.Get(ctx, KindSubscription, "web")
	if last != 1 || len(rules) != 0 || len(agents) != 0 || string(o.Body) != `{"v":1}` {
		t.Errorf("state changed: last revision %d, %d rules, %d agents, web = %s", last, len(rules), len(agents), o.Body)
	}
}

func TestApplyAll(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, _ := openTest(t, WithClock(clk.Now))
	old := mustApply(t, s, KindCatalog, "a", `{"app":"a","v":1}`, "admin")
	keep := mustApply(t, s, KindCatalog, "d", `{"app":"d"}`, "admin")

	t.Run("a bad object mid-way leaves nothing", func(t *testing.T) {
		// Objects go in ID order: "a" (a real change) is written inside the transaction before
		// "b" fails, so this exercises the rollback, not just a check made up front.
		_, err := s.ApplyAll(ctx, KindCatalog, map[string]json.RawMessage{
			"a": json.RawMessage(`{"app":"a","v":2}`),
			"b": json.RawMessage(`{"app":`),
			"c": json.RawMessage(`{"app":"c"}`),
		}, "ci")
		if err == nil {
			t.Fatal("ApplyAll with an invalid body succeeded")
		}
		for _, want := range []string{"applying 3 catalog objects", `catalog "b" (2 of 3, nothing stored)`, "not valid JSON"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if last, _ := s.LastRevision(ctx); last != keep {
			t.Errorf("last revision %d, want %d (nothing written)", last, keep)
		}
		if o, _ := s.Get(ctx, KindCatalog, "a"); o.Revision != old || string(o.Body) != `{"app":"a","v":1}` {
			t.Errorf("object a changed: %+v", o)
		}
		for _, id := range []string{"b", "c"} {
			if _, err := s.Get(ctx, KindCatalog, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("object %s exists after a failed ApplyAll: %v", id, err)
			}
		}
		if h, _ := s.History(ctx, KindCatalog, "", 0); len(h) != 2 {
			t.Errorf("history has %d revisions, want 2", len(h))
		}
	})
	t.Run("all applied in one transaction, unchanged ones keep their revision", func(t *testing.T) {
		revs, err := s.ApplyAll(ctx, KindCatalog, map[string]json.RawMessage{
			"c": json.RawMessage(`{"app":"c"}`),
			"a": json.RawMessage(`{"app":"a","v":2}`),
			"b": json.RawMessage(`{"app":"b"}`),
			"d": json.RawMessage(` { "app" : "d" } `),
		}, "ci")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{"a": keep + 1, "b": keep + 2, "c": keep + 3, "d": keep}
		if !reflect.DeepEqual(revs, want) {
			t.Errorf("revs = %v, want %v", revs, want)
		}
		h, _ := s.History(ctx, KindCatalog, "", 3)
		for _, r := range h {
			if r.Author != "ci" || !r.Time.Equal(h[0].Time) {
				t.Errorf("revision %d by %q at %v; want all by ci at one time %v", r.Number, r.Author, r.Time, h[0].Time)
			}
		}
		if len(h) == 3 && string(h[2].Before) != `{"app":"a","v":1}` {
			t.Errorf("revision of a has before %s", h[2].Before)
		}
	})
	t.Run("an empty set changes nothing", func(t *testing.T) {
		revs, err := s.ApplyAll(ctx, KindCatalog, nil, "ci")
		if err != nil || len(revs) != 0 {
			t.Errorf("ApplyAll(nil) = %v, %v", revs, err)
		}
	})
}

func TestRevisionsNeverReused(t *testing.T) {
	ctx := context.Background()
	s, dir := openTest(t)
	seen := map[int64]bool{}
	var last int64
	note := func(rev int64) {
		t.Helper()
		if seen[rev] || rev <= last {
			t.Fatalf("revision %d reused or not increasing (last %d)", rev, last)
		}
		seen[rev], last = true, rev
	}
	note(mustApply(t, s, KindRule, "r", `1`, "admin"))
	del, err := s.Delete(ctx, KindRule, "r", "admin")
	if err != nil {
		t.Fatal(err)
	}
	note(del)
	note(mustApply(t, s, KindRule, "r", `1`, "admin")) // same body as before the delete: a change
	if _, err := s.Delete(ctx, KindRule, "r", "admin"); err != nil {
		t.Fatal(err)
	}
	last++
	// Even with the highest revision's row gone (which the store itself never does), the
	// database must not hand its number out again.
	if _, err := s.db.Exec(`DELETE FROM revisions WHERE number = ?`, last); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if lr, _ := s2.LastRevision(ctx); lr != last {
		t.Errorf("LastRevision after reopen = %d, want %d", lr, last)
	}
	note(mustApply(t, s2, KindRule, "r", `2`, "admin"))
}

func TestConcurrentApply(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t)
	const workers, each = 50, 4
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		revs = map[int64]string{}
		errs []error
	)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	// Readers run beside the writers: WAL must let them through, and -race checks the store.
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.List(ctx, KindSubscription); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				// Half the writes go to one shared object, half to the worker's own.
				id := fmt.Sprintf("w%02d", w)
				if i%2 == 1 {
					id = "shared"
				}
				body := json.RawMessage(fmt.Sprintf(`{"worker":%d,"i":%d}`, w, i))
				rev, changed, err := s.Apply(ctx, KindSubscription, id, body, fmt.Sprintf("token-%d", w))
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if !changed {
					errs = append(errs, fmt.Errorf("worker %d write %d reported no change", w, i))
				} else if prev, dup := revs[rev]; dup {
					errs = append(errs, fmt.Errorf("revision %d given to %s and %s", rev, prev, id))
				} else {
					revs[rev] = id
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(revs) != workers*each {
		t.Fatalf("%d distinct revisions, want %d", len(revs), workers*each)
	}
	h, err := s.History(ctx, KindSubscription, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != len(revs) {
		t.Errorf("history has %d revisions, want %d", len(h), len(revs))
	}
	for i, r := range h {
		if id, ok := revs[r.Number]; !ok || id != r.ID {
			t.Errorf("history revision %d for %q was not returned by Apply (Apply gave it to %q)", r.Number, r.ID, id)
		}
		if i > 0 && r.Number >= h[i-1].Number {
			t.Errorf("history not newest first at %d: %d after %d", i, r.Number, h[i-1].Number)
		}
	}
	// The shared object's revisions must chain: each one's before is the previous one's body.
	sh, _ := s.History(ctx, KindSubscription, "shared", 0)
	for i := 0; i+1 < len(sh); i++ {
		if !bytes.Equal(sh[i].Before, sh[i+1].Body) {
			t.Errorf("shared revision %d has before %s, previous body %s", sh[i].Number, sh[i].Before, sh[i+1].Body)
		}
	}
	if last, _ := s.LastRevision(ctx); last != workers*each {
		t.Errorf("LastRevision = %d, want %d", last, workers*each)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, dir := openTest(t, WithClock(clk.Now))
	mustApply(t, s, KindSubscription, "web", `{"v":1}`, "admin")
	mustApply(t, s, KindSubscription, "web", `{"v":2}`, "ci")
	mustApply(t, s, KindCatalog, "shop", `{"owner":"team-a"}`, "admin")
	mustApply(t, s, KindSettings, "prediction", `{"season":"24h"}`, "ops")
	if _, err := s.Delete(ctx, KindCatalog, "shop", "ops"); err != nil {
		t.Fatal(err)
	}
	agent := AgentRecord{ID: "agent-1", Host: "node-1", Status: "SYNCED", AppliedVersion: "5",
		LastSeen: time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)}
	if err := s.PutAgent(ctx, agent); err != nil {
		t.Fatal(err)
	}
	type snapshot struct {
		Subs, Catalog, Settings []Object
		History                 []Revision
		Agents                  []AgentRecord
		Last                    int64
	}
	take := func(s Store) snapshot {
		t.Helper()
		var sn snapshot
		var err error
		must := func(e error) {
			if e != nil && err == nil {
				err = e
			}
		}
		var e error
		sn.Subs, e = s.List(ctx, KindSubscription)
		must(e)
		sn.Catalog, e = s.List(ctx, KindCatalog)
		must(e)
		sn.Settings, e = s.List(ctx, KindSettings)
		must(e)
		sn.History, e = s.History(ctx, "", "", 0)
		must(e)
		sn.Agents, e = s.ListAgents(ctx)
		must(e)
		sn.Last, e = s.LastRevision(ctx)
		must(e)
		if err != nil {
			t.Fatal(err)
		}
		return sn
	}
	before := take(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.List(ctx, KindSubscription); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close: %v, want ErrClosed", err)
	}
	if _, _, err := s.Apply(ctx, KindRule, "r", json.RawMessage(`{}`), "admin"); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}

	s2, err := Open(ctx, dir, WithClock(clk.Now))
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	after := take(s2)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("state after reopen differs\nbefore %+v\n after %+v", before, after)
	}
	if len(after.History) != 5 || after.Last != 5 || len(after.Agents) != 1 || len(after.Catalog) != 0 {
		t.Errorf("unexpected state after reopen: %+v", after)
	}
	if rev := mustApply(t, s2, KindSubscription, "web", `{"v":3}`, "ci"); rev != 6 {
		t.Errorf("first revision after reopen = %d, want 6", rev)
	}
}

func TestAgentsRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, dir := openTest(t)
	full := AgentRecord{
		ID: "b-agent", Host: "node-2", Labels: map[string]string{"env": "prod", "zone": "a"},
		Status: "NACKED", AppliedVersion: "7", PendingVersion: "8",
		LastSeen:  time.Date(2026, 3, 1, 12, 30, 0, 123456789, time.UTC),
		LastError: `interface "eth9" not found`, Backend: "ebpf",
		Inventory: json.RawMessage(`{"interfaces":[{"name":"eth0","mtu":1500}]}`),
		Plugins:   json.RawMessage(`[{"name":"capture-ebpf","version":"0.1.0"}]`),
	}
	bare := AgentRecord{ID: "a-agent", Host: "node-1", Status: "DISCONNECTED"}
	empty := AgentRecord{ID: "c-agent", Labels: map[string]string{}}
	for _, a := range []AgentRecord{full, bare, empty} {
		if err := s.PutAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s Store, want []AgentRecord) {
		t.Helper()
		got, err := s.ListAgents(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ListAgents\n got %+v\nwant %+v", got, want)
		}
	}
	check(s, []AgentRecord{bare, full, empty})

	// Replacing a record overwrites every field, including clearing ones now empty.
	updated := full
	updated.Status, updated.AppliedVersion, updated.PendingVersion, updated.LastError = "SYNCED", "8", "", ""
	updated.LastSeen = updated.LastSeen.Add(time.Minute)
	updated.Inventory = json.RawMessage("{ \"interfaces\" : [ ] }")
	updated.Plugins = nil
	if err := s.PutAgent(ctx, updated); err != nil {
		t.Fatal(err)
	}
	wantUpdated := updated
	wantUpdated.Inventory = json.RawMessage(`{"interfaces":[]}`) // stored compacted
	check(s, []AgentRecord{bare, wantUpdated, empty})

	// A time in another zone comes back as the same instant in UTC.
	zoned := AgentRecord{ID: "d-agent", LastSeen: time.Date(2026, 3, 1, 20, 0, 0, 0, time.FixedZone("UTC+8", 8*3600))}
	if err := s.PutAgent(ctx, zoned); err != nil {
		t.Fatal(err)
	}
	wantZoned := zoned
	wantZoned.LastSeen = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	check(s, []AgentRecord{bare, wantUpdated, empty, wantZoned})

	// Agents are not configuration: they make no revisions.
	if last, _ := s.LastRevision(ctx); last != 0 {
		t.Errorf("agent writes made revision %d", last)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2, []AgentRecord{bare, wantUpdated, empty, wantZoned})
}

func TestOpenFailsClearly(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	regular := filepath.Join(root, "regular-file")
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	// storeWith builds a data directory whose mix.db is prepared by prep.
	storeWith := func(name string, prep func(t *testing.T, path string)) func(t *testing.T) string {
		return func(t *testing.T) string {
			dir := filepath.Join(root, name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			prep(t, filepath.Join(dir, FileName))
			return dir
		}
	}
	// realStore writes a genuine store with enough data to span many pages, then lets edit
	// change it.
	realStore := func(edit func(t *testing.T, s *SQLite)) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			s, err := Open(ctx, filepath.Dir(path))
			if err != nil {
				t.Fatal(err)
			}
			objs := map[string]json.RawMessage{}
			for i := 0; i < 300; i++ {
				objs[fmt.Sprintf("obj-%03d", i)] = json.RawMessage(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 200)))
			}
			if _, err := s.ApplyAll(ctx, KindCatalog, objs, "admin"); err != nil {
				t.Fatal(err)
			}
			if edit != nil {
				edit(t, s)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}

	for _, c := range []struct {
		name     string
		dir      func(t *testing.T) string
		wantPath func(dir string) string
		want     []string
	}{
		{
			name:     "data directory under a regular file",
			dir:      func(*testing.T) string { return filepath.Join(regular, "data") },
			wantPath: func(dir string) string { return dir },
			want:     []string{"creating data directory", "not a directory"},
		},
		{
			name:     "data directory is a regular file",
			dir:      func(*testing.T) string { return regular },
			wantPath: func(dir string) string { return dir },
			want:     []string{"creating data directory"},
		},
		{
			name: "database is a text file",
			dir: storeWith("text", func(t *testing.T, path string) {
				if err := os.WriteFile(path, bytes.Repeat([]byte("this is not a database\n"), 200), 0o600); err != nil {
					t.Fatal(err)
				}
			}),
			want: []string{"not a SQLite database", "move it aside"},
		},
		{
			name: "database is a short file",
			dir: storeWith("short", func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("hello"), 0o600); err != nil {
					t.Fatal(err)
				}
			}),
			want: []string{"not a SQLite database"},
		},
		{
			name: "database is a directory",
			dir: storeWith("isdir", func(t *testing.T, path string) {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			}),
			want: []string{"is a directory"},
		},
		{
			name: "a data page overwritten",
			dir: storeWith("corrupt", func(t *testing.T, path string) {
				realStore(nil)(t, path)
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				fi, _ := f.Stat()
				if fi.Size() < 8*4096 {
					t.Fatalf("database only %d bytes; the test needs more pages", fi.Size())
				}
				// Wreck only the last page, a leaf of stored data: the header, the schema and
				// schema_version still read fine, so only the integrity check at Open can tell.
				junk := bytes.Repeat([]byte{0xA5, 0x00, 0xFF, 0x13}, 1024)
				if _, err := f.WriteAt(junk, fi.Size()-4096); err != nil {
					t.Fatal(err)
				}
			}),
			want: []string{"damaged"},
		},
		{
			name: "written by a newer mix",
			dir: storeWith("newer", realStore(func(t *testing.T, s *SQLite) {
				if _, err := s.db.Exec(`UPDATE schema_version SET version = 999`); err != nil {
					t.Fatal(err)
				}
			})),
			want: []string{"schema version 999", "newer than this mix supports"},
		},
		{
			name: "another program's SQLite database",
			dir: storeWith("foreign", realStore(func(t *testing.T, s *SQLite) {
				if _, err := s.db.Exec(`DROP TABLE schema_version`); err != nil {
					t.Fatal(err)
				}
			})),
			want: []string{"not a mix store"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := c.dir(t)
			s, err := Open(ctx, dir)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			wantPath := filepath.Join(dir, FileName)
			if c.wantPath != nil {
				wantPath = c.wantPath(dir)
			}
			msg := err.Error()
			t.Logf("Open: %s", msg)
			if !strings.Contains(msg, wantPath) {
				t.Errorf("error %q does not name %s", msg, wantPath)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
		})
	}
}

// FuzzApply feeds arbitrary bytes as a body: the store must either refuse them as invalid JSON
// or store exactly their compacted form, and never panic.
func FuzzApply(f *testing.F) {
	for _, seed := range []string{`{}`, `{"L4":[80]}`, ` [1, 2 ] `, `"x"`, `null`, `{`, ``, "\xff", `{"a":"\u00e9"}`} {
		f.Add([]byte(seed))
	}
	s, _ := openTest(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, body []byte) {
		var want bytes.Buffer
		valid := json.Compact(&want, body) == nil
		rev, _, err := s.Apply(ctx, KindRule, "fuzz", json.RawMessage(body), "fuzzer")
		if valid != (err == nil) {
			t.Fatalf("valid JSON %v but Apply error %v", valid, err)
		}
		if !valid {
			return
		}
		o, err := s.Get(ctx, KindRule, "fuzz")
		if err != nil {
			t.Fatal(err)
		}
		if o.Revision != rev || !bytes.Equal(o.Body, want.Bytes()) {
			t.Fatalf("stored %q at %d, want %q at %d", o.Body, o.Revision, want.Bytes(), rev)
		}
	})
}

// benchBody is about the size of a real subscription.
func benchBody(i, v int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"id":"sub-%04d","name":"subscription %d","owner":"team-%d",`+
		`"selector":{"labels":{"env":"prod","zone":"z%d"}},"NIC":["eth0","veth*"],`+
		`"L3":["10.%d.0.0/16"],"L3Miss":["10.%d.255.0/24"],"L4CLASS":["TCP","UDP"],"L4":[80,443,%d],`+
		`"L4Range":["30000-32767"],"L7":["HTTP:GET","HTTP:POST"],"version":%d}`,
		i, i, i%10, i%3, i%256, i%256, 1024+i, v))
}

// BenchmarkApply measures one Apply (one transaction, one fsync) into a store that holds 1,000
// objects: changing an object, and re-applying an unchanged one.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	objs := map[string]json.RawMessage{}
	for i := 0; i < 1000; i++ {
		objs[fmt.Sprintf("sub-%04d", i)] = benchBody(i, 0)
	}
	if _, err := s.ApplyAll(ctx, KindSubscription, objs, "bench"); err != nil {
		b.Fatal(err)
	}
	b.Run("changed", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			id := i % 1000
			if _, _, err := s.Apply(ctx, KindSubscription, fmt.Sprintf("sub-%04d", id), benchBody(id, i+1), "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		body := benchBody(7, -1)
		if _, _, err := s.Apply(ctx, KindSubscription, "sub-0007", body, "bench"); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, changed, err := s.Apply(ctx, KindSubscription, "sub-0007", body, "bench"); err != nil || changed {
				b.Fatal(err, changed)
			}
		}
	})
}

// BenchmarkApplyAll1000 measures writing 1,000 changed objects in one transaction.
func BenchmarkApplyAll1000(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	b.ReportAllocs()
	for v := 0; b.Loop(); v++ {
		objs := make(map[string]json.RawMessage, 1000)
		for i := 0; i < 1000; i++ {
			objs[fmt.Sprintf("sub-%04d", i)] = benchBody(i, v)
		}
		if _, err := s.ApplyAll(ctx, KindSubscription, objs, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList1000 measures listing a kind that holds 1,000 objects.
func BenchmarkList1000(b *testing.B) {
	ctx := context.Background()
	s, _ := openTest(b)
	objs := map[string]json.RawMessage{}
	for i := 0; i < 1000; i++ {
		objs[fmt.Sprintf("sub-%04d", i)] = benchBody(i, 0)
	}
	if _, err := s.ApplyAll(ctx, KindSubscription, objs, "bench"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l, err := s.List(ctx, KindSubscription)
		if err != nil || len(l) != 1000 {
			b.Fatal(len(l), err)
		}
	}
}
