package analytics

import "errors"

// ErrSchemaNewer is returned by Migrate when the database records a schema
// version newer than the newest migration this binary embeds: an older
// binary must not write to a schema it does not know.
var ErrSchemaNewer = errors.New("analytics: database schema is newer than this binary")

// ErrBadDatabase is returned by Migrate for a database name that is not a
// plain identifier (letters, digits, underscore): the name is spliced into
// DDL, which ClickHouse cannot take as a bound parameter.
var ErrBadDatabase = errors.New("analytics: bad database name")

// ErrNotFound is returned by a lookup (PacketStatus) when the ledger has
// no such record.
var ErrNotFound = errors.New("analytics: not found")

// ErrUnknownReport is returned by LookupReport for a name that is not one
// of Reports().
var ErrUnknownReport = errors.New("analytics: unknown report")

// ErrBadParam is returned by Report.Bind and RunReport for a parameter the
// report does not take, a required one missing, or a value that does not
// parse.
var ErrBadParam = errors.New("analytics: bad report parameter")
