package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migration moves the schema from version-1 to version. Migrations are append-only: a released
// migration is never edited, because databases in the field have already run it. A later version
// of mix adds a migration to the end of the list and nothing else.
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrations is the whole history of the schema, oldest first; versions are 1, 2, 3, … in order.
//
// Times are stored as Unix nanoseconds (UTC) in INTEGER columns: exact, sortable, and with no
// time-zone or format ambiguity. JSON is stored as TEXT so the file stays readable with the
// sqlite3 shell.
var migrations = []migration{
	{
		version: 1,
		name:    "objects, revisions and agents",
		stmts: []string{
			// AUTOINCREMENT (rather than a plain rowid) is what guarantees that a revision number
			// is never handed out twice, whatever rows exist: SQLite keeps the high-water mark in
			// sqlite_sequence.
			`CREATE TABLE revisions (
				number    INTEGER PRIMARY KEY AUTOINCREMENT,
				at_ns     INTEGER NOT NULL,
				author    TEXT NOT NULL,
				kind      TEXT NOT NULL,
				object_id TEXT NOT NULL,
				op        TEXT NOT NULL CHECK (op IN ('apply', 'delete')),
				body      TEXT,
				prev_body TEXT
			)`,
			`CREATE INDEX revisions_by_object ON revisions (kind, object_id, number)`,
			`CREATE INDEX revisions_by_kind ON revisions (kind, number)`,
			// The object's time and author live in its revision; objects only points at it, so
			// there is one source of truth for who changed what when.
			`CREATE TABLE objects (
				kind     TEXT NOT NULL,
				id       TEXT NOT NULL,
				body     TEXT NOT NULL,
				revision INTEGER NOT NULL REFERENCES revisions (number),
				PRIMARY KEY (kind, id)
			) WITHOUT ROWID`,
			`CREATE TABLE agents (
				id              TEXT NOT NULL PRIMARY KEY,
				host            TEXT NOT NULL,
				labels          TEXT,
				status          TEXT NOT NULL,
				applied_version TEXT NOT NULL,
				pending_version TEXT NOT NULL,
				last_seen_ns    INTEGER,
				last_error      TEXT NOT NULL,
				backend         TEXT NOT NULL,
				inventory       TEXT,
				plugins         TEXT
			) WITHOUT ROWID`,
		},
	},
}

// migrate brings the schema up to the newest version in one transaction, so a failure leaves the
// database as it was. A database written by a newer mix (a version this binary does not know) is
// refused rather than used: its meaning may have changed.
func migrate(ctx context.Context, db *sql.DB) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning migration: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()

	// A SQLite file that has tables but no schema_version belongs to something else; adding our
	// tables to it would mix two programs' data.
	var hasVersionTable bool
	var otherTables int
	rows, err := tx.QueryContext(ctx,
		`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\'`)
	if err != nil {
		return fmt.Errorf("reading the schema: %w", err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return fmt.Errorf("reading the schema: %w", err)
		}
		if name == "schema_version" {
			hasVersionTable = true
		} else {
			otherTables++
		}
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("reading the schema: %w", err)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the schema: %w", err)
	}
	if !hasVersionTable && otherTables > 0 {
		return errors.New("the database has tables but no schema_version table: it is not a mix store")
	}

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
		one     INTEGER PRIMARY KEY CHECK (one = 1),
		version INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("creating schema_version: %w", err)
	}
	current := 0
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version WHERE one = 1`).Scan(&current); {
	case errors.Is(err, sql.ErrNoRows):
		current = 0
	case err != nil:
		return fmt.Errorf("reading schema_version: %w", err)
	}
	latest := migrations[len(migrations)-1].version
	if current > latest {
		return fmt.Errorf("the database has schema version %d, newer than this mix supports (%d): use a newer mix", current, latest)
	}
	if current == latest {
		return tx.Commit()
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		for _, stmt := range m.stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrating schema to version %d (%s): %w", m.version, m.name, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO schema_version (one, version) VALUES (1, ?)
		 ON CONFLICT (one) DO UPDATE SET version = excluded.version`, latest); err != nil {
		return fmt.Errorf("recording schema version %d: %w", latest, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing migration to schema version %d: %w", latest, err)
	}
	return nil
}
