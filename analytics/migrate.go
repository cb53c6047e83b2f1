package analytics

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// migrationFiles are the schema's versions, one SQL file each, named
// NNNN_name.sql and numbered from 1 without gaps. A shipped file is never
// edited: a change to the schema is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one version of the schema.
type Migration struct {
	Version int
	Name    string // the file name without the number and .sql
	SQL     string // statements separated by ';' at the end of a line; {db} is the database
}

// MigrateReport says what Migrate did.
type MigrateReport struct {
	From    int         // the version recorded before (0: an empty database)
	To      int         // the version recorded after
	Applied []Migration // in order; empty when the database was up to date
}

var (
	migrationName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)
	identifier    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ValidDatabase reports whether name is a database name the package
// accepts (letters, digits and _, not starting with a digit): commands
// check it before they start anything, the package again where it
// splices the name into SQL (ErrBadDatabase).
func ValidDatabase(name string) bool { return identifier.MatchString(name) }

// Migrations returns the embedded migrations in version order. It fails
// only when the embedded files break the naming rule, which a test guards.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("analytics: read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("analytics: migration file %q is not named NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("analytics: read migration %s: %w", e.Name(), err)
		}
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, Migration{Version: v, Name: m[2], SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("analytics: migration versions must run 1, 2, 3...: found %04d at position %d", m.Version, i+1)
		}
	}
	return ms, nil
}

// LatestVersion is the newest schema version this binary knows.
func LatestVersion() int {
	ms, err := Migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// Migrate brings database db to the newest schema version: it creates the
// database and its schema_migrations table when missing, then applies, in
// order, each migration newer than the recorded version and records it.
// Running it again is a no-op. A database recorded at a version newer than
// this binary knows is refused with ErrSchemaNewer, before anything is
// written.
//
// ClickHouse has no transactional DDL: a migration cut off midway is
// applied again from its first statement on the next run, so every
// statement must be idempotent: CREATE ... IF NOT EXISTS, and ALTER TABLE
// ... ADD COLUMN, whose "already exists" refusal Migrate takes as done
// (18.16 has no ADD COLUMN IF NOT EXISTS). The same rule makes two
// processes migrating at once safe: both run the same idempotent
// statements, and the duplicate schema_migrations rows collapse into one.
func Migrate(ctx context.Context, conn driver.Conn, db string) (MigrateReport, error) {
	var rep MigrateReport
	if !identifier.MatchString(db) {
		return rep, fmt.Errorf("%w: %q (letters, digits and _ only)", ErrBadDatabase, db)
	}
	ms, err := Migrations()
	if err != nil {
		return rep, err
	}
	q := "`" + db + "`"
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+q); err != nil {
		return rep, fmt.Errorf("analytics: create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree ORDER BY version`); err != nil {
		return rep, fmt.Errorf("analytics: create %s.schema_migrations: %w", db, err)
	}
	cur, err := SchemaVersion(ctx, conn, db)
	if err != nil {
		return rep, err
	}
	rep.From, rep.To = cur, cur
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].Version
	}
	if cur > latest {
		return rep, fmt.Errorf("%w: database %s is at version %d, this binary knows up to %d; upgrade ccgp", ErrSchemaNewer, db, cur, latest)
	}
	for _, m := range ms {
		if m.Version <= cur {
			continue
		}
		for i, stmt := range statements(m.SQL) {
			if err := conn.Exec(ctx, strings.ReplaceAll(stmt, "{db}", q)); err != nil && !columnExists(stmt, err) {
				return rep, fmt.Errorf("analytics: migration %04d_%s, statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := record(ctx, conn, q, m); err != nil {
			return rep, err
		}
		rep.Applied = append(rep.Applied, m)
		rep.To = m.Version
	}
	return rep, nil
}

// record writes m's row into schema_migrations. It goes through a batch:
// an INSERT with bound values through Exec does not complete on 18.16
// (the server waits for a data block that clickhouse-go never sends).
func record(ctx context.Context, conn driver.Conn, q string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+q+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return fmt.Errorf("analytics: record migration %04d_%s: %w", m.Version, m.Name, err)
	}
	if err := b.Append(uint32(m.Version), m.Name, time.Now().UTC()); err != nil {
		return fmt.Errorf("analytics: record migration %04d_%s: %w", m.Version, m.Name, err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("analytics: record migration %04d_%s: %w", m.Version, m.Name, err)
	}
	return nil
}

// SchemaVersion is the newest migration recorded in db's
// schema_migrations table (0 when none is).
func SchemaVersion(ctx context.Context, conn driver.Conn, db string) (int, error) {
	if !identifier.MatchString(db) {
		return 0, fmt.Errorf("%w: %q (letters, digits and _ only)", ErrBadDatabase, db)
	}
	var v uint32
	// FINAL, as every read here: two racing migrators may have written
	// the same version twice.
	if err := conn.QueryRow(ctx, "SELECT max(version) FROM `"+db+"`.schema_migrations FINAL").Scan(&v); err != nil {
		return 0, fmt.Errorf("analytics: read %s.schema_migrations: %w", db, err)
	}
	return int(v), nil
}

// columnExists reports whether err is ClickHouse refusing an ALTER TABLE
// ... ADD COLUMN because the column is there: the statement ran before, in
// a migration cut off midway. 18.16 has no ADD COLUMN IF NOT EXISTS, so
// this is how such a statement stays idempotent.
func columnExists(stmt string, err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == 44 && strings.Contains(ex.Message, "already exists") &&
		strings.Contains(strings.ToUpper(stmt), "ADD COLUMN")
}

// statements splits a migration into its statements: '--' comment lines
// are dropped and a statement ends with ';' at the end of a line, so a ';'
// inside a string literal does not split (none of ours has one at a line's
// end). The driver runs one statement per call.
func statements(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			out = append(out, s)
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
