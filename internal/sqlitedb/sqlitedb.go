// Package sqlitedb holds what mix's and analysis's embedded SQLite stores share: creating the
// database file with the right modes, and the append-only schema migrations.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CreateFile makes dir (mode 0700) and the database file name in it (mode 0600) when they do not
// exist, and returns the file's absolute path. SQLite would create the file with mode 0644;
// creating it first, empty, fixes its mode, and SQLite treats an empty file as a new database and
// gives its -wal and -shm files the same mode.
func CreateFile(dir, name string) (string, error) {
	if dir == "" {
		return "", errors.New("no data directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating data directory %q: %w", dir, err)
	}
	abs, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("finding %s in %q: %w", name, dir, err)
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating database %s: %w", abs, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("creating database %s: %w", abs, err)
	}
	return abs, nil
}

// Migration moves a schema from Version-1 to Version. Migrations are append-only: a released one
// is never edited, because databases in the field have already run it.
type Migration struct {
	Version int
	Name    string
	Stmts   []string
}

// Migrate brings the schema up to the newest of migrations (versions 1, 2, 3, … in order) in one
// transaction, so a failure leaves the database as it was. program names the owner in errors
// ("mix", "analysis"). A file with tables but no schema_version belongs to something else and is
// refused, as is one written by a newer program (its meaning may have changed).
func Migrate(ctx context.Context, db *sql.DB, program string, migrations []Migration) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning migration: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
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
		return fmt.Errorf("the database has tables but no schema_version table: it is not a %s store", program)
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
	latest := migrations[len(migrations)-1].Version
	if current > latest {
		return fmt.Errorf("the database has schema version %d, newer than this %s supports (%d): use a newer %s", current, program, latest, program)
	}
	if current == latest {
		return tx.Commit()
	}
	for _, m := range migrations {
		if m.Version <= current {
			continue
		}
		for _, stmt := range m.Stmts {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrating schema to version %d (%s): %w", m.Version, m.Name, err)
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
