package store

import "github.com/quanyu/quanyu/internal/sqlitedb"

// migrations is the whole history of the schema, oldest first; versions are 1, 2, 3, … in order.
//
// Times are stored as Unix nanoseconds (UTC) in INTEGER columns: exact, sortable, and with no
// time-zone or format ambiguity. JSON is stored as TEXT so the file stays readable with the
// sqlite3 shell.
var migrations = []sqlitedb.Migration{
	{
		Version: 1,
		Name:    "objects, revisions and agents",
		Stmts: []string{
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
