package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// migration moves the schema from version-1 to version. Migrations are append-only: a released
// migration is never edited, because databases in the field have already run it.
type migration struct {
	version int
	name    string
	stmts   []string
}

// migrations is the whole history of the schema, oldest first.
//
// Times are Unix nanoseconds (UTC) in INTEGER columns. Addresses are 16-byte BLOBs (IPv4 as
// IPv4-mapped IPv6), so that a CIDR filter is a range comparison on an index-friendly column,
// as it would be on ClickHouse's IPv6 type. Rollup rows have no unique key: they are deltas,
// summed by readers.
var migrations = []migration{
	{
		version: 1,
		name:    "rollups, records and node addresses",
		stmts: []string{
			`CREATE TABLE rollups (
				res        TEXT NOT NULL,
				bucket_ns  INTEGER NOT NULL,
				level      TEXT NOT NULL,
				source     TEXT NOT NULL,
				target     TEXT NOT NULL,
				transport  INTEGER NOT NULL,
				port       INTEGER NOT NULL,
				protocol   TEXT NOT NULL,
				method     TEXT NOT NULL,
				path       TEXT NOT NULL,
				flows      INTEGER NOT NULL,
				pkts_c2s   INTEGER NOT NULL,
				pkts_s2c   INTEGER NOT NULL,
				bytes_c2s  INTEGER NOT NULL,
				bytes_s2c  INTEGER NOT NULL,
				rtt_sum_ns INTEGER NOT NULL,
				rtt_count  INTEGER NOT NULL,
				retrans    INTEGER NOT NULL,
				requests   INTEGER NOT NULL,
				errors     INTEGER NOT NULL,
				protocols  INTEGER NOT NULL,
				latency    BLOB
			)`,
			`CREATE INDEX rollups_by_time ON rollups (res, level, bucket_ns)`,
			`CREATE TABLE flows (
				id          INTEGER PRIMARY KEY,
				end_ns      INTEGER NOT NULL,
				start_ns    INTEGER NOT NULL,
				agent       TEXT NOT NULL,
				host        TEXT NOT NULL,
				nic         TEXT NOT NULL,
				ifindex     INTEGER NOT NULL,
				netns       TEXT NOT NULL,
				transport   INTEGER NOT NULL,
				client_ip   BLOB NOT NULL,
				client_port INTEGER NOT NULL,
				server_ip   BLOB NOT NULL,
				server_port INTEGER NOT NULL,
				community_id TEXT NOT NULL,
				pkts_c2s    INTEGER NOT NULL,
				bytes_c2s   INTEGER NOT NULL,
				pkts_s2c    INTEGER NOT NULL,
				bytes_s2c   INTEGER NOT NULL,
				tcp_flags   INTEGER NOT NULL,
				rtt_ns      INTEGER NOT NULL,
				retrans     INTEGER NOT NULL,
				final       INTEGER NOT NULL,
				end_reason  TEXT NOT NULL,
				vlan        TEXT NOT NULL,
				macs        BLOB,
				subs        TEXT NOT NULL,
				l7_protocol TEXT NOT NULL,
				l7_tx       INTEGER NOT NULL,
				l7_errors   INTEGER NOT NULL,
				l7_partial  INTEGER NOT NULL
			)`,
			`CREATE INDEX flows_by_time ON flows (end_ns, id)`,
			`CREATE INDEX flows_by_cid ON flows (community_id, end_ns)`,
			`CREATE TABLE events (
				id           INTEGER PRIMARY KEY,
				time_ns      INTEGER NOT NULL,
				agent        TEXT NOT NULL,
				community_id TEXT NOT NULL,
				body         TEXT NOT NULL
			)`,
			`CREATE INDEX events_by_time ON events (time_ns)`,
			`CREATE INDEX events_by_cid ON events (community_id, time_ns)`,
			`CREATE TABLE l7 (
				id           INTEGER PRIMARY KEY,
				time_ns      INTEGER NOT NULL,
				agent        TEXT NOT NULL,
				community_id TEXT NOT NULL,
				method       TEXT NOT NULL,
				body         TEXT NOT NULL
			)`,
			`CREATE INDEX l7_by_time ON l7 (time_ns)`,
			`CREATE INDEX l7_by_cid ON l7 (community_id, time_ns)`,
			`CREATE TABLE node_addresses (
				node         TEXT NOT NULL,
				addr         TEXT NOT NULL,
				last_seen_ns INTEGER NOT NULL,
				PRIMARY KEY (node, addr)
			) WITHOUT ROWID`,
		},
	},
}

// migrate brings the schema up to the newest version in one transaction. A database written by
// a newer analysis, or one holding another program's tables, is refused.
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
		return errors.New("the database has tables but no schema_version table: it is not an analysis store")
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
		return fmt.Errorf("the database has schema version %d, newer than this analysis supports (%d)", current, latest)
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
